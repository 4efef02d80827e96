"""Quantization of a fitted network into symbols, and its fine-tuning."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from pipeline.bitstream import CodedTensor
from pipeline.entropy import empirical_entropy_bits
from pipeline.quantization import choose_scales, dequantize, fake_quantize, quantize


def quantize_tensor(
    weight: np.ndarray,
    bits: int,
    mask: np.ndarray | None,
    distortion: Callable[[np.ndarray], float] | None = None,
) -> CodedTensor:
    """Quantizes one tensor per tensor or per output channel, whichever is better.

    "Better" weighs distortion against rate with the high-rate rule that one more
    bit per symbol divides the squared error by four: the option with the smaller
    ``D * 4^(R/n)`` wins, R counting the coded values and the float16 scales.
    ``distortion`` maps the dequantized tensor to D (by default the weights' squared
    error; the encoder passes the network's output error instead, which is what
    matters: with entropy coding, per-tensor steps minimize the weights' error).
    """
    kept = mask if mask is not None else np.ones(weight.shape, bool)
    target = weight * kept
    if distortion is None:
        def distortion(w: np.ndarray) -> float:
            return float(np.sum((w - target) ** 2))

    options = [False] + ([True] if weight.ndim >= 2 and weight.shape[0] > 1 else [])
    n = max(int(kept.sum()), 1)
    best = None
    for per_channel in options:
        params = choose_scales(target, bits, per_channel)
        symbols = (quantize(weight, params) * kept).astype(np.int32)
        coded = CodedTensor(params, symbols, mask)
        if len(options) == 1:
            return coded
        rate = empirical_entropy_bits(symbols[kept]) + 16 * params.scales.size
        # log(D * 4^(R/n)), in logs to stay finite for tiny n
        score = math.log(max(distortion(dequantize(symbols, params)), 1e-300)) + math.log(4.0) * rate / n
        if best is None or score < best[0]:
            best = (score, coded)
    return best[1]


def output_distortion(model: nn.Module, name: str, times: torch.Tensor, reference: torch.Tensor):
    """D for :func:`quantize_tensor`: squared error of the network's output when only
    the tensor ``name`` is replaced by its quantized version."""
    param = dict(model.named_parameters())[name]

    def distortion(w: np.ndarray) -> float:
        original = param.detach().clone()
        with torch.no_grad():
            param.copy_(torch.from_numpy(w))
            error = float(((model(times) - reference) ** 2).sum())
            param.copy_(original)
        return error

    return distortion


def quantize_network(model: nn.Module, bits: int, masks: dict[str, torch.Tensor],
                     probe_frames: int = 4, num_frames: int = 2) -> list[CodedTensor]:
    """Every transmitted tensor, in the network's parameter order, as symbols.

    The per-tensor/per-channel choice is judged on the output of ``probe_frames``
    frames spread over the clip.
    """
    device = next(model.parameters()).device
    times = torch.linspace(0, 1, min(probe_frames, num_frames), device=device)
    model.eval()
    with torch.no_grad():
        reference = model(times)
    coded = []
    for name, param in model.named_parameters():
        weight = param.detach().float().cpu().numpy()
        mask = masks[name].cpu().numpy() if name in masks else None
        coded.append(quantize_tensor(weight, bits, mask, output_distortion(model, name, times, reference)))
    return coded


def load_dequantized(model: nn.Module, coded: list[CodedTensor]) -> None:
    """Loads the weights the decoder will see into ``model``, in place."""
    with torch.no_grad():
        for param, tensor in zip(model.parameters(), coded):
            param.copy_(torch.from_numpy(dequantize(tensor.symbols, tensor.params)))


def fake_quantized_weights(bits: int, masks: dict[str, torch.Tensor], per_channel: dict[str, bool]):
    """A weight transform for fine-tuning: masked, then quantized with a straight-through gradient."""

    def transform(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = {}
        for name, p in params.items():
            w = p * masks[name] if name in masks else p
            out[name] = fake_quantize(w, bits, per_channel[name])
        return out

    return transform
