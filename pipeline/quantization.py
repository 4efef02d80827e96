"""Uniform symmetric quantization: the encoder's quantizer and the decoder's inverse.

Symbols are integers in ``[-qmax, qmax]`` with ``qmax = 2^(bits-1) - 1``; zero maps
to symbol 0 and back to exactly 0.0, so pruned weights stay exactly zero.  Scales
are stored as float16 and used as stored on both sides, so the decoder's weights are
bit-identical to the encoder's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

FLOAT16_MIN = float(np.float16(2.0**-24))  # smallest positive (subnormal) float16
FLOAT16_MAX = float(np.finfo(np.float16).max)


def qmax(bits: int) -> int:
    return (1 << (bits - 1)) - 1


@dataclass(frozen=True)
class QuantParams:
    """How one tensor was quantized: bits and one scale per output channel, or one."""

    bits: int
    scales: np.ndarray  # float16, shape [1] (per tensor) or [C] (per output channel)

    @property
    def per_channel(self) -> bool:
        return self.scales.shape[0] > 1


def _round_up_float16(values: np.ndarray) -> np.ndarray:
    """Nearest float16 at or above each value (so the largest weight is not clipped)."""
    values = np.clip(values.astype(np.float64), FLOAT16_MIN, FLOAT16_MAX)
    out = values.astype(np.float16)
    low = out.astype(np.float64) < values
    out[low] = np.nextafter(out[low], np.float16(np.inf))
    return out


def choose_scales(weight: np.ndarray, bits: int, per_channel: bool) -> QuantParams:
    """Scales that map the largest magnitude (of the tensor or of each channel) to qmax."""
    w = np.abs(weight.astype(np.float64))
    if per_channel:
        peak = w.reshape(w.shape[0], -1).max(axis=1)
    else:
        peak = np.array([w.max() if w.size else 0.0])
    peak = np.where(peak > 0, peak, 1.0)  # an all-zero channel quantizes to zeros with any scale
    return QuantParams(bits, _round_up_float16(peak / qmax(bits)))


def _broadcast_scales(params: QuantParams, ndim: int) -> np.ndarray:
    scales = params.scales.astype(np.float32)
    return scales.reshape((-1,) + (1,) * (ndim - 1)) if params.per_channel else scales.reshape(())


def quantize(weight: np.ndarray, params: QuantParams) -> np.ndarray:
    """float32 weights -> int32 symbols of the same shape."""
    q = qmax(params.bits)
    scaled = weight.astype(np.float32) / _broadcast_scales(params, weight.ndim)
    return np.clip(np.rint(scaled), -q, q).astype(np.int32)


def dequantize(symbols: np.ndarray, params: QuantParams) -> np.ndarray:
    """int32 symbols -> float32 weights (the decoder's side of :func:`quantize`)."""
    return symbols.astype(np.float32) * _broadcast_scales(params, symbols.ndim)


def fake_quantize(weight: torch.Tensor, bits: int, per_channel: bool) -> torch.Tensor:
    """Quantize-dequantize in torch with a straight-through gradient (for fine-tuning)."""
    q = qmax(bits)
    w = weight.detach().abs()
    peak = w.flatten(1).amax(dim=1) if per_channel else w.amax().reshape(1)
    scale = torch.where(peak > 0, peak, torch.ones_like(peak)) / q
    scale = scale.reshape((-1,) + (1,) * (weight.dim() - 1)) if per_channel else scale.reshape(())
    quantized = torch.clamp(torch.round(weight / scale), -q, q) * scale
    return weight + (quantized - weight).detach()
