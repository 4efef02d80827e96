"""The enerv-latent kind: its shapes, its context coding (bit-exact, from integer tables), its
training twin, the rate knob, and format version 3 (golden file, forged headers, fuzzing)."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from compress.rate import LatentRate
from compress.video import compress_frames
from decompress.decode import bitstream_info, decode_frames
from pipeline.bitstream import read_bitstream, write_bitstream
from pipeline.config import load_preset
from pipeline.errors import BitstreamError
from pipeline.geometry import resolve_network
from pipeline.kinds import network_kind
from pipeline.latent_coding import (
    _LAPLACE,
    LATENT_BOUND,
    RESIDUAL_BOUND,
    SCALES,
    LatentContext,
    decode_latents,
    encode_latents,
    latent_bits,
    table_bank,
)
from pipeline.latent_enerv import latent_index
from pipeline.metrics import psnr
from pipeline.networks import build_network
from tests.conftest import smooth_clip
from tests.test_robustness import _assert_refused, _decompress, _forge, _mutations, _set, weight_hashes

DATA = Path(__file__).parent / "data"
GOLDEN_V3 = DATA / "golden_v3.bin"
TINY = load_preset("test-tiny-latent")


def _latents(seed: int = 0, shape=(6, 2, 5, 7), repeat: float = 0.6) -> np.ndarray:
    """Laplace-like symbols in which a share ``repeat`` of each frame repeats the previous one."""
    rng = np.random.default_rng(seed)
    y = np.clip(np.round(rng.laplace(0, 2.0, shape)), -LATENT_BOUND, LATENT_BOUND).astype(np.int32)
    for t in range(1, shape[0]):
        keep = rng.random(shape[1:]) < repeat
        y[t][keep] = y[t - 1][keep]
    return y


# --- the tables ---------------------------------------------------------------------------------


def test_the_stored_integers_are_the_laplace_bins_they_say():
    """How the constants were made; from then on the decoder uses only the integers."""
    for k, (q0, q1, rho) in enumerate(_LAPLACE):
        b = 2.0 ** (k / 4 - 4)
        assert q0 == round((1 - math.exp(-0.5 / b)) * 2**30)
        assert q1 == round(0.5 * (math.exp(-0.5 / b) - math.exp(-1.5 / b)) * 2**30)
        assert rho == round(math.exp(-1 / b) * 2**30)


def test_the_table_bank_is_symmetric_peaked_and_never_zero():
    bank = table_bank()
    assert bank.shape == (SCALES, 2 * RESIDUAL_BOUND + 1)
    assert np.all(bank >= 1) and np.all(bank == np.rint(bank))
    np.testing.assert_array_equal(bank, bank[:, ::-1])
    assert np.all(np.diff(bank[:, RESIDUAL_BOUND:], axis=1) <= 0)  # non-increasing away from 0
    # Wider tables put less mass at zero.
    assert np.all(np.diff(bank[:, RESIDUAL_BOUND] / bank.sum(axis=1)) < 0)


# --- coding -------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
def test_latents_decode_to_the_symbols_coded(seed):
    rng = np.random.default_rng(100 + seed)
    y = _latents(seed, shape=(int(rng.integers(1, 6)), int(rng.integers(1, 4)), int(rng.integers(1, 7)),
                              int(rng.integers(1, 9))))
    context = LatentContext(tuple(int(v) for v in rng.integers(-80, 80, 4)),
                            tuple(int(v) for v in rng.integers(-40, 40, 4)), int(rng.integers(-500, 3000)))
    data = encode_latents(y, context)
    np.testing.assert_array_equal(decode_latents(data, y.shape, context), y)
    assert len(data) * 8 <= latent_bits(y, context) * 1.01 + 64  # the coder reaches the model


def test_bound_symbols_code_and_decode():
    y = np.full((2, 1, 3, 3), LATENT_BOUND, np.int32)
    y[1] = -LATENT_BOUND
    context = LatentContext((64, 0, 0, 0), (0, 0, 0, 0), 0)  # predicts the wrong sign: residual 2 x bound
    np.testing.assert_array_equal(decode_latents(encode_latents(y, context), y.shape, context), y)
    with pytest.raises(ValueError):
        encode_latents(y + 1, context)


def test_the_previous_latent_frame_as_context_saves_bits():
    y = _latents(1, shape=(12, 2, 8, 8), repeat=0.9)
    alone = LatentContext((0, 0, 0, 0), (0, 0, 0, 0), 64 * 18)
    previous = LatentContext((64, 0, 0, 0), (0, 0, 0, 0), 64 * 6)
    assert len(encode_latents(y, previous)) < 0.6 * len(encode_latents(y, alone))


def test_damaged_latent_payloads_are_refused_or_decode_to_something_bounded():
    y = _latents(2, shape=(3, 2, 4, 5))
    context = LatentContext((40, 10, 0, 0), (8, 8, 0, 0), 900)
    data = bytearray(encode_latents(y, context))
    rng = np.random.default_rng(7)
    for _ in range(30):
        damaged = bytearray(data)
        damaged[int(rng.integers(0, len(damaged)))] ^= 1 << int(rng.integers(0, 8))
        try:
            out = decode_latents(bytes(damaged), y.shape, context)
        except BitstreamError:
            continue
        assert out.shape == y.shape and int(np.abs(out).max()) <= LATENT_BOUND
    with pytest.raises(BitstreamError):
        decode_latents(bytes(data[:-1]), y.shape, context)


def test_context_parameters_round_to_the_stored_integers():
    context = LatentContext.of([0.5, -0.25, 0.0, 1.0], [0.1, 0.0, 0.0, 0.0], 12.3)
    assert context.mean_weights == (32, -16, 0, 64) and context.scale_weights == (6, 0, 0, 0)
    assert context.scale_bias == 787
    with pytest.raises(ValueError):
        LatentContext((1, 2, 3), (0, 0, 0, 0), 0)


def test_the_training_twin_estimates_what_the_coder_spends():
    y = _latents(3, shape=(8, 2, 6, 6))
    rate = LatentRate()
    with torch.no_grad():
        rate.mean_weights.copy_(torch.tensor([0.75, 0.1, 0.0, 0.0]))
        rate.scale_weights.copy_(torch.tensor([0.02, 0.02, 0.0, 0.0]))
        rate.scale_bias.copy_(torch.tensor(1.5))
    estimate = float(rate(torch.from_numpy(y).float()).sum().detach())
    coded = latent_bits(y, rate.context())
    assert abs(estimate - coded) < 0.08 * coded
    # The batch form of the estimate is the whole one's for the frames it is given.
    frames = torch.tensor([0, 5])
    u = torch.from_numpy(y).float()
    part = rate.batch_bits(u[frames], u[(frames - 1).clamp(min=0)], frames > 0).sum()
    whole = rate(u)
    assert float(part) == pytest.approx(float(whole[frames].sum()), rel=1e-5)


# --- the network --------------------------------------------------------------------------------


def test_enerv_latent_has_one_latent_frame_per_frame_at_its_stages():
    config = resolve_network(TINY.network, 48, 32, 8)
    assert config.latent_frames == 8 and config.time_grid_knots == (3,)
    model = build_network(config)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters() if name.startswith("latents.")}
    sizes = {(h, w) for _, _, h, w in shapes.values()}
    assert len(shapes) == 2 and all(s[0] == 8 for s in shapes.values())
    assert max(sizes) == (config.out_height // 2, config.out_width // 2)
    out = model(torch.tensor([0.0, 1.0]))
    assert out.shape == (2, 3, config.out_height, config.out_width)


def test_latent_frames_of_a_shorter_segment_are_distinct():
    t = torch.arange(5) / 4.0
    assert latent_index(t, 5).tolist() == [0, 1, 2, 3, 4]
    mapped = latent_index(t, 12).tolist()
    assert mapped[0] == 0 and mapped[-1] == 11 and len(set(mapped)) == 5


# --- encoding, rate and format version 3 --------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_encodes():
    torch.set_num_threads(1)
    frames = smooth_clip(8, 32, 48)
    out = {}
    for quality in (20, 80):
        preset = replace(TINY, codec=replace(TINY.codec, quality=quality))
        out[quality] = compress_frames(frames, 24.0, preset, progress=False)
    torch.set_num_threads(2)
    return frames, out


def test_enerv_latent_round_trip_is_a_version_4_file_the_decoder_renders(tiny_encodes):
    frames, encodes = tiny_encodes
    data, result = encodes[80]
    parsed = read_bitstream(data)
    assert parsed.version == 4
    info = bitstream_info(data)
    assert info["format_version"] == 4 and info["size_split"]["latents"] > 0
    assert "latent_frames" in info["network"] and "stem_dims" not in info["network"]  # the kind's fields only
    assert info["size_split"]["header"] < 64  # the fields that differ from the reference values
    decoded = decode_frames(data).frames
    assert decoded.shape == frames.shape
    assert psnr(decoded, frames) == pytest.approx(result.psnr, abs=1e-6)  # what the encoder measured
    assert result.psnr > 17  # learned: a flat grey clip scores 14.1 dB here


def test_the_rate_knob_moves_enerv_latent_files(tiny_encodes):
    _, encodes = tiny_encodes
    assert len(encodes[20][0]) < len(encodes[80][0])


def test_golden_v3_decodes_to_its_hashes_and_rewrites_to_its_bytes():
    """A two-segment enerv-latent file: its latents are decoded by the context model from the
    integers in the file alone, so these hashes hold on every machine."""
    golden = json.loads((DATA / "golden_v3.json").read_text())
    data = GOLDEN_V3.read_bytes()
    assert hashlib.sha256(data).hexdigest() == golden["file_sha256"]
    parsed = read_bitstream(data)
    assert parsed.version == 3 and [[s.span.first, s.span.count] for s in parsed.segments] == golden["segments"]
    for segment, expected in zip(parsed.segments, golden["weights_sha256"]):
        assert weight_hashes(parsed.shapes, segment.tensors) == expected
    assert any(int(np.abs(t.symbols).max()) > 0 for t in parsed.segments[0].tensors if t.context is not None)
    rewritten, _ = write_bitstream(parsed.header, [s.tensors for s in parsed.segments],
                                   [s.span for s in parsed.segments], version=3)
    assert rewritten == data


def _net(field: str, value=None, drop: bool = False):
    """An edit of the compact header's network list: the value of ``field`` (or the field dropped)."""
    def edit(meta):
        at = 1 + network_kind("enerv-latent").fields.index(field)
        if drop:
            del meta["n"][at]
        else:
            meta["n"][at] = value

    return edit


IMPOSSIBLE_V3 = {
    "latent frames missing": _net("latent_frames", drop=True),
    "latent frames zero": _net("latent_frames", 0),
    "latent scales and channels differ": _net("latent_channels", [1]),
    "more latent channels": _net("latent_channels", [3, 1]),
    "latent channels are text": _net("latent_channels", "two"),
    "a weights-only kind": lambda meta: meta["n"].__setitem__(0, "enerv-grid"),
    "named network": lambda meta: meta.__setitem__("network", {"kind": "enerv-latent"}),
    "video not a list": _set(None, "v", {"width": 48}),
    "no segment table": lambda meta: meta.pop("s"),
    "estimate is text": _set(None, "r", "lots"),
}


@pytest.mark.parametrize("case", sorted(IMPOSSIBLE_V3))
def test_v3_valid_checksum_with_impossible_header_is_refused(capsys, tmp_path, case):
    path = tmp_path / "forged.bin"
    path.write_bytes(_forge(IMPOSSIBLE_V3[case], GOLDEN_V3))
    out = tmp_path / "out.mkv"
    code, err, elapsed = _decompress(capsys, path, out)
    _assert_refused(code, err, out, case)


def test_fuzzed_version_3_files_are_all_refused(capsys, tmp_path):
    data = GOLDEN_V3.read_bytes()
    rng = np.random.default_rng(20261201)
    out = tmp_path / "out.mkv"
    tried = 0
    for name, mutated in _mutations(data, rng, 300):
        if mutated == data:
            continue
        path = tmp_path / "case.bin"
        path.write_bytes(mutated)
        code, err, _ = _decompress(capsys, path, out)
        _assert_refused(code, err, out, name)
        tried += 1
    assert tried >= 300
