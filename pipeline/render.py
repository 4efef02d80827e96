"""Renders frames from a network: the decoder's job, and the encoder's final check."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import nn

from pipeline.errors import InputError
from pipeline.networks import frame_times


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present, otherwise the CPU."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] floats in [0,1] -> [B,H,W,3] uint8, rounding to nearest."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def iter_rendered(
    model: nn.Module,
    indices: Sequence[int],
    num_frames: int,
    height: int,
    width: int,
    batch_size: int = 8,
) -> Iterator[np.ndarray]:
    """Yields uint8 [B,H,W,3] batches for the given frame indices, cropped to the video size.

    Each frame depends only on its own index, so any subset renders on its own
    (random access): rendering frames 10..11 costs two frames, not eleven.
    """
    device = next(model.parameters()).device
    model.eval()
    with torch.inference_mode():
        for start in range(0, len(indices), batch_size):
            idx = torch.as_tensor(indices[start : start + batch_size], device=device)
            out = model(frame_times(idx, num_frames))[:, :, :height, :width]
            yield to_uint8(out.float()).cpu().numpy()


def render_frames(model: nn.Module, indices: Sequence[int], num_frames: int, height: int, width: int,
                  batch_size: int = 8) -> np.ndarray:
    """All the requested frames as one uint8 [N,H,W,3] array."""
    chunks = list(iter_rendered(model, indices, num_frames, height, width, batch_size))
    if not chunks:
        return np.zeros((0, height, width, 3), np.uint8)
    return np.concatenate(chunks)
