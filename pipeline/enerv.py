"""E-NeRV (ECCV 2022): disentangled spatial (token grid) and temporal (frame index) context."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import NetworkConfig
from pipeline.layers import FirstUpBlock, PositionalEncoding, TransformerBlock, UpBlock, mlp, stage_widths


class ENeRV(nn.Module):
    """E-NeRV: disentangled spatial (token grid) and temporal (frame index) context."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = c = config
        self.pe = PositionalEncoding(c.pe_base, c.pe_levels)
        # Temporal branch giving the per-frame embedding that scales the tokens.
        self.stem_t = mlp([self.pe.dim, *c.stem_dims, c.block_dim])
        # Spatial branch: a fixed grid of coordinates, encoded, mapped, attended.
        ys, xs = torch.meshgrid(torch.arange(c.fc_h) / c.fc_h, torch.arange(c.fc_w) / c.fc_w, indexing="ij")
        self.register_buffer("grid_y", ys.flatten(), persistent=False)
        self.register_buffer("grid_x", xs.flatten(), persistent=False)
        self.stem_xy = mlp([2 * self.pe.dim, c.block_dim])
        project = c.single_head_projection
        self.spatial_block = TransformerBlock(c.block_dim, 1, c.head_dim, c.mlp_dim, project)
        self.fused_block = TransformerBlock(c.block_dim, c.heads, c.head_dim, c.mlp_dim, project)
        self.to_fc = nn.Identity() if c.block_dim == c.fc_dim else mlp([c.block_dim, c.fc_dim])
        # Second temporal branch: per-stage (gamma, beta) after instance normalization.
        self.mod_t = mlp([self.pe.dim, c.mod_dim, c.mod_dim])
        widths = stage_widths(c)
        self.modulations = nn.ModuleList(mlp([c.mod_dim, 2 * c_in]) for c_in, _ in widths)
        self.stages = nn.ModuleList(
            (FirstUpBlock if i == 0 else UpBlock)(c_in, c_out, s)
            for i, ((c_in, c_out), s) in enumerate(zip(widths, c.strides))
        )
        self.head = nn.Conv2d(widths[-1][1], 3, 1)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t``: [B] normalized frame indices -> [B, 3, H, W] frames in [0, 1]."""
        c = self.config
        pe_t = self.pe(t)
        t_emb = self.stem_t(pe_t)  # [B, D]
        t_mod = self.mod_t(pe_t)  # [B, mod_dim]
        xy = torch.cat([self.pe(self.grid_y), self.pe(self.grid_x)], dim=-1)  # [N, 2*pe]
        tokens = self.spatial_block(self.stem_xy(xy)[None])  # [1, N, D]
        tokens = self.to_fc(self.fused_block(tokens * t_emb[:, None, :]))  # [B, N, fc_dim]
        x = tokens.transpose(1, 2).reshape(t.shape[0], c.fc_dim, c.fc_h, c.fc_w)
        for modulation, stage in zip(self.modulations, self.stages):
            gamma, beta = modulation(t_mod)[..., None, None].chunk(2, dim=1)
            x = stage(F.instance_norm(x) * gamma + beta)
        return torch.sigmoid(self.head(x))
