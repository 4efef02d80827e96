"""Reading and writing video through the ffmpeg command-line tool.

Every command is built with ffmpeg-python and run as a subprocess; frames travel as raw rgb24
over pipes. Only the ``ffmpeg`` binary is needed (no ffprobe): the system one when it is on PATH,
otherwise the one bundled with imageio-ffmpeg. Stream facts are parsed from ffmpeg's own report
of its input, so a single code path serves every machine.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np

from pipeline.errors import InputError, OutputClosed

# image2 (the PNG demuxer) assumes 25 fps; it is also our fallback when ffmpeg reports no rate.
_DEFAULT_FPS = 25.0
_FOLDER_PATTERN = "%05d.png"


@dataclass(frozen=True)
class VideoInfo:
    """Geometry and timing of a clip; ``frames == 0`` means "not known without decoding"."""

    width: int
    height: int
    frames: int
    fps: float
    pix_fmt: str  # source pixel format as ffmpeg names it, e.g. 'yuv420p', 'rgb24', 'gray'
    # The kinds of the source's streams that are not the video read ('audio', 'subtitle',
    # 'data', 'attachment', or 'video' for a second one).
    other_streams: tuple[str, ...] = ()


@dataclass(frozen=True)
class Video:
    """Decoded frames with the facts about them."""

    frames: np.ndarray  # uint8 [T,H,W,3] RGB, C-contiguous and writable
    info: VideoInfo  # describes `frames` (after range/resize), plus the source pix_fmt and fps


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


# --- the ffmpeg binary ----------------------------------------------------------------------


@functools.cache
def ffmpeg_binary() -> str:
    """The system ffmpeg when on PATH (it may be newer or better equipped), else imageio-ffmpeg's."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise InputError("ffmpeg not found: install ffmpeg or the imageio-ffmpeg package") from exc


def ffmpeg_version() -> str:
    """First line of ``ffmpeg -version``, for benchmark reports."""
    lines = _run_text([ffmpeg_binary(), "-hide_banner", "-version"]).splitlines()
    return lines[0].strip() if lines else "unknown"


def has_encoder(name: str) -> bool:
    """Whether the ffmpeg in use was built with encoder ``name`` (builds differ, e.g. libx264)."""
    return name in _encoders()


@functools.cache
def _encoders() -> frozenset[str]:
    listing = _run_text([ffmpeg_binary(), "-hide_banner", "-encoders"])
    # The table follows a line of dashes; each row is "<6 capability flags> <name> <description>".
    table = listing.split("------", 1)[-1]
    return frozenset(m[1] for m in re.finditer(r"^\s*[VAS][A-Z.]{5}\s+(\S+)", table, re.M))


@functools.cache
def _fps_mode_option() -> str:
    """'fps_mode' where available (ffmpeg >= 5.1), else its old name 'vsync' (gone in newer builds)."""
    help_text = _run_text([ffmpeg_binary(), "-hide_banner", "-h", "long"])
    return "fps_mode" if "-fps_mode" in help_text else "vsync"


def _run(cmd: list[str], stdin: memoryview | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg with stdin fed from memory or /dev/null, so it can never wait for a terminal."""
    try:
        if stdin is None:
            return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        return subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    except OSError as exc:
        raise InputError(f"cannot run ffmpeg ({cmd[0]}): {exc}") from exc


def _run_text(cmd: list[str]) -> str:
    proc = _run(cmd)
    return (proc.stdout + proc.stderr).decode(errors="replace")


def _last_line(stderr: bytes) -> str:
    """ffmpeg's final complaint, which names the actual problem; never the whole dump."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


# --- argument parsing -----------------------------------------------------------------------

_RANGE_RE = re.compile(r"\s*([0-9]*)\s*:\s*([0-9]*)\s*")
_SIZE_RE = re.compile(r"\s*([0-9]+)\s*[xX]\s*([0-9]+)\s*")


def parse_frame_range(text: str) -> tuple[int, int | None]:
    """Parse a half-open frame range "A:B", "A:" (to the end) or ":B" (from frame 0)."""
    match = _RANGE_RE.fullmatch(text)
    if not match:
        raise InputError(f"bad frame range {text!r}: expected A:B, A: or :B with 0 <= A < B")
    start = int(match[1]) if match[1] else 0
    stop = int(match[2]) if match[2] else None
    if stop is not None and stop <= start:
        raise InputError(f"bad frame range {text!r}: the end must be greater than the start")
    return start, stop


def parse_size(text: str) -> tuple[int, int]:
    """Parse "WxH" into (W, H), both positive."""
    match = _SIZE_RE.fullmatch(text)
    if not match or int(match[1]) == 0 or int(match[2]) == 0:
        raise InputError(f"bad size {text!r}: expected WxH with positive integers, e.g. 640x360")
    return int(match[1]), int(match[2])


# --- probing --------------------------------------------------------------------------------

_STREAM_RE = re.compile(r"^\s*Stream #\d+:(?P<index>\d+)\S*: Video: (?P<rest>.*)$", re.M)
_ANY_STREAM_RE = re.compile(r"^\s*Stream #\d+:(?P<index>\d+)\S*: (?P<kind>\w+):", re.M)
_DIMS_RE = re.compile(r"^[^,]+, (?:(?P<pix_fmt>\w+), )?(?P<width>\d+)x(?P<height>\d+)")
_RATE_RE = re.compile(r"(?P<value>\d+(?:\.\d+)?)(?P<kilo>k?) (?P<unit>fps|tbr)\b")


@contextmanager
def _source(path: str | os.PathLike[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (ffmpeg input URL, input options) for a file, a printf-style PNG pattern or a PNG folder.

    A folder's PNGs are read in name order through the concat demuxer, so any names work.
    Paths get a ``file:`` prefix so names containing ':' are not taken for protocols.
    """
    text = os.fspath(path)
    target = Path(text)
    if target.is_dir():
        pngs = sorted(p for p in target.iterdir() if p.suffix.lower() == ".png" and p.is_file())
        if not pngs:
            raise InputError(f"{text}: folder contains no .png files")
        with tempfile.TemporaryDirectory(prefix="video_io-") as tmp:
            listing = Path(tmp) / "frames.txt"
            entries = (f"file '{_concat_quote(p.resolve())}'\nduration {1 / _DEFAULT_FPS}\n" for p in pngs)
            listing.write_text("ffconcat version 1.0\n" + "".join(entries), encoding="utf-8")
            yield str(listing), {"f": "concat", "safe": 0}
    elif target.is_file() or "%" in target.name:
        yield "file:" + text, {}
    elif target.exists():
        raise InputError(f"{text}: not a regular file")
    else:
        raise InputError(f"{text}: no such file or folder")


def _concat_quote(path: Path) -> str:
    """Quote for a concat list, where a single quote is written as '\\''."""
    return str(path).replace("'", "'\\''")


def _probe(url: str, options: dict[str, Any], name: str) -> tuple[VideoInfo, int]:
    """VideoInfo and stream index of the first video stream (cover art skipped), from ffmpeg's report."""
    cmd = (ffmpeg.input(url, **options).output("-", f="null", t=0)
           .global_args("-nostdin", "-hide_banner", "-nostats").compile(cmd=ffmpeg_binary()))
    proc = _run(cmd)
    report = proc.stderr.decode(errors="replace")
    # Only the input section describes the source; the output section repeats similar lines.
    report = re.split(r"^(?:Stream mapping:|Output #0)", report, maxsplit=1, flags=re.M)[0]
    if "Input #0" not in report:
        raise InputError(f"{name}: not a video ffmpeg can read ({_last_line(proc.stderr)})")
    for stream in _STREAM_RE.finditer(report):
        if "(attached pic)" in stream["rest"]:
            continue
        info = _parse_video_stream(stream["rest"])
        if info is not None:
            index = int(stream["index"])
            others = tuple(m["kind"].lower() for m in _ANY_STREAM_RE.finditer(report) if int(m["index"]) != index)
            return replace(info, other_streams=others), index
    raise InputError(f"{name}: no video stream")


def _parse_video_stream(rest: str) -> VideoInfo | None:
    """Parse "codec (...), pix_fmt(...), WxH [SAR ...], ..., 24 fps, 24 tbr, ..." (None: no size)."""
    previous = None
    while previous != rest:  # drop parenthesised details, which may themselves contain commas
        previous, rest = rest, re.sub(r"\([^()]*\)", "", rest)
    dims = _DIMS_RE.match(rest)
    if dims is None:
        return None
    rates = {m["unit"]: float(m["value"]) * (1000 if m["kilo"] else 1) for m in _RATE_RE.finditer(rest)}
    return VideoInfo(width=int(dims["width"]), height=int(dims["height"]), frames=0,
                     fps=rates.get("fps") or rates.get("tbr") or _DEFAULT_FPS,
                     pix_fmt=dims["pix_fmt"] or "unknown")


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Size, rate and pixel format of the first video stream; ``frames`` is 0 (unknown) until decoded."""
    with _source(path) as (url, options):
        return _probe(url, options, os.fspath(path))[0]


def count_frames(path: str | os.PathLike[str]) -> int:
    """The number of frames :func:`read_video` decodes from the whole clip, found by decoding it
    without keeping a frame (memory stays flat; the time is a decode's)."""
    name = os.fspath(path)
    with _source(path) as (url, options):
        _, index = _probe(url, options, name)
        stream = ffmpeg.input(url, **options)[str(index)]
        cmd = (ffmpeg.output(stream, "-", f="null", **{_fps_mode_option(): "passthrough"})
               .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-progress", "pipe:1")
               .compile(cmd=ffmpeg_binary()))
        proc = _run(cmd)
    counts = re.findall(rb"^frame=(\d+)\s*$", proc.stdout, re.M)
    if proc.returncode != 0 or not counts:
        raise InputError(f"{name}: ffmpeg could not decode it ({_last_line(proc.stderr)})")
    return int(counts[-1])


# --- reading --------------------------------------------------------------------------------


def read_video(path: str | os.PathLike[str], frame_range: tuple[int, int | None] | None = None,
               size: tuple[int, int] | None = None) -> Video:
    """Decode a clip to uint8 RGB frames [T,H,W,3].

    ``path`` is any file ffmpeg reads (mp4, mkv, avi, mov, y4m, a PNG...), a printf-style PNG
    pattern such as ``frames/%05d.png``, or a folder of PNGs (name order). ``frame_range`` is a
    half-open (start, stop) in decode order; like a slice, it is clipped at the end of the clip,
    but an empty result is an error. ``size`` (W, H) resizes with the area filter when shrinking
    (it averages, so no aliasing) and bicubic otherwise. Frames come as stored: display rotation
    metadata is ignored, so the frame size matches what the stream codes.
    """
    name = os.fspath(path)
    start, stop = frame_range if frame_range is not None else (0, None)
    with _source(path) as (url, options):
        source, index = _probe(url, options, name)
        width, height = size if size is not None else (source.width, source.height)
        stream = ffmpeg.input(url, noautorotate=None, **options)[str(index)]
        if start > 0 or stop is not None:
            stream = stream.trim(start_frame=start, **({"end_frame": stop} if stop is not None else {}))
        shrink = width <= source.width and height <= source.height
        stream = (stream.filter("scale", width, height,
                                flags=("area" if shrink else "bicubic") + "+accurate_rnd+full_chroma_int")
                  .filter("format", "rgb24"))
        output_options: dict[str, Any] = {"f": "rawvideo", "pix_fmt": "rgb24", _fps_mode_option(): "passthrough"}
        if stop is not None:
            output_options["frames:v"] = stop - start  # stop decoding once the range is complete
        cmd = (ffmpeg.output(stream, "pipe:", **output_options)
               .global_args("-nostdin", "-hide_banner", "-loglevel", "error").compile(cmd=ffmpeg_binary()))
        proc = _run(cmd)
    if proc.returncode != 0:
        raise InputError(f"{name}: ffmpeg could not decode it ({_last_line(proc.stderr)})")
    frame_bytes = width * height * 3
    count, leftover = divmod(len(proc.stdout), frame_bytes)
    if count == 0:
        where = f" in frame range {start}:{'' if stop is None else stop}" if frame_range is not None else ""
        raise InputError(f"{name}: no frames decoded{where}")
    if leftover:
        raise InputError(f"{name}: frame size changes within the clip; pass a size to resize every frame")
    frames = np.frombuffer(proc.stdout, np.uint8).reshape(count, height, width, 3).copy()
    info = VideoInfo(width=width, height=height, frames=count, fps=source.fps, pix_fmt=source.pix_fmt,
                     other_streams=source.other_streams)
    return Video(frames=frames, info=info)


# --- writing --------------------------------------------------------------------------------

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
    - a path whose name holds ``%`` (``out/%05d.png``): a PNG sequence numbered from 0.
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

    def __init__(self, path: str | os.PathLike[str], width: int, height: int, fps: float = 24.0, crf: int = 18):
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
            destination, options, even = self._prepare_sequence(target.parent, target.name), _PNG_OPTIONS, False
        elif text.endswith(("/", os.sep)) or target.is_dir():
            destination, options, even = self._prepare_sequence(target, _FOLDER_PATTERN), _PNG_OPTIONS, False
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
        return InputError(f"{self.shown}: ffmpeg could not write it ({_last_line(self._messages.read()[-4000:])})")

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
