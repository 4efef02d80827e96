"""Rate control: a target (a size, a bitrate, bits per pixel) in bytes, the network and the
quality knob chosen for it, and the one factor on every step that lands the file on it.

How a target is met, in three steps: (1) before fitting, the network's width and the quality
knob are chosen from an empirical model of the bits a weight costs at each quality
(:func:`bits_per_parameter`), at the quality that serves the rate best (:data:`SWEET_QUALITY`);
(2) after the rate-distortion fine-tune, every step is scaled by one factor, found by bisection
on the real coded size (:func:`step_multiplier`), and the rounding fine-tune adapts the weights
to that grid; (3) the assembled file is corrected the same way over all its segments.

``--target-size`` takes bytes with an optional suffix: ``k``/``KB`` = 1000, ``KiB`` = 1024,
``M``/``MB`` = 10^6, ``MiB`` = 2^20 (``G``/``GB``/``GiB`` likewise). ``--bitrate`` is in kbit/s
(1000 bits) at the video's frame rate. ``--target-bpp`` is bits per pixel of every frame.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace

import numpy as np

from pipeline.bitstream import CodedTensor, SegmentSpan, StreamHeader, write_bitstream
from pipeline.config import CodecPreset, NetworkConfig, override
from pipeline.errors import InputError
from pipeline.geometry import resolve_network
from pipeline.kinds import network_kind
from pipeline.latent_coding import FEATURES, LatentContext
from pipeline.networks import build_network, count_parameters
from pipeline.presets import scales_width, with_width
from pipeline.quantization import QuantParams

_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kKmMgG]?)(i?)([bB]?)\s*")
_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}
_BINARY = {"k": 1024, "m": 1024**2, "g": 1024**3}


def parse_byte_size(text: str) -> int:
    """Bytes from ``123456``, ``50KB``, ``50k``, ``1.5MB``, ``64KiB``..."""
    match = _SIZE_RE.fullmatch(text)
    if not match or (match[3] and not match[2]):
        raise InputError(f"bad size {text!r}: expected bytes with an optional suffix, e.g. 250000, 250KB, 1.5MB, 64KiB")
    unit = match[2].lower()
    factor = _BINARY[unit] if match[3] else _UNITS[unit]
    return int(round(float(match[1]) * factor))


@dataclass(frozen=True)
class RateTarget:
    """The file size a user asked for, and how they asked for it."""

    bytes: int
    asked: str  # "0.05 bpp", "250,000 bytes", "500 kbit/s at 24 fps"
    default: bool = False  # chosen by the tool, not asked for: adapted where it cannot be met

    def bpp(self, width: int, height: int, frames: int) -> float:
        return 8.0 * self.bytes / (width * height * frames)

    @property
    def described(self) -> str:
        """'0.05 bpp, 17,280 bytes'; a size asked in bytes once: '500 bytes'."""
        size = f"{self.bytes:,} bytes"
        return self.asked if self.asked == size else f"{self.asked}, {size}"


def rate_target(*, bpp: float | None = None, size: str | None = None, bitrate: float | None = None,
                width: int, height: int, frames: int, fps: float, min_bytes: int = 1) -> RateTarget | None:
    """The target in bytes for a clip, or None when none was asked for.

    At most one of ``bpp``, ``size`` and ``bitrate`` may be given; a target that is not a
    positive finite number, or that is smaller than ``min_bytes`` (what a file of this network
    costs before any weight, its header), is refused.
    """
    given = [name for name, value in (("--target-bpp", bpp), ("--target-size", size), ("--bitrate", bitrate))
             if value is not None]
    if not given:
        return None
    if len(given) > 1:
        raise InputError(f"give one rate target, not {' and '.join(given)}")
    if bpp is not None:
        if not (math.isfinite(bpp) and bpp > 0):
            raise InputError(f"--target-bpp must be a positive number, got {bpp:g}")
        target = RateTarget(int(round(bpp * width * height * frames / 8)), f"{bpp:g} bpp")
    elif size is not None:
        count = parse_byte_size(size)
        if count <= 0:
            raise InputError(f"--target-size must be positive, got {size!r}")
        target = RateTarget(count, f"{count:,} bytes")
    else:
        if not (math.isfinite(bitrate) and bitrate > 0):
            raise InputError(f"--bitrate must be a positive number of kbit/s, got {bitrate:g}")
        target = RateTarget(int(round(bitrate * 1000 / 8 * frames / fps)), f"{bitrate:g} kbit/s at {fps:g} fps")
    if target.bytes < min_bytes:
        raise InputError(f"the target ({target.described}) is smaller than the file's own header "
                         f"and side information ({min_bytes:,} bytes) for this video")
    return target


def step_multiplier(size_at, target_bytes: int, *, tolerance: float = 0.03, iterations: int = 24,
                    bounds: tuple[float, float] = (1 / 64, 64.0)) -> float:
    """The factor on every quantization step that brings a file to ``target_bytes``.

    ``size_at(m)`` codes the weights with every step times ``m`` and returns the file's bytes,
    which fall as ``m`` grows. Returns 1 when that is already within ``tolerance`` below the
    target; else the smallest factor found (bisection on log m within ``bounds``, which hold 1)
    whose file is not over the target, or the bound reached when none is.
    """
    low, high = bounds
    size = size_at(1.0)
    if (1 - tolerance) * target_bytes <= size <= target_bytes:
        return 1.0
    lo, hi = (0.0, math.log(high)) if size > target_bytes else (math.log(low), 0.0)
    if size > target_bytes and size_at(high) > target_bytes:
        return high
    if size < target_bytes and size_at(low) <= target_bytes:
        return low
    # Invariant: size_at(exp(lo)) > target >= size_at(exp(hi)).
    for _ in range(iterations):
        mid = (lo + hi) / 2
        size = size_at(math.exp(mid))
        if size > target_bytes:
            lo = mid
        else:
            hi = mid
            if size >= (1 - tolerance) * target_bytes:
                break
    return math.exp(hi)


# The quality at which a network of the enerv-grid family gives the best PSNR for its rate on
# the benchmark clips (the Pareto envelope of size x quality, see the README); a target is met
# by choosing the width that reaches it at this quality.
SWEET_QUALITY = 50.0
QUALITY_RANGE = (10.0, 90.0)
WIDTH_RANGE = (0.25, 6.0)
BITS_AT_50, BITS_PER_DECADE = 3.4, 1.0


def bits_per_parameter(quality: float) -> float:
    """Coded bits per weight that the rate term tends to give at ``quality`` (empirical)."""
    return min(10.0, max(0.6, BITS_AT_50 + BITS_PER_DECADE * (quality - 50.0) / 20.0))


def quality_for_bits(bits: float) -> float:
    """The inverse of :func:`bits_per_parameter`, clamped to :data:`QUALITY_RANGE`."""
    q = 50.0 + 20.0 * (bits - BITS_AT_50) / BITS_PER_DECADE
    return min(QUALITY_RANGE[1], max(QUALITY_RANGE[0], q))


@dataclass(frozen=True)
class RatePlan:
    """The network width and the quality chosen for a target."""

    target: RateTarget
    width: float  # factor on the base preset's channels (1: as the preset is)
    quality: float
    parameters: int  # of one segment's network
    weight_bytes: int  # the target minus the file's header and side information
    notice: str = ""  # said once when a default target had to be raised to the smallest file
    steered: bool = False  # the quality is a start: lambda follows the measured size while fitting

    def describe(self, segments: int = 1) -> str:
        """One line: the target and the point chosen for it."""
        each = " a segment" if segments > 1 else ""
        line = (f"rate: target {self.target.asked} = {self.target.bytes:,} bytes; network width x{self.width:g} "
                f"({self.parameters:,} parameters{each}), quality {self.quality:g}")
        if self.steered:
            line += " to start (lambda then follows the measured size while fitting)"
        return line


def at_least(target: RateTarget, floor: int, maker: str) -> tuple[RateTarget, str]:
    """``target``, or where it is below ``floor`` (the smallest file this ``maker`` makes for the
    clip): a default target raised to it, with the notice to say once; a target the user gave is
    refused."""
    if target.bytes >= floor:
        return target, ""
    if not target.default:
        raise InputError(f"the target ({target.described}) is below the smallest file this {maker} makes for "
                         f"this clip ({floor:,} bytes)")
    notice = (f"note: the default target {target.asked} ({target.bytes:,} bytes) is below the smallest file "
              f"this {maker} makes for this clip; aiming at that instead ({floor:,} bytes)")
    return RateTarget(floor, f"{floor:,} bytes (the smallest file for this clip)", default=True), notice


def smallest_file_bytes(parameters_at, overhead_bytes: int, segments: int = 1, scalable: bool = True) -> int:
    """The smallest file rate control can aim at: the narrowest network at the lowest quality."""
    parameters = parameters_at(WIDTH_RANGE[0] if scalable else 1.0)
    return overhead_bytes + math.ceil(segments * parameters * bits_per_parameter(QUALITY_RANGE[0]) / 8)


def plan_for_target(preset: CodecPreset, target: RateTarget, parameters_at, overhead_bytes: int,
                    segments: int = 1, scalable: bool = True) -> RatePlan:
    """Chooses the width and the quality for ``target``.

    ``parameters_at(width)``: one segment's parameter count at that width; ``overhead_bytes``:
    what the file costs besides the weights; ``segments``: networks in the file. Without
    ``scalable`` only the quality is chosen. A default target (``target.default``) below the
    smallest file that works is raised to it, with a notice (``RatePlan.notice``); a target the
    user gave below it is refused.
    """
    target, notice = at_least(target, smallest_file_bytes(parameters_at, overhead_bytes, segments, scalable),
                              "network family")
    weight_bytes = target.bytes - overhead_bytes
    if weight_bytes <= 0:
        raise InputError(f"the target ({target.described}) leaves nothing for the weights "
                         f"after the file's header and side information ({overhead_bytes:,} bytes)")
    wanted = 8.0 * weight_bytes / (segments * bits_per_parameter(SWEET_QUALITY))  # parameters per network
    width = 1.0
    if scalable:
        lo, hi = WIDTH_RANGE
        if parameters_at(lo) >= wanted:
            width = lo
        elif parameters_at(hi) <= wanted:
            width = hi
        else:
            for _ in range(30):  # bisection on log width: parameters grow with width
                mid = math.sqrt(lo * hi)
                lo, hi = (mid, hi) if parameters_at(mid) < wanted else (lo, mid)
            width = round(math.sqrt(lo * hi), 3)
    parameters = parameters_at(width)
    quality = round(quality_for_bits(8.0 * weight_bytes / (segments * parameters)), 1)
    return RatePlan(target, width, quality, parameters, weight_bytes, notice)


# Bits per pixel of enerv-latent-xs (kind enerv-ctx) at three qualities: the geometric means of
# the files measured on the bundled clip and vtest (reports/latent-320 and reports/minutes-320;
# 60-480 s a point). Clips differ up to 3x at quality 60 (0.10 against 0.31 bpp), so this is only
# where a steered fit starts (compress.rate_feedback moves lambda onto the target).
STEERED_CURVE = ((30.0, 0.0195), (45.0, 0.048), (60.0, 0.173))


def steered_quality(bpp: float) -> float:
    """The quality whose files :data:`STEERED_CURVE` puts at ``bpp`` (log-linear between its
    points, extended with the slope of its ends), within :data:`QUALITY_RANGE`."""
    qs = [q for q, _ in STEERED_CURVE]
    logs = [math.log(b) for _, b in STEERED_CURVE]
    x = math.log(max(bpp, 1e-6))
    i = 1 if x <= logs[1] else len(qs) - 1
    q = qs[i - 1] + (qs[i] - qs[i - 1]) * (x - logs[i - 1]) / (logs[i] - logs[i - 1])
    return min(QUALITY_RANGE[1], max(QUALITY_RANGE[0], round(q, 1)))


def steered(preset: CodecPreset) -> bool:
    """Whether rate control steers lambda while fitting (presets with the rate term from the
    first step), rather than choosing the width and scaling the steps after the fit."""
    return preset.codec.rate_from_start != "none"


def default_target_bpp(width: int, height: int) -> float:
    """The target of a plain ``enerv-compress in -o out``: bits per pixel by frame size, falling
    as frames grow (larger frames code with fewer bits per pixel at the same look).

    0.05 bpp at 320x180 and 320x240 is where the default codec (enerv-latent-xs) stays within
    1.1 dB of x264 medium 4:4:4 on the bundled clip and 0.7 dB on vtest at 240 s a point, above
    27 dB on both (reports/minutes-320); the larger sizes keep the earlier rule's ratios between
    size classes (not measured at those sizes)."""
    pixels = width * height
    if pixels <= 640 * 360:
        return 0.05
    if pixels <= 1280 * 720:
        return 0.03
    return 0.02


@dataclass(frozen=True)
class RateRequest:
    """A target as given on the command line, before the video's size is known; ``default``:
    none given, use :func:`default_target_bpp`."""

    bpp: float | None = None
    size: str | None = None
    bitrate: float | None = None
    default: bool = False

    def target(self, width: int, height: int, frames: int, fps: float) -> RateTarget | None:
        bpp = default_target_bpp(width, height) if self.default else self.bpp
        found = rate_target(bpp=bpp, size=self.size, bitrate=self.bitrate, width=width, height=height,
                            frames=frames, fps=fps)
        if found is not None and self.default:
            found = RateTarget(max(1, found.bytes), f"{bpp:g} bpp (the default for {width}x{height})", default=True)
        return found


MODEL_BYTES_PER_TENSOR = 2


def overhead_bytes(network: NetworkConfig, width: int, height: int, num_frames: int, segments: int = 1) -> int:
    """What a file of this network costs besides its weights' symbols: the header and side
    information of a file of zero weights, and 2 bytes per coded tensor for the symbol models
    that real weights need beyond it (format 4, measured on the 24 files of reports/minutes-320
    transcoded: 1.4 bytes per tensor on average, 5.3 at most)."""
    from compress.result import ENCODER_NAME

    model = build_network(network)
    kind = network_kind(network.kind)
    silent = LatentContext((0,) * FEATURES, (0,) * FEATURES, 0)
    coded = [CodedTensor(QuantParams(np.ones(1, np.float16)), np.zeros(p.shape, np.int32), None,
                         silent if kind.is_latent(name) else None)
             for name, p in model.named_parameters()]
    coded_tensors = sum(1 for name, _ in model.named_parameters() if not kind.is_latent(name))
    header = StreamHeader(network, width, height, num_frames, 24.0, ENCODER_NAME, 0.0)
    per = -(-num_frames // segments)
    spans = [SegmentSpan(first, min(per, num_frames - first)) for first in range(0, num_frames, per)]
    data = (write_bitstream(header, coded)[0] if len(spans) == 1
            else write_bitstream(header, [coded] * len(spans), spans)[0])
    return len(data) + MODEL_BYTES_PER_TENSOR * coded_tensors * len(spans)


def preset_for_target(preset: CodecPreset, target: RateTarget, width: int, height: int, segment_frames: int,
                      segments: int = 1, scale_width: bool = True) -> tuple[CodecPreset, RatePlan]:
    """The preset with the width and the quality that rate control chose for ``target``."""
    base = preset.network

    def parameters_at(factor: float) -> int:
        return count_parameters(build_network(resolve_network(with_width(preset, factor).network, width, height,
                                                              segment_frames)))

    scalable = scale_width and scales_width(base)
    overhead = overhead_bytes(resolve_network(base, width, height, segment_frames), width, height,
                              segment_frames * segments, segments)
    if steered(preset):
        return _steered_plan(preset, target, parameters_at(1.0), overhead, width, height, segment_frames, segments)
    plan = plan_for_target(preset, target, parameters_at, overhead, segments, scalable)
    chosen = with_width(preset, plan.width)
    return override(chosen, codec=replace(chosen.codec, quality=plan.quality)), plan


def _steered_plan(preset: CodecPreset, target: RateTarget, parameters: int, overhead: int, width: int, height: int,
                  segment_frames: int, segments: int) -> tuple[CodecPreset, RatePlan]:
    """The plan of a preset whose lambda is steered while fitting: its own width, the quality its
    kind's curve gives for the target's bits per pixel. A default target below the smallest file
    (the header, side information and the weights at the lowest quality; latents can all but
    vanish) is raised to it, with a notice; a target the user gave below it is refused."""
    network = resolve_network(preset.network, width, height, segment_frames)
    kind = network_kind(network.kind)
    weights = sum(p.numel() for name, p in build_network(network).named_parameters() if not kind.is_latent(name))
    floor = overhead + math.ceil(segments * weights * bits_per_parameter(QUALITY_RANGE[0]) / 8)
    target, notice = at_least(target, floor, "network")
    quality = steered_quality(target.bpp(width, height, segment_frames * segments))
    plan = RatePlan(target, 1.0, quality, parameters, target.bytes - overhead, notice, steered=True)
    return override(preset, codec=replace(preset.codec, quality=quality)), plan
