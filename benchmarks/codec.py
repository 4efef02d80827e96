"""One way to measure every codec: encode to a file, decode the file, measure it against the source.

A codec (an anchor, :class:`benchmarks.anchors.FFmpegCodec`, or :class:`benchmarks.enerv.ENeRV`)
supplies how it encodes one point to a file, how it decodes
that file, and a description of its exact settings. :meth:`Codec.run` owns the measurement,
so the rate of every codec is the size of its own file on disk and its quality is measured
the same way, on 8-bit RGB decoded from that file, against the RGB source (VMAF on request).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np

from pipeline.metrics import bits_per_pixel, kilobits_per_second, ms_ssim_mean, psnr, psnr_yuv


class Point(Protocol):
    """One point of a codec's curve (a CRF, a set of E-NeRV codec settings)."""

    @property
    def label(self) -> str: ...  # 'crf26', '6b/20%': the ``point`` column and the figure's annotations

    @property
    def token(self) -> str: ...  # the point's part of its file name: 'crf26', 'b6-p20'

    @property
    def knob_value(self) -> str | float: ...  # the ``knob_value`` column


@dataclass(frozen=True)
class SourceClip:
    """The frames every codec encodes, and what identifies them."""

    frames: np.ndarray  # uint8 [T,H,W,3] RGB
    fps: float
    path: Path  # the input they were read from
    read_args: tuple[str, ...] = ()  # the enerv-compress options that read them so: --frames, --size
    key: str = ""  # fingerprint of the input file and of how it was read

    @property
    def source_id(self) -> str:
        return str(self.path.resolve())


@dataclass(frozen=True)
class Encoded:
    """What a codec's encode step reports besides the file it wrote.

    ``shared_seconds``: the part of this point's encode time that serves several points and
    is done once for them (E-NeRV: the fit). ``shared_reused``: that part was done by an
    earlier point, so this call's wall time does not contain it; the point's encode time
    still counts it in full.
    """

    command: str  # the exact command that makes this file
    details: Any  # a dataclass of the codec's own columns
    shared_seconds: float = 0.0
    shared_reused: bool = False
    history: tuple[dict, ...] = ()  # E-NeRV: the fit's loss and PSNR after each epoch


@dataclass(frozen=True)
class RDPoint:
    """One measured rate-distortion point: a row of ``results.csv`` before the run's bookkeeping."""

    codec: str
    setting: str
    point: str
    knob: str
    knob_value: str | float
    bytes: int
    bpp: float
    kbps: float
    psnr_rgb: float
    psnr_yuv: float
    ms_ssim: float | None
    encode_seconds: float  # the whole encode, shared work counted in full
    own_encode_seconds: float  # without the shared work (the same as encode_seconds for the anchors)
    decode_seconds: float
    frames: int
    width: int
    height: int
    fps: float
    command: str
    config: dict  # the codec's description of this point (exact settings and versions)
    encoder_version: str
    details: Any
    history: tuple[dict, ...] = ()
    vmaf: float | None = None  # None: not measured
    vmaf_model: str = ""  # the model and libvmaf version, or why there is no VMAF

    def to_row(self) -> dict:
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("details", "history")}
        row.update(asdict(self.details))
        return row


class Codec(ABC):
    """A fully configured encoder: one curve of the benchmark, whose points vary one knob."""

    name: ClassVar[str]  # the ``codec`` column: 'x264', 'svtav1', 'enerv'
    extension: ClassVar[str]  # of its files: '.mp4', '.obu', '.bin'
    knob: ClassVar[str]  # what varies along the curve: 'crf', 'qp', 'quality,bits,prune'

    @abstractmethod
    def setting(self) -> str:
        """The curve's name within its codec: 'medium-yuv420p', 'enerv-cpu-s'."""

    def key_setting(self) -> str:
        """The setting as the point cache's key names it (E-NeRV leaves out a budget that its
        description holds anyway, so a point keeps its key in a run of one budget or several)."""
        return self.setting()

    @abstractmethod
    def points(self) -> tuple[Point, ...]:
        """The curve's points, in the order they run."""

    @abstractmethod
    def describe(self, point: Point) -> dict:
        """The exact settings of a point (versions, flags, preset, overrides), JSON-ready;
        the benchmark's cache key hashes it, so any change here measures the point again."""

    @abstractmethod
    def version(self) -> str:
        """The encoder's version, as its library reports it."""

    @abstractmethod
    def encode(self, clip: SourceClip, point: Point, target: Path) -> Encoded:
        """Encodes the clip at one point into the file ``target`` (whole, or not at all)."""

    @abstractmethod
    def decode(self, path: Path, width: int, height: int) -> np.ndarray:
        """The uint8 RGB frames [T,H,W,3] that a viewer gets from the file."""

    def check_available(self) -> None:  # noqa: B027 - optional hook: most codecs run anywhere
        """Raises InputError when this machine cannot run the codec."""

    def file_name(self, point: Point) -> str:
        return f"{self.name}-{self.setting()}-{point.token}{self.extension}"

    def run(self, clip: SourceClip, point: Point, target: Path, vmaf: bool = False) -> RDPoint:
        """Encodes one point to ``target``, decodes the file, and measures both (VMAF too if asked)."""
        frames = clip.frames
        T, H, W = frames.shape[:3]
        start = time.perf_counter()
        encoded = self.encode(clip, point, target)
        wall = time.perf_counter() - start
        size = target.stat().st_size
        start = time.perf_counter()
        decoded = self.decode(target, W, H)
        decode_seconds = time.perf_counter() - start
        if decoded.shape != frames.shape:
            raise RuntimeError(f"{target} decodes to {decoded.shape}, expected {frames.shape}")
        encode_seconds = wall + (encoded.shared_seconds if encoded.shared_reused else 0.0)
        score = None
        if vmaf:
            from benchmarks.vmaf import measure_vmaf

            score = measure_vmaf(decoded, frames, clip.fps)
        return RDPoint(
            codec=self.name, setting=self.setting(), point=point.label, knob=self.knob, knob_value=point.knob_value,
            bytes=size, bpp=bits_per_pixel(size, W, H, T), kbps=kilobits_per_second(size, T, clip.fps),
            psnr_rgb=psnr(decoded, frames), psnr_yuv=psnr_yuv(decoded, frames), ms_ssim=ms_ssim_mean(decoded, frames),
            encode_seconds=encode_seconds, own_encode_seconds=encode_seconds - encoded.shared_seconds,
            decode_seconds=decode_seconds, frames=T, width=W, height=H, fps=clip.fps, command=encoded.command,
            config=self.describe(point), encoder_version=self.version(), details=encoded.details,
            history=encoded.history, vmaf=None if score is None else score.mean,
            vmaf_model="" if score is None else score.model,
        )
