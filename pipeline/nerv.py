"""NeRV (NeurIPS 2021), E-NeRV's baseline: an MLP from the encoded frame index to a feature map, then up-sampling."""

from __future__ import annotations

import torch
from torch import nn

from pipeline.config import NetworkConfig
from pipeline.layers import PositionalEncoding, UpBlock, mlp, stage_widths


class NeRV(nn.Module):
    """NeRV: an MLP from the encoded frame index to a feature map, then up-sampling."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = c = config
        self.pe = PositionalEncoding(c.pe_base, c.pe_levels)
        self.stem = mlp([self.pe.dim, *c.stem_dims, c.fc_h * c.fc_w * c.fc_dim])
        widths = stage_widths(c)
        self.stages = nn.ModuleList(UpBlock(c_in, c_out, s) for (c_in, c_out), s in zip(widths, c.strides))
        self.head = nn.Conv2d(widths[-1][1], 3, 1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        c = self.config
        x = self.stem(self.pe(t)).view(t.shape[0], c.fc_dim, c.fc_h, c.fc_w)
        for stage in self.stages:
            x = stage(x)
        return torch.sigmoid(self.head(x))
