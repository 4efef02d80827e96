"""A differentiable estimate of the coded size of a network's weights, for rate-distortion training.

Each transmitted tensor is modelled as i.i.d. Laplace(0, b) values quantized with step ``s``: a
value ``v`` costs ``-log2 P(bin of width s around v)``. Training adds ``lambda * bits / pixels``
to the loss, on weights perturbed by uniform noise of one step (the usual proxy of rounding) or
rounded with a straight-through gradient. ``b`` is fitted jointly (a learned log-scale per
tensor), so the estimate tracks the weights as they move.

The file does not code with this model: it stores integer symbol counts, which decode bit-exactly
on every machine. The estimate only guides training; ``--info`` reports how close it was.
"""

from __future__ import annotations

import math

import torch

LOG2 = math.log(2.0)
_LOG_HALF = math.log(0.5)
_TINY = 1e-12


def laplace_bits(values: torch.Tensor, step: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Bits of each value: ``-log2`` of the mass of Laplace(0, scale) on ``[v - step/2, v + step/2]``.

    ``step`` and ``scale`` broadcast against ``values``. Both branches of the piecewise form are
    evaluated on clamped inputs, so no branch overflows and no gradient becomes NaN.
    """
    c = values.abs()
    lo = c - step / 2
    # The bin lies on one side of zero: 0.5 * exp(-lo/b) * (1 - exp(-step/b)).
    lo_pos = lo.clamp(min=0.0)
    tail = _LOG_HALF - lo_pos / scale + torch.log(-torch.expm1(-step / scale)).expand_as(lo_pos)
    # The bin straddles zero: 1 - 0.5 * exp(lo/b) - 0.5 * exp(-(c + step/2)/b).
    lo_neg = lo.clamp(max=0.0)
    inside = 1 - 0.5 * torch.exp(lo_neg / scale) - 0.5 * torch.exp(-(c + step / 2) / scale)
    middle = torch.log(inside.clamp_min(_TINY))
    return -torch.where(lo >= 0, tail, middle) / LOG2


def laplace_scale_init(weight: torch.Tensor) -> float:
    """Maximum-likelihood Laplace scale of zero-mean values: their mean magnitude."""
    return max(float(weight.detach().abs().mean()), 1e-8)
