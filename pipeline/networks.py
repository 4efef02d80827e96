"""E-NeRV (ECCV 2022) and its baseline NeRV (NeurIPS 2021).

Both map a normalized frame index ``t`` in [0, 1] to an RGB frame in [0, 1].  The
layer structure and widths follow the papers' reference configurations, so that the
bunny presets have the published parameter counts; everything the networks need is
derived from a resolved :class:`pipeline.config.NetworkConfig`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.config import NetworkConfig


class PositionalEncoding(nn.Module):
    """``[sin(b^0 pi x), cos(b^0 pi x), ..., sin(b^(L-1) pi x), cos(b^(L-1) pi x)]``."""

    def __init__(self, base: float, levels: int):
        super().__init__()
        freqs = torch.tensor([base**i * math.pi for i in range(levels)], dtype=torch.float64)
        self.register_buffer("freqs", freqs.float(), persistent=False)
        self.dim = 2 * levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        angles = x.float()[..., None] * self.freqs  # [..., L]
        return torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # [..., 2L]


def mlp(dims: list[int]) -> nn.Sequential:
    """Linear layers, each followed by GELU (the last one too, as in both papers)."""
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-1], dims[1:]):
        layers += [nn.Linear(d_in, d_out), nn.GELU()]
    return nn.Sequential(*layers)


class Attention(nn.Module):
    """Multi-head self-attention with a bias-free QKV projection.

    As in the reference implementation, one head as wide as the block needs no output
    projection (``always_project`` keeps one anyway, as files of format version 1 have).
    """

    def __init__(self, dim: int, heads: int, head_dim: int, always_project: bool = False):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * heads * head_dim, bias=False)
        project = always_project or not (heads == 1 and head_dim == dim)
        self.out = nn.Linear(heads * head_dim, dim) if project else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v)  # scale 1/sqrt(head_dim)
        return self.out(y.transpose(1, 2).reshape(b, n, -1))


class TransformerBlock(nn.Module):
    """Post-residual transformer block without layer norms (E-NeRV's choice)."""

    def __init__(self, dim: int, heads: int, head_dim: int, mlp_dim: int, always_project: bool = False):
        super().__init__()
        self.attn = Attention(dim, heads, head_dim, always_project)
        self.ffn = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.ffn(x)


class UpConv(nn.Module):
    """3x3 convolution to ``c_out * s^2`` channels, then PixelShuffle by ``s``."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out * stride * stride, 3, padding=1)
        self.shuffle = nn.PixelShuffle(stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.conv(x))


class FirstUpBlock(nn.Module):
    """E-NeRV's first stage: the channel change and the up-sampling are split in two
    convolutions, so that a large stride on wide features stays affordable."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        if c_in <= c_out:
            self.body = nn.Sequential(UpConv(c_in, c_in // 4, stride), nn.Conv2d(c_in // 4, c_out, 3, padding=1))
        else:
            self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), UpConv(c_out, c_out, stride))
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x))


class UpBlock(nn.Module):
    """NeRV block: up-sampling convolution then GELU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.up = UpConv(c_in, c_out, stride)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.up(x))


def stage_widths(config: NetworkConfig) -> list[tuple[int, int]]:
    """(input, output) channels of each up-sampling stage."""
    widths = []
    c = config.fc_dim
    for i, stride in enumerate(config.strides):
        if i == 0:
            c_out = int(c * config.expansion)
        else:
            c_out = max(c // (1 if stride == 1 else config.reduction), config.lower_width)
        widths.append((c, c_out))
        c = c_out
    return widths


def _resolved(config: NetworkConfig) -> NetworkConfig:
    if not config.is_resolved:
        raise ValueError("the network config needs fc_h, fc_w and strides (see pipeline.geometry)")
    return config


class ENeRV(nn.Module):
    """E-NeRV: disentangled spatial (token grid) and temporal (frame index) context."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = c = _resolved(config)
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


class NeRV(nn.Module):
    """NeRV: an MLP from the encoded frame index to a feature map, then up-sampling."""

    def __init__(self, config: NetworkConfig):
        super().__init__()
        self.config = c = _resolved(config)
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


def stage_sizes(config: NetworkConfig) -> list[tuple[int, int]]:
    """(height, width) of the input of each stage, then of the head's input (the output size)."""
    h, w = config.fc_h, config.fc_w
    sizes = [(h, w)]
    for s in config.strides:
        h, w = h * s, w * s
        sizes.append((h, w))
    return sizes


def space_grid_stages(config: NetworkConfig) -> dict[int, int]:
    """Stage index -> channels of the static spatial grid added at that stage's input.

    A grid asked for at ``scale`` (times smaller than the output) goes to the finest stage input
    that is at least that many times smaller (never finer: a grid's size grows with the square
    of its resolution); the head's input (scale 1) counts as stage ``len(strides)``. Grids that
    land on the same stage add their channels.
    """
    factors = [math.prod(config.strides[i:]) for i in range(len(config.strides) + 1)]
    out: dict[int, int] = {}
    for scale, channels in zip(config.space_grid_scales, config.space_grid_channels):
        stage = max(i for i, f in enumerate(factors) if f >= scale or i == 0)
        out[stage] = out.get(stage, 0) + channels
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
        self.config = c = _resolved(config)
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

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``t``: [B] normalized frame indices -> [B, 3, H, W] frames in [0, 1]."""
        x = self.time_proj(self._time_features(t))
        t_mod = self.mod_t(self.pe(t))
        grids = {stage: (grid, proj) for (stage, _), grid, proj in zip(self.grid_stages, self.space_grids,
                                                                       self.space_projs)}
        for i, (modulation, stage) in enumerate(zip(self.modulations, self.stages)):
            gamma, beta = modulation(t_mod)[..., None, None].chunk(2, dim=1)
            x = F.instance_norm(x) * gamma + beta
            if i in grids:
                x = x + grids[i][1](grids[i][0])
            x = stage(x)
        if len(self.stages) in grids:
            grid, proj = grids[len(self.stages)]
            x = x + proj(grid)
        return torch.sigmoid(self.head(x))


def build_network(config: NetworkConfig) -> nn.Module:
    """The network a resolved config describes (same parameter order on both sides)."""
    return {"enerv": ENeRV, "nerv": NeRV, "enerv-grid": GridENeRV}[config.kind](config)


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
