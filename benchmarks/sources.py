"""The benchmark's inputs: which videos, how they are read, and their decoded frames."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.codec import SourceClip
from pipeline.video_io import read_video


@dataclass(frozen=True)
class ReadOptions:
    """How every input is read: a frame range and a size, as enerv-compress takes them."""

    frame_range: tuple[int, int | None] | None = None
    size: tuple[int, int] | None = None

    def args(self) -> tuple[str, ...]:
        """The enerv-compress options that read an input the same way."""
        words: list[str] = []
        if self.frame_range:
            start, stop = self.frame_range
            words += ["--frames", f"{start}:{'' if stop is None else stop}"]
        if self.size:
            words += ["--size", f"{self.size[0]}x{self.size[1]}"]
        return tuple(words)


@dataclass(frozen=True)
class VideoSource:
    """One input of the benchmark, as read (range and size applied)."""

    path: Path
    name: str  # the "video" column
    slug: str  # its folder under files/
    fingerprint: dict  # the file (path, size, mtime) and how it is read: part of every cache key
    frames: int
    width: int
    height: int
    fps: float
    pix_fmt: str  # the source's pixel format, as ffmpeg names it

    @property
    def key(self) -> str:
        return hashlib.sha256(json.dumps(self.fingerprint, sort_keys=True).encode()).hexdigest()[:24]


def fingerprint(path: Path, options: ReadOptions) -> dict:
    st = path.stat() if path.exists() else path.parent.stat()  # a PNG pattern: its folder
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
            "frames": list(options.frame_range) if options.frame_range else None,
            "size": list(options.size) if options.size else None}


class FrameStore:
    """Decodes the inputs, keeping the last one: a one-video run decodes its video once,
    for the plan's checks and for the points, without holding every video in memory."""

    def __init__(self, options: ReadOptions) -> None:
        self.options = options
        self._last: tuple[Path, object] | None = None

    def read(self, path: Path):
        """The decoded video (frames and info) of ``path``."""
        if self._last is None or self._last[0] != path:
            self._last = (path, read_video(path, frame_range=self.options.frame_range, size=self.options.size))
        return self._last[1]

    def clip(self, video: VideoSource) -> SourceClip:
        frames: np.ndarray = self.read(video.path).frames
        return SourceClip(frames=frames, fps=video.fps, path=video.path, read_args=self.options.args(),
                          key=video.key)
