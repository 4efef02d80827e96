"""Building blocks that the networks share: positional encoding, MLPs, attention, up-sampling stages.

Every block is derived from a resolved :class:`pipeline.config.NetworkConfig`'s fields; the networks
themselves live in one file per kind (:mod:`pipeline.kinds` lists them).
"""

from __future__ import annotations

import math

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


def stage_sizes(config: NetworkConfig) -> list[tuple[int, int]]:
    """(height, width) of the input of each stage, then of the head's input (the output size)."""
    h, w = config.fc_h, config.fc_w
    sizes = [(h, w)]
    for s in config.strides:
        h, w = h * s, w * s
        sizes.append((h, w))
    return sizes
