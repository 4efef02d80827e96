"""Reading video through the ffmpeg command-line tool.

Every command is built with ffmpeg-python and run as a subprocess (:mod:`pipeline.ffmpeg`);
frames travel as raw rgb24 over pipes. Stream facts are parsed from ffmpeg's own report of its
input, so a single code path serves every machine. Writing is :mod:`pipeline.video_writer`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ffmpeg
import numpy as np

from pipeline.errors import InputError
from pipeline.ffmpeg import ffmpeg_binary, fps_mode_option, last_line, run_ffmpeg

# image2 (the PNG demuxer) assumes 25 fps; it is also our fallback when ffmpeg reports no rate.
_DEFAULT_FPS = 25.0


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


def parse_frame_size(text: str) -> tuple[int, int]:
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
    proc = run_ffmpeg(cmd)
    report = proc.stderr.decode(errors="replace")
    # Only the input section describes the source; the output section repeats similar lines.
    report = re.split(r"^(?:Stream mapping:|Output #0)", report, maxsplit=1, flags=re.M)[0]
    if "Input #0" not in report:
        raise InputError(f"{name}: not a video ffmpeg can read ({last_line(proc.stderr)})")
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
        cmd = (ffmpeg.output(stream, "-", f="null", **{fps_mode_option(): "passthrough"})
               .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-nostats", "-progress", "pipe:1")
               .compile(cmd=ffmpeg_binary()))
        proc = run_ffmpeg(cmd)
    counts = re.findall(rb"^frame=(\d+)\s*$", proc.stdout, re.M)
    if proc.returncode != 0 or not counts:
        raise InputError(f"{name}: ffmpeg could not decode it ({last_line(proc.stderr)})")
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
        output_options: dict[str, Any] = {"f": "rawvideo", "pix_fmt": "rgb24", fps_mode_option(): "passthrough"}
        if stop is not None:
            output_options["frames:v"] = stop - start  # stop decoding once the range is complete
        cmd = (ffmpeg.output(stream, "pipe:", **output_options)
               .global_args("-nostdin", "-hide_banner", "-loglevel", "error").compile(cmd=ffmpeg_binary()))
        proc = run_ffmpeg(cmd)
    if proc.returncode != 0:
        raise InputError(f"{name}: ffmpeg could not decode it ({last_line(proc.stderr)})")
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
