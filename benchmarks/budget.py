"""E-NeRV's time budget: fewer epochs when a point's estimated fit + fine-tune time is too long.

One factor scales every epoch count of a curve, chosen so that the curve's longest point
fits in the budget; the points of a curve thus keep the same fitting epochs and share one fit.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

from pipeline.config import CodecPreset, override


def epochs_of(preset: CodecPreset) -> tuple[int, int, int, int]:
    """(fitting, prune fine-tune, rate-distortion fine-tune, rounding fine-tune) epochs a compression runs."""
    pe = preset.codec.prune_epochs if preset.codec.prune_ratio > 0 else 0
    rd = preset.codec.rd_epochs if preset.codec.quality is not None else 0
    return preset.fit.epochs, pe, rd, preset.codec.qat_epochs


def estimate_seconds_per_epoch(preset: CodecPreset, frames: np.ndarray, device: str) -> float:
    """Seconds per training epoch over the whole clip, from two short epochs on a few frames.

    The second epoch is timed (the first carries one-off start-up costs) and scaled to the
    clip's number of steps per epoch.
    """
    import torch

    from compress.fit import Clip, train
    from pipeline.geometry import resolve_network
    from pipeline.networks import build_network

    T, H, W = frames.shape[:3]
    batch = preset.fit.batch_size
    subset = frames[: min(T, 3 * batch)]
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_network(resolve_network(preset.network, W, H, T)).to(dev)
    result = train(model, Clip.from_numpy(subset, dev), preset.fit, epochs=2, lr=preset.fit.lr, progress=False)
    epoch_seconds = result.history[-1]["seconds"] - result.history[0]["seconds"]
    steps = math.ceil(len(subset) / batch)
    return epoch_seconds / steps * math.ceil(T / batch)


def budget_factor(presets: Iterable[CodecPreset], seconds_per_epoch: float, budget: float) -> float:
    """The factor (at most 1) that brings the longest of these presets within ``budget`` seconds.

    A fine-tune epoch is counted as a fitting epoch. 0 or less means no budget (factor 1).
    """
    longest = max(seconds_per_epoch * sum(epochs_of(p)) for p in presets)
    if budget <= 0 or longest <= budget:
        return 1.0
    return budget / longest


def scale_epochs(preset: CodecPreset, factor: float) -> CodecPreset:
    """Every epoch count times ``factor`` (rounded down, at least 1 where it was not 0)."""
    if factor >= 1:
        return preset
    fit, pe, rd, qe = (max(1, math.floor(e * factor)) if e else 0 for e in epochs_of(preset))
    return override(preset, fit=override(preset.fit, epochs=fit),
                    codec=override(preset.codec, prune_epochs=pe, rd_epochs=rd, qat_epochs=qe))


def apply_budget(preset: CodecPreset, seconds_per_epoch: float, budget: float) -> tuple[CodecPreset, float]:
    """One preset within ``budget``: the preset to run and the estimate for the epochs it runs."""
    scaled = scale_epochs(preset, budget_factor([preset], seconds_per_epoch, budget))
    return scaled, seconds_per_epoch * sum(epochs_of(scaled))
