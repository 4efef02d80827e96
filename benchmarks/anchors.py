"""The conventional codecs through ffmpeg (x264, x265, SVT-AV1, libaom, VVenC) as codecs of the benchmark.

One class serves them all: each anchor's encoder, container, rate parameter, presets and
flags come from its entry in :mod:`benchmarks.registry`, and
:meth:`benchmarks.codec.Codec.run` measures it exactly as it measures E-NeRV. RGB <-> YUV
conversions use the BT.709 matrix in limited range, explicitly on both sides, so that no
default of ffmpeg's colour handling enters the numbers.
"""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from benchmarks.codec import Codec, Encoded, RDPoint, SourceClip
from benchmarks.registry import ANCHORS, AnchorSpec, chroma_label
from pipeline.errors import InputError
from pipeline.ffmpeg import ffmpeg_binary, fps_mode_option, has_encoder, run_checked, run_ffmpeg

COLOUR = "bt709"


@dataclass(frozen=True)
class RatePoint:
    """A point of an anchor's curve: one value of its rate parameter (a CRF, a QP)."""

    value: float
    knob: str = "crf"

    @property
    def label(self) -> str:
        return f"{self.knob}{self.value:g}"

    @property
    def token(self) -> str:
        return self.label

    @property
    def knob_value(self) -> float:
        return self.value


@dataclass(frozen=True)
class AnchorDetails:
    """The columns of an anchor's row beyond the common ones."""

    preset: str
    pix_fmt: str
    crf: float | None
    qp: float | None
    low_delay: bool
    device: str = "cpu"


@dataclass(frozen=True)
class FFmpegCodec(Codec):
    """One curve of an anchor: its preset, pixel format and rate values.

    ``library_version`` and ``ffmpeg`` name the builds that encode (the plan looks them up
    once); they enter each point's description, so another build makes other points.
    ``strip_metadata`` removes what the encoder writes beside the pictures (x264's version SEI,
    VVenC's access unit delimiters), so that no codec pays for it.
    """

    anchor: str = "x264"  # its name in benchmarks.registry.ANCHORS
    preset: str = "medium"
    pix_fmt: str = "yuv420p"  # the pixel format the encoder gets
    low_delay: bool = False
    rates: tuple[float, ...] = ()
    library_version: str = "unknown"
    ffmpeg: str = "unknown"
    strip_metadata: bool = True

    @property
    def spec(self) -> AnchorSpec:
        return ANCHORS[self.anchor]

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def extension(self) -> str:
        return self.spec.extension

    @property
    def knob(self) -> str:
        return self.spec.knob

    @property
    def encoder(self) -> str:
        return self.spec.encoder

    def codec_flags(self) -> dict:
        return self.spec.codec_flags(self.low_delay, self.strip_metadata)

    def setting(self) -> str:
        return f"{self.spec.setting_token(self.preset)}-{self.pix_fmt}" + ("-lowdelay" if self.low_delay else "")

    def points(self) -> tuple[RatePoint, ...]:
        return tuple(RatePoint(value, self.knob) for value in self.rates)

    def describe(self, point: RatePoint) -> dict:
        return {"encoder": self.encoder, "library_version": self.library_version, "ffmpeg": self.ffmpeg,
                "preset": self.preset, "pix_fmt": self.pix_fmt, "low_delay": self.low_delay, self.knob: point.value,
                "codec_flags": self.codec_flags()}

    def version(self) -> str:
        return f"{self.encoder} {self.library_version}"

    def check_available(self) -> None:
        if not has_encoder(self.encoder):
            raise InputError(f"this ffmpeg ({ffmpeg_binary()}) has no {self.encoder} encoder")

    def encode_command(self, width: int, height: int, fps: float, value: float, out: Path) -> list[str]:
        spec = self.spec
        stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=fps)
        stream = stream.filter("scale", out_color_matrix=COLOUR, out_range="tv")
        flags = {"vcodec": spec.encoder, spec.knob: value, spec.preset_option: self.preset, "pix_fmt": self.pix_fmt,
                 "colorspace": COLOUR, "color_primaries": COLOUR, "color_trc": COLOUR, "color_range": "tv",
                 **self.codec_flags()}
        if spec.muxer != "mp4":  # ffmpeg takes MP4 from the extension; the raw streams are named
            flags["format"] = spec.muxer
        return (ffmpeg.output(stream, str(out), **flags)
                .global_args("-nostdin", "-hide_banner", "-loglevel", "error", "-y")
                .compile(cmd=ffmpeg_binary()))

    def encode(self, clip: SourceClip, point: RatePoint, target: Path) -> Encoded:
        """ffmpeg from raw RGB on its input pipe to the file (written beside, then renamed)."""
        T, H, W = clip.frames.shape[:3]
        partial = target.with_name(target.stem + ".partial" + target.suffix)  # keeps the extension ffmpeg needs
        cmd = self.encode_command(W, H, clip.fps, point.value, partial)
        try:
            run_checked(cmd, stdin=np.ascontiguousarray(clip.frames).tobytes())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
        command = " ".join(c if c != "pipe:" else "-" for c in cmd).replace(str(partial), str(target))
        crf, qp = (point.value, None) if self.knob == "crf" else (None, point.value)
        return Encoded(command=command, details=AnchorDetails(self.preset, self.pix_fmt, crf, qp, self.low_delay))

    def decode(self, path: Path, width: int, height: int) -> np.ndarray:
        options = {} if self.spec.muxer == "mp4" else {"format": self.spec.muxer}
        stream = ffmpeg.input(str(path), **options).filter("scale", in_color_matrix=COLOUR, in_range="tv")
        # Raw streams have no timestamps: every decoded frame out, none repeated or dropped.
        cmd = (ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt="rgb24", **{fps_mode_option(): "passthrough"})
               .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
               .compile(cmd=ffmpeg_binary()))
        raw = run_checked(cmd)
        return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)

    def describe_setting(self) -> str:
        if self.low_delay:
            mode = "low-delay (zerolatency, GOP 12, no B-frames)"
        else:
            mode = "default GOP with B-frames" if self.spec.low_delay_flags else "default GOP"
        text = f"{self.spec.preset_label(self.preset)}, {self.pix_fmt} ({chroma_label(self.pix_fmt)}), {mode}"
        return text + (", version SEI removed" if self.name == "x264" and self.strip_metadata else "")


@dataclass(frozen=True)
class X264(FFmpegCodec):
    """libx264. ``version_sei=False`` removes the SEI message in which x264 writes its version
    and settings (about 700 bytes per file, no picture data), as ``info=0`` does for x265."""

    anchor: str = "x264"
    version_sei: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "strip_metadata", not self.version_sei)


@dataclass(frozen=True)
class X265(FFmpegCodec):
    anchor: str = "x265"


def encoder_version(encoder: str) -> str:
    """The version an anchor's library reports ("unknown" when it says none), found by encoding
    one tiny synthetic frame with the query of its registry entry."""
    spec = next((s for s in ANCHORS.values() if s.encoder == encoder), None)
    if not has_encoder(encoder):
        return "not available"
    if spec is None:
        return "unknown"
    query = spec.version
    cmd = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", query.loglevel, "-f", "lavfi",
           "-i", "color=c=gray:s=64x64:r=1:d=1", "-frames:v", "1", "-pix_fmt", next(iter(spec.chroma.values())),
           "-c:v", encoder, "-f", query.muxer, "-"]
    try:
        proc = run_ffmpeg(cmd)
    except InputError:
        return "unknown"
    match = re.search(query.pattern, (proc.stdout + proc.stderr).decode("latin-1"))
    return query.text.format(match[1]) if match else "unknown"


def match_size(codec: FFmpegCodec, clip: SourceClip, target_bytes: int,
               crf_range: tuple[int, int] | None = None) -> RDPoint:
    """The codec's point at the integer rate value whose file size is closest to ``target_bytes``.

    File size falls as the value (CRF, QP) rises, so a bisection finds it in about six encodes.
    """
    low, high = crf_range or codec.spec.knob_range
    seen: dict[int, RDPoint] = {}
    with tempfile.TemporaryDirectory() as tmp:

        def at(value: int) -> RDPoint:
            if value not in seen:
                seen[value] = codec.run(clip, RatePoint(value, codec.knob),
                                        Path(tmp) / f"{codec.knob}{value}{codec.extension}")
            return seen[value]

        while high - low > 1:
            mid = (low + high) // 2
            if at(mid).bytes > target_bytes:
                low = mid
            else:
                high = mid
        return min((at(low), at(high)), key=lambda p: abs(p.bytes - target_bytes))

