"""``enerv-latent``: enerv-grid with per-frame latent grids, the video's detail in context-coded latents.

Besides the network, the rule that gives it one latent frame per frame of a clip.
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from pipeline.config import NetworkConfig
from pipeline.grid_enerv import GridENeRV, grid_stages, knots_for_clip
from pipeline.layers import stage_sizes, stage_widths

LATENT_PREFIX = "latents."  # the parameters coded by pipeline.latent_coding, not by histograms


def latent_index(t: torch.Tensor, frames: int) -> torch.Tensor:
    """[B] normalized frame times -> [B] indices of the latent frames (of ``frames``) they use."""
    return torch.floor(t.float().clamp(0, 1) * (frames - 1) + 0.5).long().clamp(0, frames - 1)


class LatentENeRV(GridENeRV):
    """enerv-grid (temporal grids, static grids, E-NeRV's modulated up-sampling stages) plus, at
    some stage inputs, a latent grid of one latent frame per video frame, added through a 1x1
    convolution. The latents start at zero; their symbols are coded with a context model over
    the previous latent frame and the row above (:mod:`pipeline.latent_coding`), so a latent
    that repeats the previous frame's costs little. A frame still renders from its index alone.

    Frame ``i`` of a clip of ``n`` frames uses latent frame ``round(i / (n-1) * (F-1))`` of the
    ``F`` the network has: itself when ``n == F``; a shorter (last) segment uses a subset.
    """

    def __init__(self, config: NetworkConfig):
        super().__init__(config)
        c = config
        sizes = stage_sizes(c)
        widths = stage_widths(c)
        inputs = [c_in for c_in, _ in widths] + [widths[-1][1]]
        self.latent_stages = sorted(grid_stages(c, c.latent_scales, c.latent_channels).items())
        self.latents = nn.ParameterList(
            nn.Parameter(torch.zeros(c.latent_frames, k, *sizes[i])) for i, k in self.latent_stages)
        self.latent_projs = nn.ModuleList(nn.Conv2d(k, inputs[i], 1, bias=False) for i, k in self.latent_stages)

    def _stage_input(self, stage: int, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x = super()._stage_input(stage, x, t)
        for (i, _), latent, proj in zip(self.latent_stages, self.latents, self.latent_projs):
            if i == stage:
                x = x + proj(latent[latent_index(t, self.config.latent_frames)])
        return x


def latents_for_clip(config: NetworkConfig, num_frames: int) -> NetworkConfig:
    """``config`` with the temporal grids' knots and one latent frame per frame of ``num_frames``."""
    config = knots_for_clip(config, num_frames)
    return config if config.latent_frames is not None else replace(config, latent_frames=num_frames)
