"""Derives the token grid and up-sampling strides from a video's size.

The network renders ``fc_h * S`` by ``fc_w * S`` pixels, where ``S`` is the product
of the strides.  For sizes that do not factor, the output is larger than the video
and the extra rows/columns on the bottom/right are cropped away.
"""

from __future__ import annotations

import math
from dataclasses import replace

from pipeline.config import NetworkConfig
from pipeline.errors import InputError
from pipeline.kinds import network_kind

MIN_SIDE = 8
MAX_SIDE = 8192
MAX_TOKENS = 4096  # attention over the grid is quadratic in the token count


def _smooth_numbers(limit: int) -> list[int]:
    """Numbers >= 2 whose prime factors are 2, 3 or 5, up to ``limit``."""
    out = []
    for n in range(2, limit + 1):
        m = n
        for p in (2, 3, 5):
            while m % p == 0:
                m //= p
        if m == 1:
            out.append(n)
    return out


def split_strides(scale: int, max_stages: int) -> tuple[int, ...]:
    """Splits an up-sampling factor into at most ``max_stages`` strides.

    Prime factors go largest first (the first stage works on the smallest map), and
    the two smallest are merged while there are too many: 20 -> 5,2,2; 80 -> 5,2,2,2,2;
    120 with four stages -> 5,4,3,2.
    """
    factors = []
    m = scale
    for p in (5, 3, 2):
        while m % p == 0:
            factors.append(p)
            m //= p
    if m != 1:
        raise ValueError(f"scale {scale} has a prime factor above 5")
    while len(factors) > max_stages:
        factors.sort()
        factors = [factors[0] * factors[1]] + factors[2:]
    return tuple(sorted(factors, reverse=True))


def resolve_network(config: NetworkConfig, width: int, height: int, num_frames: int | None = None) -> NetworkConfig:
    """Returns ``config`` with ``fc_h``, ``fc_w`` and ``strides`` set for a video size, and the
    fields its kind derives from a clip's length (``enerv-grid``: the temporal grids' knots) for a
    clip (or segment) of ``num_frames`` frames (left unset without ``num_frames``: such a network
    cannot be built then).

    Given values are kept; they must then cover the video.  Otherwise the scale is
    chosen so that the grid holds about ``grid_tokens`` tokens with little padding.
    """
    kind = network_kind(config.kind)
    kind.validate(config)
    if num_frames is not None:
        # Without a frame count only the geometry is resolved (enough to check a size).
        config = kind.resolve_clip(config, num_frames)
    if not (MIN_SIDE <= width <= MAX_SIDE and MIN_SIDE <= height <= MAX_SIDE):
        raise InputError(
            f"cannot serve a {width}x{height} video: each side must be in {MIN_SIDE}..{MAX_SIDE} pixels"
        )
    if config.fc_h is not None and config.fc_w is not None and config.strides is not None:
        if config.out_width < width or config.out_height < height:
            raise InputError(
                f"the network renders {config.out_width}x{config.out_height}, smaller than the video's {width}x{height}"
            )
        return config
    if config.strides is not None:
        scales = [math.prod(config.strides)]
    else:
        scales = _smooth_numbers(min(width, height))
    best = None
    for scale in scales:
        fc_h = config.fc_h or math.ceil(height / scale)
        fc_w = config.fc_w or math.ceil(width / scale)
        if fc_h * scale < height or fc_w * scale < width:
            continue
        tokens = fc_h * fc_w
        if tokens > MAX_TOKENS:
            continue
        padding = (fc_h * fc_w * scale * scale) / (width * height) - 1.0
        # Relative terms: distance (in log) from the target token count, padded area.
        score = abs(math.log(tokens / config.grid_tokens)) + 4.0 * padding
        if best is None or score < best[0]:
            best = (score, fc_h, fc_w, scale)
    if best is None:
        raise InputError(f"cannot serve a {width}x{height} video with this network configuration")
    _, fc_h, fc_w, scale = best
    strides = config.strides or split_strides(scale, config.max_stages)
    return replace(config, fc_h=fc_h, fc_w=fc_w, strides=strides)
