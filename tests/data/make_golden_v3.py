"""Writes tests/data/golden_v3.bin and golden_v3.json: a two-segment enerv-latent file and the
SHA-256 of every decoded tensor. Run once as ``python -m tests.data.make_golden_v3`` when format version 3 was
made; the test decodes the committed file, it never runs this."""

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from compress.video import compress_frames
from pipeline.bitstream import read_bitstream
from pipeline.config import load_preset
from pipeline.quantization import dequantize
from tests.conftest import smooth_clip

torch.set_num_threads(1)
out = Path(__file__).parent
preset = load_preset("test-tiny-latent")
preset = replace(preset, codec=replace(preset.codec, quality=100))  # latents far from zero
data, _ = compress_frames(smooth_clip(8, 32, 48), 24.0, preset, progress=False, segment_frames=4)
parsed = read_bitstream(data)
(out / "golden_v3.bin").write_bytes(data)
record = {
    "file_sha256": hashlib.sha256(data).hexdigest(),
    "segments": [[s.span.first, s.span.count] for s in parsed.segments],
    "weights_sha256": [{name: hashlib.sha256(np.ascontiguousarray(dequantize(t.symbols, t.params).astype("<f4"))
                                             .tobytes()).hexdigest()
                        for (name, _), t in zip(parsed.shapes, s.tensors)} for s in parsed.segments],
}
(out / "golden_v3.json").write_text(json.dumps(record, indent=1) + "\n")
print(len(data), "bytes; largest latent symbols:",
      [int(np.abs(t.symbols).max()) for s in parsed.segments for t in s.tensors if t.context is not None])
