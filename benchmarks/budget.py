"""E-NeRV's time budget in the benchmark: fewer epochs when a curve's longest point would run over.

One factor scales every epoch count of a curve, so that the points of a curve keep the same
fitting epochs and share one fit; it is chosen with the encoder's own time model
(:mod:`compress.plan`: steps timed on this device, the work around them) so that the curve's
longest point is estimated within the budget.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from compress.plan import SAFETY, StepSeconds, estimate_seconds, overhead_seconds
from pipeline.config import CodecPreset
from pipeline.epochs import EpochPlan


def measure_steps(preset: CodecPreset, frames: np.ndarray, device: str) -> tuple[StepSeconds, int]:
    """The encoder's step timings for ``preset`` on these frames, and the network's parameters."""
    import torch

    from compress.fit import Clip
    from compress.plan import measure_step_seconds
    from pipeline.geometry import resolve_network
    from pipeline.networks import build_network, count_parameters

    T, H, W = frames.shape[:3]
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_network(resolve_network(preset.network, W, H, T)).to(dev)
    return measure_step_seconds(model, Clip.from_numpy(frames, dev), preset), count_parameters(model)


def budget_factor(plans: Iterable[EpochPlan], steps: StepSeconds, num_frames: int, batch_size: int, budget: float,
                  parameters: int = 0) -> float:
    """The factor (at most 1) on the training epochs that brings the longest of these plans within
    ``budget`` seconds, the work besides training included. 0 or less means no budget (factor 1)."""
    plans = list(plans)
    longest = max(estimate_seconds(p, steps, num_frames, batch_size, parameters) for p in plans)
    if budget <= 0 or longest <= budget:
        return 1.0
    around = overhead_seconds(steps, num_frames, parameters)
    return max(SAFETY * budget - around, 0.0) / max(longest - around, 1e-9)


def within_budget(plan: EpochPlan, factor: float) -> EpochPlan:
    """``plan`` scaled by ``factor`` in whole epochs (at least one where it was not 0)."""
    return plan if factor >= 1 else plan.scaled(factor)
