"""The decoder: ``.bin`` in, frames out.  Needs no training code and no config file."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.bitstream import ParsedStream, read_bitstream
from pipeline.entropy import empirical_entropy_bits
from pipeline.errors import BitstreamError, InputError
from pipeline.networks import build_network
from pipeline.quantization import dequantize
from pipeline.render import render_frames

MAX_FILE_BYTES = 1 << 31


def read_file_bytes(path: str | Path) -> bytes:
    """The bytes of a bitstream file, with clear errors for unusable paths."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path} is a directory, not a bitstream file")
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise BitstreamError(f"{path} is too large to be a bitstream of this format")
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None


def load_network(parsed: ParsedStream, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Builds the network the header describes and loads the decoded weights."""
    model = build_network(parsed.header.network)
    with torch.no_grad():
        for param, tensor in zip(model.parameters(), parsed.tensors):
            param.copy_(torch.from_numpy(dequantize(tensor.symbols, tensor.params)))
    return model.to(device).eval()


def resolve_range(frame_range: tuple[int, int | None] | None, num_frames: int) -> range:
    """Frame indices of a requested ``A:B`` range, refused when outside the video."""
    if frame_range is None:
        return range(num_frames)
    start, end = frame_range
    end = num_frames if end is None else end
    if not 0 <= start < end <= num_frames:
        raise InputError(f"frame range {start}:{end} is outside the video's {num_frames} frames")
    return range(start, end)


@dataclass
class DecodedVideo:
    frames: np.ndarray  # uint8 [N,H,W,3]
    indices: range
    fps: float
    seconds: float  # rendering time


def decode_frames(data: bytes, frame_range=None, device: str | torch.device = "cpu",
                  threads: int | None = None) -> DecodedVideo:
    """Decodes the bitstream bytes and renders the requested frames."""
    parsed = read_bitstream(data)
    h = parsed.header
    indices = resolve_range(frame_range, h.num_frames)
    model = load_network(parsed, device)
    start = time.perf_counter()
    frames = render_frames(model, indices, h.num_frames, h.height, h.width, threads)
    return DecodedVideo(frames, indices, h.fps, time.perf_counter() - start)


def bitstream_info(data: bytes) -> dict:
    """The header and the byte split of a file, as a JSON-ready dict (no rendering)."""
    parsed = read_bitstream(data)
    split = parsed.split
    info = parsed.header.to_json()
    info["format_version"] = 1
    info["bytes"] = len(data)
    info["bpp"] = 8.0 * len(data) / (parsed.header.width * parsed.header.height * parsed.header.num_frames)
    info["parameters"] = int(sum(t.symbols.size for t in parsed.tensors))
    info["size_split"] = {"header": split.header, "side_info": split.side_info, "masks": split.masks,
                          "payload": split.payload}
    info["tensors"] = []
    for record, tensor in zip(split.per_tensor, parsed.tensors):
        values = tensor.symbols[tensor.mask] if tensor.mask is not None else tensor.symbols
        record = dict(record, entropy_bytes=round(empirical_entropy_bits(values) / 8, 1))
        info["tensors"].append(record)
    return info
