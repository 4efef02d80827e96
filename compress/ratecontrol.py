"""Rate targets: what a user asks for (a size, a bitrate, bits per pixel) as a number of bytes.

``--target-size`` takes bytes with an optional suffix: ``k``/``KB`` = 1000, ``KiB`` = 1024,
``M``/``MB`` = 10^6, ``MiB`` = 2^20 (``G``/``GB``/``GiB`` likewise). ``--bitrate`` is in kbit/s
(1000 bits) at the video's frame rate. ``--target-bpp`` is bits per pixel of every frame.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from pipeline.errors import InputError

_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([kKmMgG]?)(i?)([bB]?)\s*")
_UNITS = {"": 1, "k": 1000, "m": 1000**2, "g": 1000**3}
_BINARY = {"k": 1024, "m": 1024**2, "g": 1024**3}


def parse_size(text: str) -> int:
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

    def bpp(self, width: int, height: int, frames: int) -> float:
        return 8.0 * self.bytes / (width * height * frames)


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
        count = parse_size(size)
        if count <= 0:
            raise InputError(f"--target-size must be positive, got {size!r}")
        target = RateTarget(count, f"{count:,} bytes")
    else:
        if not (math.isfinite(bitrate) and bitrate > 0):
            raise InputError(f"--bitrate must be a positive number of kbit/s, got {bitrate:g}")
        target = RateTarget(int(round(bitrate * 1000 / 8 * frames / fps)), f"{bitrate:g} kbit/s at {fps:g} fps")
    if target.bytes < min_bytes:
        raise InputError(f"the target ({target.asked}, {target.bytes:,} bytes) is smaller than the file's own header "
                         f"and side information ({min_bytes:,} bytes) for this video")
    return target


def step_multiplier(size_at, target_bytes: int, *, tolerance: float = 0.03, iterations: int = 24) -> float:
    """The factor on every quantization step that brings a file to ``target_bytes``.

    ``size_at(m)`` codes the weights with every step times ``m`` and returns the file's bytes,
    which fall as ``m`` grows. Returns 1 when that is already within ``tolerance`` below the
    target; else the smallest factor found (bisection on log m within 1/64..64) whose file is
    not over the target, or the largest tried when none is small enough.
    """
    size = size_at(1.0)
    if (1 - tolerance) * target_bytes <= size <= target_bytes:
        return 1.0
    lo, hi = (0.0, math.log(64.0)) if size > target_bytes else (math.log(1 / 64), 0.0)
    if size > target_bytes and size_at(64.0) > target_bytes:
        return 64.0
    if size < target_bytes and size_at(1 / 64) <= target_bytes:
        return 1 / 64
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
