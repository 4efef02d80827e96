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

from pipeline.latent_coding import FEATURES, LATENT_BOUND, SCALES, LatentContext

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


class LatentRate(torch.nn.Module):
    """The training twin of :mod:`pipeline.latent_coding`'s context model, for one latent tensor.

    The same four neighbours, a linear mean and a scale index linear in their magnitudes, on
    real values (noisy or rounded symbols) so that gradients reach the latents, the steps and
    these parameters. :meth:`context` rounds them to the integers the file stores; the code
    length then differs from this estimate by the rounding of the mean and the scale index.
    """

    INDEX_UNIT = 8.0  # the scale parameters are learned in units of 8 table indices

    def __init__(self) -> None:
        super().__init__()
        self.mean_weights = torch.nn.Parameter(torch.zeros(FEATURES))
        self.scale_weights = torch.nn.Parameter(torch.zeros(FEATURES))
        self.scale_bias = torch.nn.Parameter(torch.tensor(8.0 / self.INDEX_UNIT))  # scale 1/4 to begin

    @staticmethod
    def features(u: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """[4, T, C, H, W]: the previous latent frame's value (``previous``), above, above-left,
        above-right (0 outside)."""
        f = u.new_zeros((FEATURES,) + u.shape)
        f[0] = previous
        f[1, :, :, 1:] = u[:, :, :-1]
        f[2, :, :, 1:, 1:] = u[:, :, :-1, :-1]
        f[3, :, :, 1:, :-1] = u[:, :, :-1, 1:]
        return f

    @torch.no_grad()
    def start_at(self, mean_magnitude: float) -> None:
        """Starts the scale at the Laplace scale of symbols of this mean magnitude (values that do
        not start at zero: a grid coded as latents)."""
        index = 4.0 * (math.log2(max(mean_magnitude, 2.0**-4)) + 4.0)
        self.scale_bias.fill_(min(max(index, 0.0), SCALES - 1) / self.INDEX_UNIT)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """Bits of each symbol of ``u`` ([T, C, H, W], in steps) under the context model."""
        u = u.clamp(-LATENT_BOUND, LATENT_BOUND)
        return self._bits(u, torch.cat([torch.zeros_like(u[:1]), u[:-1]]))

    def batch_bits(self, u: torch.Tensor, previous: torch.Tensor, has_previous: torch.Tensor) -> torch.Tensor:
        """Bits of some latent frames ``u`` [B, C, H, W] given the frames before them
        (``has_previous`` False: a first frame, whose previous frame is zeros)."""
        previous = previous.clamp(-LATENT_BOUND, LATENT_BOUND) * has_previous.to(u.dtype).view(-1, 1, 1, 1)
        return self._bits(u.clamp(-LATENT_BOUND, LATENT_BOUND), previous)

    def _bits(self, u: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        f = self.features(u, previous)
        shape = (FEATURES,) + (1,) * u.dim()
        mean = (self.mean_weights.view(shape) * f).sum(0)
        index = self.INDEX_UNIT * (self.scale_bias + (self.scale_weights.view(shape) * f.abs()).sum(0))
        scale = torch.exp2(index.clamp(0, SCALES - 1) / 4.0 - 4.0)
        return laplace_bits(u - mean, u.new_ones(()), scale)

    def context(self) -> LatentContext:
        """The integer context model the file stores."""
        unit = self.INDEX_UNIT
        return LatentContext.of(self.mean_weights.detach().cpu().tolist(),
                                [unit * v for v in self.scale_weights.detach().cpu().tolist()],
                                unit * float(self.scale_bias.detach().cpu()))
