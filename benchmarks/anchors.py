"""Conventional codecs (x264, x265 through ffmpeg) measured the same way as ours.

Every codec is measured on 8-bit RGB frames decoded from its own output file, against
the RGB source, and its rate is the size of the whole file (container included).
RGB <-> YUV conversions use the BT.709 matrix in limited range, explicitly on both
sides, so that no default of ffmpeg's colour handling enters the numbers.
"""

from __future__ import annotations

import functools
import re
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from pipeline.errors import InputError
from pipeline.metrics import ms_ssim_mean, psnr, psnr_yuv
from pipeline.video_io import ffmpeg_binary, has_encoder

COLOUR = "bt709"


@dataclass
class RDPoint:
    """One measured rate-distortion point (a row of results.csv)."""

    codec: str
    setting: str
    knob: str
    knob_value: float
    bytes: int
    bpp: float
    kbps: float
    psnr_rgb: float
    psnr_yuv: float
    ms_ssim: float | None
    encode_seconds: float
    decode_seconds: float
    frames: int
    width: int
    height: int
    command: str

    def to_row(self) -> dict:
        return asdict(self)


def _run(cmd: list[str], stdin: bytes | None = None) -> bytes:
    proc = subprocess.run(cmd, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          stdin=None if stdin is not None else subprocess.DEVNULL)
    if proc.returncode != 0:
        last = (proc.stderr.decode(errors="replace").strip().splitlines() or ["ffmpeg failed"])[-1]
        raise RuntimeError(f"ffmpeg failed: {last}")
    return proc.stdout


@dataclass(frozen=True)
class FFmpegAnchor:
    """A CRF-controlled ffmpeg encoder; subclasses give the encoder and its flags."""

    preset: str = "medium"
    pix_fmt: str = "yuv420p"
    low_delay: bool = False

    name = "ffmpeg"
    encoder = ""

    def codec_flags(self) -> dict:
        raise NotImplementedError

    def describe(self) -> str:
        mode = "low-delay (zerolatency, GOP 12, no B-frames)" if self.low_delay else "default GOP with B-frames"
        return f"{self.preset}, {self.pix_fmt}, {mode}"

    def setting(self) -> str:
        return f"{self.preset}-{self.pix_fmt}" + ("-lowdelay" if self.low_delay else "")

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

    def decode(self, path: Path, width: int, height: int) -> np.ndarray:
        stream = ffmpeg.input(str(path)).filter("scale", in_color_matrix=COLOUR, in_range="tv")
        cmd = (ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt="rgb24")
               .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
               .compile(cmd=ffmpeg_binary()))
        raw = _run(cmd)
        return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)

    def run(self, frames: np.ndarray, crf: float, fps: float = 24.0, workdir: Path | None = None,
            keep: Path | None = None) -> RDPoint:
        """Encodes the RGB frames at one CRF, decodes the file and measures it."""
        T, H, W = frames.shape[:3]
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            out = keep or Path(tmp) / f"anchor{self.extension}"
            cmd = self.encode_command(W, H, fps, crf, out)
            start = time.perf_counter()
            _run(cmd, stdin=np.ascontiguousarray(frames).tobytes())
            encode_seconds = time.perf_counter() - start
            size = out.stat().st_size
            start = time.perf_counter()
            decoded = self.decode(out, W, H)
            decode_seconds = time.perf_counter() - start
        if decoded.shape != frames.shape:
            raise RuntimeError(f"{self.name} decoded {decoded.shape}, expected {frames.shape}")
        return RDPoint(
            codec=self.name, setting=self.setting(), knob="crf", knob_value=crf, bytes=size,
            bpp=8.0 * size / (W * H * T), kbps=8.0 * size / (T / fps) / 1000.0,
            psnr_rgb=psnr(decoded, frames), psnr_yuv=psnr_yuv(decoded, frames),
            ms_ssim=ms_ssim_mean(decoded, frames), encode_seconds=encode_seconds,
            decode_seconds=decode_seconds, frames=T, width=W, height=H,
            command=" ".join(c if c != "pipe:" else "-" for c in cmd),
        )

    extension = ".mp4"


@dataclass(frozen=True)
class X264Anchor(FFmpegAnchor):
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

    def describe(self) -> str:
        return super().describe() + ("" if self.version_sei else ", version SEI removed")


@dataclass(frozen=True)
class X265Anchor(FFmpegAnchor):
    name = "x265"
    encoder = "libx265"

    def codec_flags(self) -> dict:
        # info=0: no settings string in the stream (it would count as rate).
        params = "log-level=error:info=0"
        if self.low_delay:
            return {"tune": "zerolatency", "x265-params": params + ":keyint=12:bframes=0"}
        return {"x265-params": params}


@functools.lru_cache(maxsize=None)
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


def match_size(anchor: FFmpegAnchor, frames: np.ndarray, target_bytes: int, fps: float = 24.0,
               crf_range: tuple[int, int] = (0, 51)) -> RDPoint:
    """The anchor's point at the integer CRF whose file size is closest to ``target_bytes``.

    File size falls as CRF rises, so a bisection finds it in about six encodes.
    """
    low, high = crf_range
    seen: dict[int, RDPoint] = {}

    def at(crf: int) -> RDPoint:
        if crf not in seen:
            seen[crf] = anchor.run(frames, crf, fps)
        return seen[crf]

    while high - low > 1:
        mid = (low + high) // 2
        if at(mid).bytes > target_bytes:
            low = mid
        else:
            high = mid
    return min((at(low), at(high)), key=lambda p: abs(p.bytes - target_bytes))
