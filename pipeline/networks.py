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
