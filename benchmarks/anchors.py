"""The conventional codecs, x264 and x265 through ffmpeg, as codecs of the benchmark.

Each supplies its ffmpeg flags; :meth:`benchmarks.codec.Codec.run` measures it exactly as
it measures E-NeRV. RGB <-> YUV conversions use the BT.709 matrix in limited range,
explicitly on both sides, so that no default of ffmpeg's colour handling enters the numbers.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from benchmarks.codec import Codec, Encoded, RDPoint, SourceClip
from pipeline.errors import InputError
from pipeline.ffmpeg import ffmpeg_binary, has_encoder

COLOUR = "bt709"


@dataclass(frozen=True)
class CRFPoint:
    """A point of an anchor's curve: one constant-rate-factor value."""

    crf: float

    @property
    def label(self) -> str:
        return f"crf{self.crf:g}"

    @property
    def token(self) -> str:
        return self.label

    @property
    def knob_value(self) -> float:
        return self.crf


@dataclass(frozen=True)
class AnchorDetails:
    """The columns of an anchor's row beyond the common ones."""

    preset: str
    pix_fmt: str
    crf: float
    low_delay: bool
    device: str = "cpu"


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(cmd, input=stdin, capture_output=True,
                          stdin=None if stdin is not None else subprocess.DEVNULL)
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["ffmpeg failed"])[-1]
        raise RuntimeError(f"ffmpeg failed: {last}")
    return proc.stdout


@dataclass(frozen=True)
class FFmpegCodec(Codec):
    """A CRF-controlled ffmpeg encoder; subclasses give the encoder library and its flags.

    ``library_version`` and ``ffmpeg`` name the builds that encode (the plan looks them up
    once); they enter each point's description, so another build makes other points.
    """

    preset: str = "medium"
    pix_fmt: str = "yuv420p"
    low_delay: bool = False
    crfs: tuple[float, ...] = ()
    library_version: str = "unknown"
    ffmpeg: str = "unknown"

    encoder = ""
    extension = ".mp4"
    knob = "crf"

    def codec_flags(self) -> dict:
        raise NotImplementedError

    def setting(self) -> str:
        return f"{self.preset}-{self.pix_fmt}" + ("-lowdelay" if self.low_delay else "")

    def points(self) -> tuple[CRFPoint, ...]:
        return tuple(CRFPoint(crf) for crf in self.crfs)

    def describe(self, point: CRFPoint) -> dict:
        return {"encoder": self.encoder, "library_version": self.library_version, "ffmpeg": self.ffmpeg,
                "preset": self.preset, "pix_fmt": self.pix_fmt, "low_delay": self.low_delay, "crf": point.crf,
                "codec_flags": self.codec_flags()}

    def version(self) -> str:
        return f"{self.encoder} {self.library_version}"

    def check_available(self) -> None:
        if not has_encoder(self.encoder):
            raise InputError(f"this ffmpeg ({ffmpeg_binary()}) has no {self.encoder} encoder")

    def encode_command(self, width: int, height: int, fps: float, crf: float, out: Path) -> list[str]:
        stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=fps)
        stream = stream.filter("scale", out_color_matrix=COLOUR, out_range="tv")
        flags = dict(vcodec=self.encoder, crf=crf, preset=self.preset, pix_fmt=self.pix_fmt,
                     colorspace=COLOUR, color_primaries=COLOUR, color_trc=COLOUR, color_range="tv")
        flags.update(self.codec_flags())
        return (ffmpeg.output(stream, str(out), **flags)
                .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y")
                .compile(cmd=ffmpeg_binary()))

    def encode(self, clip: SourceClip, point: CRFPoint, target: Path) -> Encoded:
        """ffmpeg from raw RGB on its input pipe to the file (written beside, then renamed)."""
        T, H, W = clip.frames.shape[:3]
        partial = target.with_name(target.stem + ".partial" + target.suffix)  # keeps the extension ffmpeg needs
        cmd = self.encode_command(W, H, clip.fps, point.crf, partial)
        try:
            _run(cmd, stdin=np.ascontiguousarray(clip.frames).tobytes())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        command = " ".join(c if c != "pipe:" else "-" for c in cmd).replace(str(partial), str(target))
        return Encoded(command=command, details=AnchorDetails(self.preset, self.pix_fmt, point.crf, self.low_delay))

    def decode(self, path: Path, width: int, height: int) -> np.ndarray:
        stream = ffmpeg.input(str(path)).filter("scale", in_color_matrix=COLOUR, in_range="tv")
        cmd = (ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt="rgb24")
               .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
               .compile(cmd=ffmpeg_binary()))
        raw = _run(cmd)
        return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)

    def describe_setting(self) -> str:
        mode = "low-delay (zerolatency, GOP 12, no B-frames)" if self.low_delay else "default GOP with B-frames"
        return f"{self.preset}, {self.pix_fmt}, {mode}"


@dataclass(frozen=True)
class X264(FFmpegCodec):
    """libx264. ``version_sei=False`` removes the SEI message in which x264 writes its version
    and settings (about 700 bytes per file, no picture data), as ``info=0`` does for x265."""

    version_sei: bool = True

    name = "x264"
    encoder = "libx264"

    def codec_flags(self) -> dict:
        flags: dict = {"tune": "zerolatency", "g": 12, "bf": 0} if self.low_delay else {}
        if not self.version_sei:
            # x264 writes no other SEI in these configurations; type 6 = SEI NAL units.
            flags["bsf:v"] = "filter_units=remove_types=6"
        return flags

    def describe_setting(self) -> str:
        return super().describe_setting() + ("" if self.version_sei else ", version SEI removed")


@dataclass(frozen=True)
class X265(FFmpegCodec):
    name = "x265"
    encoder = "libx265"

    def codec_flags(self) -> dict:
        # info=0: no settings string in the stream (it would count as rate).
        params = "log-level=error:info=0"
        if self.low_delay:
            return {"tune": "zerolatency", "x265-params": params + ":keyint=12:bframes=0"}
        return {"x265-params": params}


def encoder_version(encoder: str) -> str:
    """The version an ffmpeg encoder library reports ("unknown" when it says none).

    Found by encoding one tiny synthetic frame: libx265 logs its version at the info level;
    libx264 writes its API level ("core 165") and, in some builds, a revision into the stream.
    """
    if not has_encoder(encoder):
        return "not available"
    muxer = {"libx264": "h264", "libx265": "hevc"}.get(encoder, "null")
    cmd = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "info", "-f", "lavfi",
           "-i", "color=c=gray:s=64x64:r=1:d=1", "-frames:v", "1", "-c:v", encoder, "-f", muxer, "-"]
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (proc.stdout + proc.stderr).decode("latin-1")
    if encoder == "libx264":
        match = re.search(r"x264 - core (\d+(?: r\d+(?: [0-9a-f]{7,})?)?)", text)
        return f"core {match[1]}" if match else "unknown"
    if encoder == "libx265":
        match = re.search(r"HEVC encoder version (\S+)", text)
        return match[1] if match else "unknown"
    return "unknown"


def match_size(codec: FFmpegCodec, clip: SourceClip, target_bytes: int,
               crf_range: tuple[int, int] = (0, 51)) -> RDPoint:
    """The codec's point at the integer CRF whose file size is closest to ``target_bytes``.

    File size falls as CRF rises, so a bisection finds it in about six encodes.
    """
    low, high = crf_range
    seen: dict[int, RDPoint] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def at(crf: int) -> RDPoint:
            if crf not in seen:
                seen[crf] = codec.run(clip, CRFPoint(crf), Path(tmp) / f"crf{crf}{codec.extension}")
            return seen[crf]

        while high - low > 1:
            mid = (low + high) // 2
            if at(mid).bytes > target_bytes:
                low = mid
            else:
                high = mid
        return min((at(low), at(high)), key=lambda p: abs(p.bytes - target_bytes))
