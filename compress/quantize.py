"""Quantization of a fitted network: steps chosen for rate and distortion, and its symbols.

One quantizer serves training and the file. Every transmitted tensor has one step, a float16
value; the network is fine-tuned on exactly the grid the file stores
(:func:`pipeline.quantization.quantize_dequantize`), first with uniform noise of one step in
place of rounding, then with rounding itself (straight-through). The steps are learned with the
weights: a Laplace estimate of each tensor's coded size (:mod:`compress.rate`), weighted by
lambda, pulls them up; the distortion pulls them down. With a bit depth (``bits``) the symbols are
bounded by +-(2^(bits-1) - 1) instead and the steps start from the tensor's peak.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from compress.rate import laplace_bits, laplace_scale_init
from pipeline.bitstream import CodedTensor
from pipeline.quantization import (
    FLOAT16_MAX,
    FLOAT16_MIN,
    MAX_SYMBOL,
    QuantParams,
    peak_steps,
    qmax,
    quantize,
    quantize_dequantize,
    steps_as_tensor,
)

NOISE, ROUND = "noise", "round"
STEP_LR = 1e-2  # learning rate of the log-steps and log-scales (unitless, so one value fits all)


def _float16_ste(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the nearest float16, with the identity as gradient."""
    return x + (x.half().float() - x).detach()


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class LearnedQuantizer(nn.Module):
    """A step and a Laplace scale (both as logs) per transmitted tensor, trained with the network.

    ``names`` are the network's parameter names in file order; ``masks`` hold the pruned
    tensors' masks (pruned weights are zero, not coded, and cost nothing here).
    """

    def __init__(self, params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None = None,
                 bits: int | None = None, init_bits: int = 8, learn_steps: bool = True):
        super().__init__()
        self.names = list(params)
        self.masks = masks or {}
        self.max_symbol = qmax(bits) if bits is not None else MAX_SYMBOL
        self.learn_steps = learn_steps
        steps, scales = [], []
        for name in self.names:
            w = self.masked(name, params[name]).detach().float().cpu()
            steps.append(float(peak_steps(w.numpy(), bits if bits is not None else init_bits)[0]))
            kept = w[self.masks[name].cpu()] if name in self.masks else w
            scales.append(laplace_scale_init(kept) if kept.numel() else 1.0)
        device = next(iter(params.values())).device
        self.log_steps = nn.Parameter(torch.tensor(steps, device=device).log(), requires_grad=learn_steps)
        self.log_scales = nn.Parameter(torch.tensor(scales, device=device).log())

    def masked(self, name: str, p: torch.Tensor) -> torch.Tensor:
        """Parameter ``p`` (named ``name``) with its pruning mask applied, if it has one."""
        return p * self.masks[name] if name in self.masks else p

    def steps(self) -> torch.Tensor:
        """The steps as the file stores them: float16 values (straight-through when learned)."""
        return _float16_ste(self.log_steps.exp().clamp(min=2.0**-24, max=65504.0))

    def forward(self, params: dict[str, torch.Tensor], mode: str) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The weights the network uses, and the estimated bits of coding them.

        ``mode`` NOISE adds uniform noise of one step (a differentiable stand-in for rounding);
        ROUND rounds onto the file's grid, straight-through for the weights and, as in learned
        step-size quantization, with the rounding residual as the step's gradient.
        """
        steps, scales = self.steps(), self.log_scales.exp()
        weights, bits = {}, steps.new_zeros(())
        for i, name in enumerate(self.names):
            p = self.masked(name, params[name])
            step = steps_as_tensor(steps[i : i + 1], p.dim())
            if mode == NOISE:
                bound = self.max_symbol * step
                v = torch.maximum(torch.minimum(p, bound), -bound) + (torch.rand_like(p) - 0.5) * step
            elif mode == ROUND:
                v = torch.clamp(_round_ste(p / step), -self.max_symbol, self.max_symbol) * step
            else:
                raise ValueError(f"unknown quantization mode {mode!r}")
            if name in self.masks:
                v = v * self.masks[name]
                cost = laplace_bits(v[self.masks[name]], step.reshape(()), scales[i])
            else:
                cost = laplace_bits(v, step.reshape(()), scales[i])
            weights[name] = v
            bits = bits + cost.sum()
        return weights, bits

    def quant_params(self) -> list[QuantParams]:
        """The file's quantization parameters (one float16 step per tensor), in file order."""
        steps = self.steps().detach().cpu().numpy().astype(np.float16)
        return [QuantParams(np.array([s], np.float16)) for s in steps]

    @torch.no_grad()
    def estimated_bits(self, params: dict[str, torch.Tensor]) -> float:
        """The Laplace estimate of the rounded weights' coded size (bits)."""
        return float(self(params, ROUND)[1])


def quantized_weights(quantizer: LearnedQuantizer, mode: str, lam: float, pixels: int):
    """A weight transform for :func:`compress.fit.train`: the quantizer's weights, and the rate
    term ``lam * estimated bits / pixels`` (bits per pixel) as the penalty (none when lam is 0)."""

    def transform(params: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        weights, bits = quantizer(params, mode)
        return weights, (bits * (lam / pixels) if lam else None)

    return transform


def code_tensor(weight: np.ndarray, step: np.float16, max_symbol: int, mask: np.ndarray | None) -> CodedTensor:
    """One tensor as symbols on the grid of ``step`` (float16), bounded by ``max_symbol``."""
    qp = QuantParams(np.array([step], np.float16))
    symbols = np.clip(quantize(weight, qp), -max_symbol, max_symbol).astype(np.int32)
    if mask is not None:
        symbols = symbols * mask
    return CodedTensor(qp, symbols, mask)


def scaled_steps(steps: np.ndarray, multiplier: float) -> np.ndarray:
    """float16 steps times ``multiplier``, rounded to float16 within its positive range."""
    scaled = np.clip(steps.astype(np.float64) * multiplier, FLOAT16_MIN, FLOAT16_MAX)
    return scaled.astype(np.float16)


def quantize_network(model: nn.Module, quantizer: LearnedQuantizer) -> list[CodedTensor]:
    """Every transmitted tensor, in the network's parameter order, as symbols on the file's grid."""
    return QuantizedNetwork.of(model, quantizer).coded


@dataclass
class QuantizedNetwork:
    """A network's tensors on the file's grid, and what it takes to move every step by one factor
    afterwards (rate control): the masked float32 weights, the float16 steps, the symbol bound."""

    coded: list[CodedTensor]
    weights: list[np.ndarray]
    steps: np.ndarray
    max_symbol: int

    @classmethod
    def of(cls, model: nn.Module, quantizer: LearnedQuantizer) -> QuantizedNetwork:
        params = dict(model.named_parameters())
        weights = [quantizer.masked(name, params[name]).detach().float().cpu().numpy() for name in quantizer.names]
        steps = np.array([qp.scales[0] for qp in quantizer.quant_params()], np.float16)
        coded = [code_tensor(w, s, quantizer.max_symbol,
                             quantizer.masks[name].cpu().numpy() if name in quantizer.masks else None)
                 for name, w, s in zip(quantizer.names, weights, steps)]
        return cls(coded, weights, steps, quantizer.max_symbol)

    def at(self, multiplier: float) -> list[CodedTensor]:
        """The tensors quantized with every step times ``multiplier`` (1: as trained)."""
        if multiplier == 1.0:
            return self.coded
        steps = scaled_steps(self.steps, multiplier)
        return [code_tensor(w, s, self.max_symbol, c.mask) for w, s, c in zip(self.weights, steps, self.coded)]


def load_quantized(model: nn.Module, quantizer: LearnedQuantizer) -> None:
    """Puts the weights the decoder will see into ``model``, in place (torch, same arithmetic)."""
    with torch.no_grad():
        steps = quantizer.steps()
        for i, (name, p) in enumerate(model.named_parameters()):
            p.copy_(quantize_dequantize(quantizer.masked(name, p), steps[i : i + 1], quantizer.max_symbol))


