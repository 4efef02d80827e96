"""Writes the golden files of format version 4 and the SHA-256 of every decoded tensor:

- ``golden_v4.bin``: a two-segment enerv-ctx file from the encoder (context-coded latents and
  grids, pruned weights);
- ``golden_v4_models.bin``: an enerv-grid network of seeded symbols chosen so that every kind of
  weight model occurs (constant, stored counts, bank tables with and without raw low bits), with
  masks (some, none and all entries kept) and steps per channel, in three segments.

Run once as ``python -m tests.data.make_golden_v4`` when format version 4 was made; the tests
decode the committed files, they never run this.
"""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from compress.video import compress_frames
from pipeline.bitstream import (
    CodedTensor,
    SegmentSpan,
    StreamHeader,
    read_bitstream,
    transmitted_shapes,
    write_bitstream,
)
from pipeline.config import NetworkConfig, load_preset
from pipeline.geometry import resolve_network
from pipeline.quantization import MAX_SYMBOL, QuantParams, dequantize
from tests.conftest import smooth_clip

OUT = Path(__file__).parent


def model_test_segment(network: NetworkConfig, seed: int) -> list[CodedTensor]:
    """Seeded symbols for every tensor, cycling through the shapes of distribution each model kind serves."""
    rng = np.random.default_rng(seed)
    coded = []
    for i, (_, shape) in enumerate(transmitted_shapes(network)):
        pattern = i % 6
        if pattern == 0:  # one value: a constant
            symbols = np.full(shape, int(rng.integers(-5, 6)), np.int32)
        elif pattern == 1:  # two far-apart values: stored counts beat any table
            symbols = rng.choice(np.array([-40, 37], np.int32), size=shape)
        elif pattern == 2:  # narrow Laplace: a table
            symbols = np.round(rng.laplace(0, 1.5, shape)).astype(np.int32)
        elif pattern == 3:  # wide Laplace: a table with raw low bits
            symbols = np.clip(np.round(rng.laplace(0, 900, shape)), -MAX_SYMBOL, MAX_SYMBOL).astype(np.int32)
        else:  # a Laplace that only a pruning mask thins
            symbols = np.round(rng.laplace(0, 4, shape)).astype(np.int32)
        mask = None
        if pattern >= 4 and len(shape) > 1:
            keep = [0.6, 0.0, 1.0][(i // 6) % 3]  # some, none, all kept
            mask = rng.random(shape) < keep
            symbols = np.where(mask, symbols, 0).astype(np.int32)
        channels = shape[0] if pattern == 2 and len(shape) > 1 and shape[0] > 1 else 1
        steps = (0.001 * (1 + rng.random(channels))).astype(np.float16)
        coded.append(CodedTensor(QuantParams(steps), symbols, mask))
    return coded


def weight_hashes(parsed) -> list[dict[str, str]]:
    return [{name: hashlib.sha256(np.ascontiguousarray(dequantize(t.symbols, t.params).astype("<f4")).tobytes())
             .hexdigest() for (name, _), t in zip(parsed.shapes, s.tensors)} for s in parsed.segments]


def record(name: str, data: bytes) -> None:
    parsed = read_bitstream(data)
    (OUT / f"{name}.bin").write_bytes(data)
    out = {"file_sha256": hashlib.sha256(data).hexdigest(),
           "segments": [[s.span.first, s.span.count] for s in parsed.segments],
           "models": sorted({t["model"] for t in parsed.split.per_tensor}),
           "weights_sha256": weight_hashes(parsed)}
    (OUT / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n")
    print(name, len(data), "bytes;", parsed.split, "\n models:", out["models"])


def main() -> None:
    torch.set_num_threads(1)
    preset = load_preset("test-tiny-latent")
    preset = replace(preset, network=replace(preset.network, kind="enerv-ctx"),
                     codec=replace(preset.codec, quality=100, prune_ratio=0.3, rate_from_start="none"))
    data, _ = compress_frames(smooth_clip(8, 32, 48), 24.0, preset, progress=False, segment_frames=4)
    record("golden_v4", data)

    network = resolve_network(replace(load_preset("test-tiny").network, kind="enerv-grid"), 48, 32, 9)
    header = StreamHeader(network, 48, 32, 9, 30000 / 1001, "golden v4 models", 1234.5)
    spans = [SegmentSpan(0, 4), SegmentSpan(4, 3), SegmentSpan(7, 2)]
    data, _ = write_bitstream(header, [model_test_segment(network, seed) for seed in range(3)], spans)
    record("golden_v4_models", data)


if __name__ == "__main__":
    main()
