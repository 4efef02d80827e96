"""The networks of every registered kind, built from a resolved config, and what their users share.

The kinds (E-NeRV, NeRV, ``enerv-grid``) are listed once, in :mod:`pipeline.kinds`; each has its own
file. Each maps a normalized frame index ``t`` in [0, 1] to an RGB frame in [0, 1].
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.config import NetworkConfig
from pipeline.enerv import ENeRV
from pipeline.grid_enerv import GridENeRV, space_grid_stages, time_grid_knots
from pipeline.kinds import network_kind
from pipeline.layers import stage_sizes, stage_widths
from pipeline.nerv import NeRV

# Importable from here as before the networks had files of their own.
__all__ = [
    "ENeRV",
    "GridENeRV",
    "NeRV",
    "build_network",
    "count_parameters",
    "frame_times",
    "macs_per_pixel",
    "network_with_weights",
    "space_grid_stages",
    "stage_sizes",
    "stage_widths",
    "time_grid_knots",
]


def build_network(config: NetworkConfig) -> nn.Module:
    """The network a resolved config describes (same parameter order on both sides)."""
    return network_kind(config.kind).build(config)


def network_with_weights(config: NetworkConfig, weights: list[np.ndarray],
                         device: str | torch.device = "cpu") -> nn.Module:
    """The network ``config`` describes, its parameters (in order) set to ``weights``, in eval mode.

    The decoder and the encoder's final check both rebuild a file's network this way.
    """
    model = build_network(config)
    params = list(model.parameters())
    if len(params) != len(weights):
        raise ValueError(f"the network has {len(params)} tensors, {len(weights)} were given")
    with torch.no_grad():
        for param, value in zip(params, weights):
            param.copy_(torch.from_numpy(value))
    return model.to(device).eval()


def frame_times(indices: torch.Tensor, num_frames: int) -> torch.Tensor:
    """Normalized time of frame ``i`` of ``num_frames``: the first is 0, the last 1."""
    return indices.float() / max(num_frames - 1, 1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs_per_pixel(model: nn.Module) -> float:
    """Multiply-accumulates of rendering one frame, per output pixel: every convolution and
    linear layer of one forward pass (elementwise work, normalization and activations not
    counted), measured with forward hooks on a frame rendered once."""
    total = 0

    def count(module, inputs, output) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output.numel() * k
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            frame = model(torch.zeros(1, device=next(model.parameters()).device))
    finally:
        for hook in hooks:
            hook.remove()
    return total / (frame.shape[-1] * frame.shape[-2])
