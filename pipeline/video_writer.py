"""Writing video through the ffmpeg command-line tool: :class:`VideoWriter` and :func:`write_video`.

Frames go into ffmpeg's standard input as raw rgb24, one frame (or a few) at a time; the
format follows the output path (FFV1 .mkv, Y4M, H.264 .mp4, PNG sequences, a Y4M stream on
standard output).
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np

from pipeline.errors import InputError, OutputClosed
from pipeline.ffmpeg import ffmpeg_binary, has_encoder, last_line

_FOLDER_PATTERN = "%05d.png"


@dataclass(frozen=True)
class _FileFormat:
    muxer: str
    encoder: str | None  # None: nothing worth checking (raw YUV)
    options: dict[str, Any]


# Containers chosen by extension. FFV1 stores RGB as bgr0 (its native RGB layout), so .mkv is
# bit-exact; .y4m can only hold YUV (see Y4M_COLOUR), so it is close but not exact.
_FILE_FORMATS = {
    ".mkv": _FileFormat("matroska", "ffv1", {"c:v": "ffv1", "pix_fmt": "bgr0"}),
    ".y4m": _FileFormat("yuv4mpegpipe", None, {"pix_fmt": "yuv444p", "color_range": "tv"}),
    ".mp4": _FileFormat("mp4", "libx264", {"c:v": "libx264", "pix_fmt": "yuv420p", "preset": "medium",
                                           "movflags": "+faststart"}),
}

STDOUT = "-"  # the path that means "a Y4M stream on standard output"

# Y4M cannot name a colour matrix and its readers (ffmpeg among them) take untagged Y'CbCr for
# BT.601, so .y4m files and the standard-output stream convert RGB with BT.601 in limited range
# (Y 16..235, Cb/Cr 16..240), 4:4:4, 8 bits; the header says XCOLORRANGE=LIMITED.
Y4M_COLOUR = "Y'CbCr 4:4:4 8-bit, BT.601 matrix, limited range"
_Y4M_FILTER = {"out_color_matrix": "bt601", "out_range": "tv", "flags": "accurate_rnd+full_chroma_int"}


def write_video(path: str | os.PathLike[str], frames: np.ndarray, fps: float = 24.0, crf: int = 18) -> None:
    """Encode uint8 RGB frames [T,H,W,3]; the format follows the path (see :class:`VideoWriter`).

    Raises ValueError for a bad array, InputError for an unsupported path or when ffmpeg fails.
    """
    frames = _checked_frames(frames)
    if not fps > 0:
        raise ValueError(f"fps must be positive, got {fps}")
    _, height, width, _ = frames.shape
    with VideoWriter(path, width, height, fps, crf) as writer:
        writer.write(frames)


class VideoWriter:
    """Streams uint8 RGB frames into a video, one frame (or a few) at a time.

    The format follows the path:

    - ``.mkv``: FFV1, lossless (reads back bit-identical).
    - ``.y4m``: raw Y'CbCr 4:4:4 (:data:`Y4M_COLOUR`); close to the RGB frames, not exact.
    - ``.mp4``: H.264 (libx264) yuv420p at ``crf``, preset medium; lossy. yuv420p needs even
      sizes, so an odd width or height is padded by repeating the last column or row.
    - a path whose name holds ``%`` (``out/%05d.png``): a PNG sequence numbered from
      ``first_number`` (0 unless given: the decoder passes the first frame's index).
    - a path ending in a separator, or an existing folder: the PNG sequence ``%05d.png`` in it.
    - ``-`` (:data:`STDOUT`): a Y4M stream on standard output, as for ``.y4m``.

    Frames go into ffmpeg's standard input as they are written, so memory does not grow with
    their number. Files are written under a temporary name (a sequence into a temporary
    folder) and put in place by :meth:`close`; :meth:`abort`, or leaving a ``with`` block by an
    exception, removes everything written. For a sequence, files left by an earlier sequence
    with the same naming that this one does not overwrite are deleted, so the folder holds
    exactly these frames under that naming; missing folders of a sequence are created.

    Raises ValueError for bad sizes or frames, InputError for an unsupported path or when
    ffmpeg fails, and :class:`pipeline.errors.OutputClosed` when the reader of standard output
    goes away before the end.
    """

    def __init__(self, path: str | os.PathLike[str], width: int, height: int, fps: float = 24.0, crf: int = 18,
                 first_number: int = 0):
        if not (isinstance(width, int) and isinstance(height, int) and width > 0 and height > 0):
            raise ValueError(f"width and height must be positive integers, got {width}x{height}")
        if not fps > 0:
            raise ValueError(f"fps must be positive, got {fps}")
        text = os.fspath(path)
        target = Path(text)
        self.width, self.height, self.fps = width, height, fps
        self.frames_written = 0
        self.to_stdout = text == STDOUT
        self.shown = "standard output" if self.to_stdout else text
        self._target = target
        self._temporary: Path | None = None  # a file renamed to the target by close()
        self._staging: Path | None = None  # a sequence's temporary folder
        self._sequence: tuple[Path, str, bool] | None = None  # folder, pattern, whether it is new
        self._process: subprocess.Popen | None = None
        self._messages: Any = None  # ffmpeg's stderr, a temporary file read when it fails
        self._closed = False
        if self.to_stdout:
            destination, options, even = "pipe:1", dict(_FILE_FORMATS[".y4m"].options, f="yuv4mpegpipe"), False
        elif "%" in target.name:
            destination, options, even = (self._prepare_sequence(target.parent, target.name),
                                          dict(_PNG_OPTIONS, start_number=first_number), False)
        elif text.endswith(("/", os.sep)) or target.is_dir():
            destination, options, even = (self._prepare_sequence(target, _FOLDER_PATTERN),
                                          dict(_PNG_OPTIONS, start_number=first_number), False)
        else:
            destination, options, even = self._prepare_file(target, crf)
        try:
            self._process = self._start(destination, options, even=even, yuv=options.get("f") == "yuv4mpegpipe")
        except BaseException:
            self.abort()
            raise

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def write(self, frames: np.ndarray) -> None:
        """Append one frame [H,W,3] or several [N,H,W,3], uint8 RGB of the writer's size."""
        if self._closed:
            raise ValueError(f"{self.shown}: the writer is closed")
        array = np.asarray(frames)
        if array.ndim == 3:
            array = array[None]
        if array.dtype != np.uint8 or array.shape[1:] != (self.height, self.width, 3):
            raise ValueError(f"frames must be uint8 [H,W,3] or [N,H,W,3] with H,W = {self.height},{self.width}; "
                             f"got {array.dtype} of shape {np.shape(frames)}")
        try:
            self._process.stdin.write(memoryview(np.ascontiguousarray(array)).cast("B"))
        except BrokenPipeError:
            failure = self._failure(self._process.wait())
            self.abort()
            raise failure from None
        except BaseException:
            self.abort()
            raise
        self.frames_written += len(array)

    def close(self) -> None:
        """Finish the video and put it in place; a writer that received no frame writes nothing."""
        if self._closed:
            return
        try:
            if self.frames_written == 0:
                raise ValueError(f"{self.shown}: no frames were written")
            try:
                self._process.stdin.close()
            except BrokenPipeError:
                pass
            returncode = self._process.wait()
            if returncode != 0:
                raise self._failure(returncode)
            self._commit()
        except BaseException:
            self.abort()
            raise
        self._closed = True
        self._messages.close()

    def abort(self) -> None:
        """Stop ffmpeg and remove everything written so far (standard output cannot be taken back)."""
        self._closed = True
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.kill()
            with contextlib.suppress(OSError):
                process.stdin.close()
            process.wait()
        if self._temporary is not None:
            self._temporary.unlink(missing_ok=True)
        if self._staging is not None and self._staging.exists():
            shutil.rmtree(self._staging)
        if self._messages is not None:
            self._messages.close()

    # --- set-up ---

    def _prepare_file(self, target: Path, crf: int) -> tuple[str, dict[str, Any], bool]:
        fmt = _FILE_FORMATS.get(target.suffix.lower())
        if fmt is None:
            known = ", ".join(_FILE_FORMATS)
            raise InputError(f"{target}: unsupported output type; use {known}, a PNG pattern, a folder/ or - "
                             "(a Y4M stream on standard output)")
        if fmt.encoder is not None:
            _require_encoder(fmt.encoder)
        if not target.parent.is_dir():
            raise InputError(f"{target}: folder {target.parent} does not exist")
        options = dict(fmt.options, f=fmt.muxer)
        if fmt.muxer == "mp4":
            options["crf"] = crf
        self._temporary = target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}{target.suffix}")
        return str(self._temporary), options, fmt.muxer == "mp4"

    def _prepare_sequence(self, folder: Path, pattern: str) -> str:
        """A temporary folder on the same disk as ``folder``, where ffmpeg writes the PNGs."""
        _sequence_regex(pattern, self.shown)
        if not pattern.lower().endswith(".png"):
            raise InputError(f"{self.shown}: a frame pattern must end in .png")
        _require_encoder("png")
        fresh = not folder.exists()
        if fresh:
            folder.parent.mkdir(parents=True, exist_ok=True)
            staging = folder.parent / f".{folder.name}.tmp-{uuid.uuid4().hex[:8]}"
        elif folder.is_dir():
            staging = folder / f".tmp-{uuid.uuid4().hex[:8]}"
        else:
            raise InputError(f"{self.shown}: {folder} exists and is not a folder")
        staging.mkdir()
        self._staging, self._sequence = staging, (folder, pattern, fresh)
        return str(staging / pattern)

    def _start(self, destination: str, options: dict[str, Any], even: bool, yuv: bool) -> subprocess.Popen:
        """ffmpeg reading rawvideo rgb24 on its standard input; its messages go to a temporary file."""
        stream = ffmpeg.input("pipe:", f="rawvideo", pix_fmt="rgb24", s=f"{self.width}x{self.height}", r=self.fps)
        if even and (self.width % 2 or self.height % 2):
            # Repeat the last column/row rather than pad with black, which would bleed into the
            # subsampled chroma of the real edge pixels; gbrp keeps both filters in full-resolution
            # RGB (left alone, ffmpeg may run them after the conversion to yuv420p).
            stream = (stream.filter("format", "gbrp").filter("pad", self.width + self.width % 2,
                                                             self.height + self.height % 2)
                      .filter("fillborders", right=self.width % 2, bottom=self.height % 2, mode="smear"))
        if yuv:
            stream = stream.filter("scale", **_Y4M_FILTER)
        cmd = (ffmpeg.output(stream, destination, **options).overwrite_output()
               .global_args("-nostdin", "-hide_banner", "-loglevel", "error").compile(cmd=ffmpeg_binary()))
        self._messages = tempfile.TemporaryFile()
        if self.to_stdout:
            sys.stdout.flush()  # whatever Python buffered goes before the stream, not into it
        try:
            # Its own session: Ctrl-C reaches this process, which stops ffmpeg and cleans up.
            return subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=None if self.to_stdout else subprocess.DEVNULL,
                                    stderr=self._messages, start_new_session=True)
        except OSError as exc:
            raise InputError(f"cannot run ffmpeg ({cmd[0]}): {exc}") from exc

    # --- the end ---

    def _failure(self, returncode: int) -> Exception:
        # ffmpeg writes to this process's file descriptor 1, whatever sys.stdout is now.
        if self.to_stdout and (returncode == -signal.SIGPIPE or _reader_closed(1)):
            return OutputClosed("the reader of standard output closed it")
        self._messages.seek(0)
        return InputError(f"{self.shown}: ffmpeg could not write it ({last_line(self._messages.read()[-4000:])})")

    def _commit(self) -> None:
        if self._temporary is not None:
            os.replace(self._temporary, self._target)
            self._temporary = None
        elif self._sequence is not None:
            folder, pattern, fresh = self._sequence
            staging = self._staging
            if fresh:
                os.replace(staging, folder)
            else:
                names = _sequence_regex(pattern, self.shown)
                written = {p.name for p in staging.iterdir()}
                for name in sorted(written):
                    os.replace(staging / name, folder / name)
                for stale in folder.iterdir():
                    if stale.is_file() and names.fullmatch(stale.name) and stale.name not in written:
                        stale.unlink()
                staging.rmdir()
            self._staging = None


_PNG_OPTIONS = {"f": "image2", "c:v": "png", "pix_fmt": "rgb24", "start_number": 0}


def _reader_closed(fd: int) -> bool:
    """Whether ``fd`` is a pipe (or socket) whose reading end has gone away."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (OSError, ValueError):
        return False


def _checked_frames(frames: np.ndarray) -> np.ndarray:
    if not isinstance(frames, np.ndarray):
        raise ValueError(f"frames must be a uint8 array [T,H,W,3], got {type(frames).__name__}")
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"frames must be a uint8 array [T,H,W,3], got {frames.dtype} of shape {frames.shape}")
    if 0 in frames.shape:
        raise ValueError(f"frames must not be empty, got shape {frames.shape}")
    return np.ascontiguousarray(frames)


def _require_encoder(encoder: str) -> None:
    if not has_encoder(encoder):
        raise InputError(f"the ffmpeg in use ({ffmpeg_binary()}) has no {encoder} encoder")


def _sequence_regex(pattern: str, shown: str) -> re.Pattern[str]:
    """Regex for the file names a printf-style pattern yields; it must hold exactly one %d field."""
    parts = re.split(r"(%%|%[0-9]*d)", pattern)
    literals, fields = parts[0::2], parts[1::2]
    if sum(field != "%%" for field in fields) != 1 or any("%" in literal for literal in literals):
        raise InputError(f"{shown}: a frame pattern needs exactly one number field such as %05d")
    return re.compile("".join(re.escape(part) if i % 2 == 0 else _field_regex(part) for i, part in enumerate(parts)))


def _field_regex(field: str) -> str:
    """'%%' is a literal '%'; '%0Nd' gives at least N digits; '%d' and space-padded '%Nd' the rest."""
    if field == "%%":
        return "%"
    width = field[1:-1]
    return f"[0-9]{{{max(int(width), 1)},}}" if width.startswith("0") else " *[0-9]+"
