"""The decoder: ``.bin`` in, frames out.  Needs no training code and no config file."""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from decompress.frame_source import FrameSource, load_network  # noqa: F401 - load_network: public here too
from pipeline.bitstream import ParsedStream, read_bitstream, read_header
from pipeline.entropy import SymbolModel, empirical_entropy_bits
from pipeline.errors import BitstreamError, InputError
from pipeline.metrics import bits_per_pixel
from pipeline.segment_coding import MODEL_COUNTS, WeightModel
from pipeline.video_writer import VideoWriter

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


@dataclass(frozen=True)
class DecodeSummary:
    """What a streaming decode wrote."""

    output: str  # the path, or "-" for standard output
    indices: range
    width: int
    height: int
    fps: float
    device: str
    seconds: float  # rendering and writing, from the first frame to the finished output

    @property
    def frames(self) -> int:
        return len(self.indices)


def _parse_for(data: bytes, frame_range) -> tuple[ParsedStream, range]:
    """The file parsed, with only the segments that render the requested frames entropy-decoded."""
    indices = resolve_range(frame_range, read_header(data).num_frames)
    return read_bitstream(data, frames=range(indices.start, indices.stop)), indices


def decode_frames(data: bytes, frame_range=None, device: str | torch.device = "cpu",
                  threads: int | None = None) -> DecodedVideo:
    """Decodes the bitstream bytes and renders the requested frames into one array.

    Meant for measuring and testing; :func:`decode_to_video` streams them instead.
    """
    parsed, indices = _parse_for(data, frame_range)
    h = parsed.header
    source = FrameSource.from_parsed(parsed, device, threads)
    out = np.empty((len(indices), h.height, h.width, 3), np.uint8)
    start = time.perf_counter()
    with contextlib.closing(source.frames(indices)) as frames:
        for i, frame in enumerate(frames):
            out[i] = frame
    return DecodedVideo(out, indices, h.fps, time.perf_counter() - start)


def decode_to_video(data: bytes, output: str | Path, frame_range=None, device: str | torch.device = "cpu",
                    threads: int | None = None) -> DecodeSummary:
    """Decodes the bitstream bytes and writes the requested frames to ``output`` as they are rendered.

    ``output`` is anything :class:`pipeline.video_io.VideoWriter` takes, ``-`` for a Y4M
    stream on standard output. Memory does not grow with the number of frames; a file is
    put in place only once complete.
    """
    parsed, indices = _parse_for(data, frame_range)
    h = parsed.header
    source = FrameSource.from_parsed(parsed, device, threads)
    start = time.perf_counter()
    first = indices[0] if len(indices) else 0  # a PNG sequence keeps the source's frame numbers
    with (VideoWriter(output, h.width, h.height, h.fps, first_number=first) as writer,
          contextlib.closing(source.frames(indices)) as frames):
        for frame in frames:
            writer.write(frame)
    return DecodeSummary(str(output), indices, h.width, h.height, h.fps, source.device.type,
                         time.perf_counter() - start)


def info_json(info: dict) -> str:
    """``--info``'s JSON, laid out for reading: one line per top-level key (its value on that line)
    and one line per tensor."""
    items = list(info.items())
    lines = []
    for i, (key, value) in enumerate(items):
        end = "," if i < len(items) - 1 else ""
        if key == "tensors" and value:
            inner = ",\n".join("    " + json.dumps(t) for t in value)
            lines.append(f"  {json.dumps(key)}: [\n{inner}\n  ]{end}")
        else:
            lines.append(f"  {json.dumps(key)}: {json.dumps(value)}{end}")
    return "{\n" + "\n".join(lines) + "\n}"


def bitstream_info(data: bytes) -> dict:
    """The header and the byte split of a file, as a JSON-ready dict (no rendering)."""
    parsed = read_bitstream(data)
    split = parsed.split
    h = parsed.header
    info = h.to_json(parsed.version)
    info["format_version"] = parsed.version
    info["bytes"] = len(data)
    info["bpp"] = round(bits_per_pixel(len(data), h.width, h.height, h.num_frames), 5)
    info["duration_seconds"] = round(h.num_frames / h.fps, 3)
    info["segments"] = [[s.span.first, s.span.count] for s in parsed.segments]
    tensors = [t for s in parsed.segments for t in s.tensors]
    info["parameters"] = int(sum(t.symbols.size for t in tensors))
    info["size_split"] = {"header": split.header, "side_info": split.side_info, "masks": split.masks,
                          "payload": split.payload, "latents": split.latents}
    info["side_info_parts"] = dict(split.side_parts)
    if h.estimated_weight_bytes is not None:
        coded = split.payload + split.masks + split.latents
        info["rate_estimate"] = {"estimated_weight_bytes": h.estimated_weight_bytes, "coded_weight_bytes": coded,
                                 "coded_vs_estimate": round(coded / h.estimated_weight_bytes - 1, 4)
                                 if h.estimated_weight_bytes > 0 else None}
    info["tensors"] = []
    for record, tensor in zip(split.per_tensor, tensors):
        values = tensor.symbols[tensor.mask] if tensor.mask is not None else tensor.symbols
        record = dict(record, entropy_bytes=round(empirical_entropy_bits(values) / 8, 1))
        if "model_bytes" in record and tensor.context is None:  # version 4: what its own counts would take
            record["counts_bytes"] = WeightModel(MODEL_COUNTS, counts=SymbolModel.from_symbols(values)).size
        info["tensors"].append(record)
    return info
