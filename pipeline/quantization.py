"""Uniform scalar quantization with stored steps: the encoder's quantizer, its training-time
twin and the decoder's inverse, all on the same grid.

A tensor is quantized with one step (or one per output channel), stored in the file as float16
and used as stored everywhere: ``symbol = rint(w / step)`` and ``w' = symbol * step``, both in
float32. :func:`quantize_dequantize` computes exactly ``dequantize(quantize(w))`` in torch, bit
for bit, so the network trained on the quantized grid is the network the decoder rebuilds.
Zero maps to symbol 0 and back to +0.0, so pruned weights stay exactly zero.

Version-1 files bound the symbols by a bit depth (``|symbol| <= 2^(bits-1) - 1``, the step
chosen from the tensor's peak); version-2 files bound them by :data:`MAX_SYMBOL` and choose the
steps for rate and distortion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FLOAT16_MIN = float(np.float16(2.0**-24))  # smallest positive (subnormal) float16
FLOAT16_MAX = float(np.finfo(np.float16).max)
MAX_SYMBOL = (1 << 15) - 1  # |symbol| bound of version-2 files


def qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class QuantParams:
    """How one tensor is quantized: its float16 step(s) and the symbol bound."""

    scales: np.ndarray  # float16 steps, shape [1] (per tensor) or [C] (per output channel)
    bits: int | None = None  # version 1: symbols within +-qmax(bits); None: +-MAX_SYMBOL

    @property
    def per_channel(self) -> bool:
        return self.scales.shape[0] > 1

    @property
    def max_symbol(self) -> int:
        return qmax(self.bits) if self.bits is not None else MAX_SYMBOL


def round_up_float16(values: np.ndarray) -> np.ndarray:
    """Nearest float16 at or above each value, within float16's positive range."""
    values = np.clip(np.asarray(values, np.float64), FLOAT16_MIN, FLOAT16_MAX)
    out = values.astype(np.float16)
    low = out.astype(np.float64) < values
    out[low] = np.nextafter(out[low], np.float16(np.inf))
    return out


def peak_steps(weight: np.ndarray, bits: int, per_channel: bool = False) -> np.ndarray:
    """float16 steps that map the largest magnitude (of the tensor or of each channel) to
    ``qmax(bits)``: a starting point, and the rule of version-1 files."""
    w = np.abs(weight.astype(np.float64))
    if per_channel:
        peak = w.reshape(w.shape[0], -1).max(axis=1)
    else:
        peak = np.array([w.max() if w.size else 0.0])
    peak = np.where(peak > 0, peak, 1.0)  # an all-zero channel quantizes to zeros with any step
    return round_up_float16(peak / qmax(bits))


def choose_scales(weight: np.ndarray, bits: int, per_channel: bool) -> QuantParams:
    """The version-1 quantizer of ``bits`` bits: steps from the peak, symbols within +-qmax(bits)."""
    return QuantParams(peak_steps(weight, bits, per_channel), bits)


def _broadcast(steps: np.ndarray, ndim: int) -> np.ndarray:
    steps = steps.astype(np.float32)
    return steps.reshape((-1,) + (1,) * (ndim - 1)) if steps.shape[0] > 1 else steps.reshape(())


def quantize(weight: np.ndarray, params: QuantParams) -> np.ndarray:
    """float32 weights -> int32 symbols of the same shape."""
    q = params.max_symbol
    scaled = weight.astype(np.float32) / _broadcast(params.scales, weight.ndim)
    return np.clip(np.rint(scaled), -q, q).astype(np.int32)


def dequantize(symbols: np.ndarray, params: QuantParams) -> np.ndarray:
    """int32 symbols -> float32 weights (the decoder's side of :func:`quantize`)."""
    return symbols.astype(np.float32) * _broadcast(params.scales, symbols.ndim)


def steps_as_tensor(steps: torch.Tensor, ndim: int) -> torch.Tensor:
    """A [1] or [C] step vector shaped to broadcast over a tensor of ``ndim`` dimensions."""
    return steps.reshape((-1,) + (1,) * (ndim - 1)) if steps.numel() > 1 else steps.reshape(())


def quantize_dequantize(weight: torch.Tensor, steps: torch.Tensor, max_symbol: int = MAX_SYMBOL) -> torch.Tensor:
    """``dequantize(quantize(w))`` in torch, bit for bit (float32 steps holding float16 values).

    ``+ 0.0`` turns the -0.0 that rounding gives small negative values into the +0.0 that
    the integer symbol 0 decodes to.
    """
    step = steps_as_tensor(steps.float(), weight.dim())
    symbols = torch.clamp(torch.round(weight.float() / step), -max_symbol, max_symbol) + 0.0
    return symbols * step
