"""``enerv-grid``: E-NeRV's up-sampling decoder fed by learned feature grids instead of its token transformer.

Besides the network, the rule that gives its temporal grids their knots from a clip's length.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import NetworkConfig
from pipeline.layers import FirstUpBlock, PositionalEncoding, UpBlock, mlp, stage_sizes, stage_widths


def space_grid_stages(config: NetworkConfig) -> dict[int, int]:
    """Stage index -> channels of the static spatial grid added at that stage's input (see
    :func:`grid_stages`)."""
    return grid_stages(config, config.space_grid_scales, config.space_grid_channels)


def grid_stages(config: NetworkConfig, scales: tuple[int, ...], channels: tuple[int, ...]) -> dict[int, int]:
    """Stage index -> channels of the grids asked for at ``scales`` with ``channels`` each.

    A grid asked for at ``scale`` (times smaller than the output) goes to the finest stage input
    that is at least that many times smaller (never finer: a grid's size grows with the square
    of its resolution); the head's input (scale 1) counts as stage ``len(strides)``. Grids that
    land on the same stage add their channels.
    """
    factors = [math.prod(config.strides[i:]) for i in range(len(config.strides) + 1)]
    out: dict[int, int] = {}
    for scale, k in zip(scales, channels):
        stage = max(i for i, f in enumerate(factors) if f >= scale or i == 0)
        out[stage] = out.get(stage, 0) + k
    return out


def time_grid_knots(spacing: int, num_frames: int) -> int:
    """Knots of a temporal grid with one knot every ``spacing`` frames, both ends included."""
    return max(2, math.ceil((num_frames - 1) / spacing) + 1)


class GridENeRV(nn.Module):
    """E-NeRV's up-sampling decoder, fed by learned feature grids instead of its token transformer.

    A frame's base feature map is the temporal grids interpolated linearly at the frame's time
    (a 1x1 convolution widens it to ``fc_dim`` channels); static learned grids add
    position-specific detail at finer stage inputs; every stage keeps E-NeRV's temporal
    modulation (instance normalization, then a scale and shift computed from the frame's time).
    A frame still depends on its index alone.
    """

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = c = config
        self.pe = PositionalEncoding(c.pe_base, c.pe_levels)
        self.time_grids = nn.ParameterList(
            nn.Parameter(torch.randn(knots, channels, c.fc_h, c.fc_w) * 0.1)
            for knots, channels in zip(c.time_grid_knots, c.time_grid_channels))
        self.time_proj = nn.Conv2d(sum(c.time_grid_channels), c.fc_dim, 1)
        self.mod_t = mlp([self.pe.dim, c.mod_dim, c.mod_dim])
        widths = stage_widths(c)
        self.modulations = nn.ModuleList(mlp([c.mod_dim, 2 * c_in]) for c_in, _ in widths)
        sizes = stage_sizes(c)
        inputs = [c_in for c_in, _ in widths] + [widths[-1][1]]
        self.grid_stages = sorted(space_grid_stages(c).items())
        self.space_grids = nn.ParameterList(
            nn.Parameter(torch.randn(1, k, *sizes[i]) * 0.1) for i, k in self.grid_stages)
        self.space_projs = nn.ModuleList(nn.Conv2d(k, inputs[i], 1, bias=False) for i, k in self.grid_stages)
        self.stages = nn.ModuleList(
            (FirstUpBlock if i == 0 else UpBlock)(c_in, c_out, s)
            for i, ((c_in, c_out), s) in enumerate(zip(widths, c.strides))
        )
        self.head = nn.Conv2d(widths[-1][1], 3, 1)

    def _time_features(self, t: torch.Tensor) -> torch.Tensor:
        """Each temporal grid interpolated linearly at the frames' times, levels concatenated."""
        levels = []
        for grid in self.time_grids:
            knots = grid.shape[0]
            position = t.float().clamp(0, 1) * (knots - 1)
            left = position.floor().long().clamp(max=knots - 2)
            weight = (position - left.float()).view(-1, 1, 1, 1)
            levels.append(grid[left] * (1 - weight) + grid[left + 1] * weight)
        return torch.cat(levels, dim=1)

    def _stage_input(self, stage: int, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What is added at the input of ``stage`` (``len(self.stages)``: the head's): the static grid."""
        for (i, _), grid, proj in zip(self.grid_stages, self.space_grids, self.space_projs):
            if i == stage:
                x = x + proj(grid)
        return x

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t``: [B] normalized frame indices -> [B, 3, H, W] frames in [0, 1]."""
        x = self.time_proj(self._time_features(t))
        t_mod = self.mod_t(self.pe(t))
        for i, (modulation, stage) in enumerate(zip(self.modulations, self.stages)):
            gamma, beta = modulation(t_mod)[..., None, None].chunk(2, dim=1)
            x = F.instance_norm(x) * gamma + beta
            x = stage(self._stage_input(i, x, t))
        return torch.sigmoid(self.head(self._stage_input(len(self.stages), x, t)))


def knots_for_clip(config: NetworkConfig, num_frames: int) -> NetworkConfig:
    """``config`` with one temporal-grid knot every ``time_grid_spacing[i]`` frames of a clip (or
    segment) of ``num_frames`` frames; knots already set are kept."""
    if config.time_grid_knots is not None:
        return config
    knots = tuple(time_grid_knots(spacing, num_frames) for spacing in config.time_grid_spacing)
    return replace(config, time_grid_knots=knots)
