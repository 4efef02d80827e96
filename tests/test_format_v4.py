"""Format version 4: golden files, round trips of every kind (weights, masks, latents, segments,
random access), the binary header, and files built by hand from the documented layout, valid
and hostile."""

from __future__ import annotations

import hashlib
import json
import math
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import constriction
import numpy as np
import pytest

import cli
from decompress.decode import bitstream_info, decode_frames
from pipeline import binary_header
from pipeline.bitstream import (
    MAGIC,
    CodedTensor,
    SegmentSpan,
    StreamHeader,
    read_bitstream,
    read_header,
    transmitted_shapes,
    write_bitstream,
)
from pipeline.byteio import ByteWriter
from pipeline.config import NetworkConfig, load_preset
from pipeline.errors import BitstreamError
from pipeline.geometry import resolve_network
from pipeline.kinds import network_kind
from pipeline.latent_coding import LATENT_BOUND, LatentContext, encode_latent_diagonals
from pipeline.quantization import MAX_SYMBOL, QuantParams
from pipeline.segment_coding import MAX_MODEL_CODE
from pipeline.video_io import read_video
from tests.data.make_golden_v4 import model_test_segment
from tests.test_robustness import _assert_refused, _decompress, weight_hashes

DATA = Path(__file__).parent / "data"
GOLDEN_V4 = DATA / "golden_v4.bin"
GOLDEN_V4_MODELS = DATA / "golden_v4_models.bin"
STEP = np.float16(0.01).tobytes()


def _network(kind: str, frames: int = 8) -> NetworkConfig:
    base = load_preset("test-tiny-latent" if kind.startswith("enerv-") else "test-tiny").network
    return resolve_network(replace(base, kind=kind), 48, 32, frames)


def _coded(network: NetworkConfig, seed: int, prune: bool = True) -> list[CodedTensor]:
    """Seeded symbols for every tensor: the golden generator's for weights, Laplace latents with a
    context model for latent grids."""
    kind = network_kind(network.kind)
    rng = np.random.default_rng(seed)
    coded = []
    for (name, shape), t in zip(transmitted_shapes(network), model_test_segment(network, seed)):
        if kind.is_latent(name):
            y = np.clip(np.round(rng.laplace(0, 3, shape)), -LATENT_BOUND, LATENT_BOUND).astype(np.int32)
            t = CodedTensor(QuantParams(np.array([0.02], np.float16)), y, None, LatentContext((40, 10, -5, 3),
                                                                                              (20, 8, 4, 4), 90))
        elif not prune and t.mask is not None:
            t = CodedTensor(t.params, t.symbols, None)
        coded.append(t)
    return coded


def _assert_same(ours: list[CodedTensor], theirs: list[CodedTensor]) -> None:
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_array_equal(a.symbols, b.symbols)
        np.testing.assert_array_equal(a.params.scales, b.params.scales)
        assert (a.mask is None) == (b.mask is None) and a.context == b.context
        if a.mask is not None:
            np.testing.assert_array_equal(a.mask, b.mask)


# --- golden files -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", [GOLDEN_V4, GOLDEN_V4_MODELS], ids=lambda p: p.stem)
def test_golden_v4_decodes_to_its_hashes_and_rewrites_to_its_bytes(path):
    """The weights come from integers in the file alone (counts, bank tables, context models),
    so these hashes hold on every machine; the writer of today gives the same bytes."""
    golden = json.loads(path.with_suffix(".json").read_text())
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == golden["file_sha256"]
    parsed = read_bitstream(data)
    assert parsed.version == 4 and [[s.span.first, s.span.count] for s in parsed.segments] == golden["segments"]
    for segment, expected in zip(parsed.segments, golden["weights_sha256"], strict=True):
        assert weight_hashes(parsed.shapes, segment.tensors) == expected
    assert sorted({t["model"] for t in parsed.split.per_tensor}) == golden["models"]
    rewritten, _ = write_bitstream(parsed.header, [s.tensors for s in parsed.segments],
                                   [s.span for s in parsed.segments])
    assert rewritten == data


def test_the_golden_files_hold_every_kind_of_model_masks_and_latents():
    models = {m.split(" ")[0] for p in (GOLDEN_V4, GOLDEN_V4_MODELS)
              for m in json.loads(p.with_suffix(".json").read_text())["models"]}
    assert models == {"constant", "counts", "table", "context"}
    assert any("low bits" in m for m in json.loads(GOLDEN_V4_MODELS.with_suffix(".json").read_text())["models"])
    for path in (GOLDEN_V4, GOLDEN_V4_MODELS):
        assert read_bitstream(path.read_bytes()).split.masks > 0
    header = read_header(GOLDEN_V4_MODELS.read_bytes())
    assert header.fps == 30000 / 1001 and header.estimated_weight_bytes == 1234.5
    assert header.encoder == "golden v4 models"


def test_golden_v4_decodes_only_the_segments_asked_for(tmp_path):
    data = GOLDEN_V4.read_bytes()
    partial = read_bitstream(data, frames=range(5, 7))
    assert partial.segments[0].tensors is None and partial.segments[1].tensors is not None
    assert partial.split.total == len(data)
    whole = decode_frames(data).frames
    np.testing.assert_array_equal(decode_frames(data, (5, 7)).frames, whole[5:7])
    path = tmp_path / "golden_v4.bin"
    path.write_bytes(data)
    assert cli.decompress_main([str(path), "-o", str(tmp_path / "part.mkv"), "--frames", "3:6"]) == 0
    np.testing.assert_array_equal(read_video(tmp_path / "part.mkv").frames, whole[3:6])


# --- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["enerv", "nerv", "enerv-grid", "enerv-latent", "enerv-ctx"])
@pytest.mark.parametrize("prune", [False, True], ids=["weights", "masks"])
def test_every_kind_round_trips_bit_exactly_in_version_4(kind, prune):
    network = _network(kind)
    header = StreamHeader(network, 48, 32, 8, 24.0, "tests")
    coded = _coded(network, 1, prune)
    data, split = write_bitstream(header, coded)
    parsed = read_bitstream(data)
    assert parsed.version == 4 and parsed.header == header
    _assert_same(coded, parsed.tensors)
    assert split.total == len(data) == parsed.split.total
    for name in ("header", "side_info", "masks", "payload", "latents", "side_parts"):
        assert getattr(split, name) == getattr(parsed.split, name), name
    assert (split.masks > 0) == prune
    assert (split.latents > 0) == (network_kind(kind).latent_prefix is not None)
    info = bitstream_info(data)
    assert info["format_version"] == 4 and sum(info["size_split"].values()) == len(data)
    assert sum(info["side_info_parts"].values()) == info["size_split"]["side_info"]


def test_several_segments_round_trip_and_decode_only_what_is_asked():
    network = _network("enerv-ctx", 4)
    header = StreamHeader(network, 48, 32, 10, 24.0, "tests")
    spans = [SegmentSpan(0, 4), SegmentSpan(4, 4), SegmentSpan(8, 2)]
    coded = [_coded(network, seed) for seed in (3, 4, 5)]
    data, split = write_bitstream(header, coded, spans)
    parsed = read_bitstream(data)
    assert [s.span for s in parsed.segments] == spans
    for ours, segment in zip(coded, parsed.segments):
        _assert_same(ours, segment.tensors)
    partial = read_bitstream(data, frames=range(5, 8))
    assert [s.tensors is not None for s in partial.segments] == [False, True, False]
    _assert_same(coded[1], partial.segments[1].tensors)
    assert split.side_parts["framing"] == 4 + 2 + 4 + sum(len(_varints(n)) for n in _segment_lengths(data))


def _varints(*values: int) -> bytes:
    w = ByteWriter()
    for v in values:
        w.varint(v)
    return w.getvalue()


def _segment_lengths(data: bytes) -> list[int]:
    """The lengths of a version-4 file's segments, read from the documented layout."""
    r = binary_header.ByteReader(memoryview(data)[6:-4], "file")
    _, spans = binary_header.read_header(r)
    lengths = []
    for _ in spans:
        lengths.append(r.varint(r.remaining))
        r.raw(lengths[-1])
    assert r.remaining == 0
    return lengths


def test_a_segment_of_constants_is_its_records_alone():
    network = _network("nerv")
    coded = [CodedTensor(QuantParams(np.array([0.5], np.float16)), np.full(s, 3, np.int32))
             for _, s in transmitted_shapes(network)]
    data, split = write_bitstream(StreamHeader(network, 48, 32, 8, 24.0, ""), coded)
    assert split.payload == split.masks == split.latents == 0
    # flags | per tensor: step, model code 0, signed varint 3
    assert _segment_lengths(data) == [1 + len(coded) * (2 + 1 + 1)]
    _assert_same(coded, read_bitstream(data).tensors)


def test_versions_2_and_3_are_still_written_on_request():
    for kind, version in (("enerv-grid", 2), ("enerv-latent", 3)):
        network = _network(kind)
        header = StreamHeader(network, 48, 32, 8, 24.0, "tests")
        coded = _coded(network, 2)
        data, _ = write_bitstream(header, coded, version=version)
        parsed = read_bitstream(data)
        assert parsed.version == version
        _assert_same(coded, parsed.tensors)
        with pytest.raises(ValueError):
            write_bitstream(header, coded, version=5 - version)  # the other kind's version
    with pytest.raises(ValueError):
        write_bitstream(header, coded, version=1)


# --- the binary header ----------------------------------------------------------------------------


def test_the_header_stores_only_what_differs_and_reads_back_every_field():
    network = resolve_network(load_preset("enerv-latent-xs").network, 320, 180, 48)
    header = StreamHeader(network, 320, 180, 48, 24.0, "enerv-codec 0.1.0", 5628.7)
    w = ByteWriter()
    binary_header.write_header(w, header, [SegmentSpan(0, 48)])
    assert w.size <= 64  # 240 bytes of envelope, compact JSON and records in version 3
    odd = replace(network, pe_base=1.5, expansion=2.5, single_head_projection=True, stem_dims=(7, 9), heads=3,
                  grid_tokens=200, reduction=3)
    header = StreamHeader(odd, 300, 170, 48, 30000 / 1001, "codec \u00e9\u00e8 2", None)
    spans = [SegmentSpan(0, 5), SegmentSpan(5, 40), SegmentSpan(45, 3)]
    w = ByteWriter()
    binary_header.write_header(w, header, spans)
    r = binary_header.ByteReader(w.getvalue(), "header")
    assert binary_header.read_header(r) == (header, spans) and r.remaining == 0


def test_the_reference_values_are_the_format_not_the_config_defaults():
    """A later change of a default must not change what an existing file means."""
    assert len(binary_header.NETWORK_FIELDS) == len(binary_header.REFERENCE) == 26
    assert binary_header.KIND_CODES == ("enerv", "nerv", "enerv-grid", "enerv-latent", "enerv-ctx")
    assert binary_header.REFERENCE["fc_dim"] == 196 and binary_header.REFERENCE["strides"] is None


# --- files built by hand, valid and hostile ---------------------------------------------------------

NERV = _network("nerv")
LATENT = _network("enerv-latent")
FIRST_MATRIX = next(i for i, (_, s) in enumerate(transmitted_shapes(NERV)) if len(s) > 1)
NUMEL = math.prod(transmitted_shapes(NERV)[FIRST_MATRIX][1])
N_WEIGHTS = len(transmitted_shapes(NERV))
ZERO_CONTEXT = LatentContext((0,) * 4, (0,) * 4, 0)


def _reseal(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def _fields(network: NetworkConfig = NERV, **values) -> bytes:
    """The network part of a header: field bits, then the values that differ (``values`` overrides
    the network's, unchecked)."""
    differ = []
    for i, (name, form) in enumerate(binary_header.NETWORK_FIELDS):
        value = values.get(name, getattr(network, name))
        if value != binary_header.REFERENCE[name]:
            differ.append((i, form, value))
    w = ByteWriter()
    w.varint(sum(1 << i for i, _, _ in differ))
    for _, form, value in differ:
        binary_header._write_value(w, form, value)
    return w.getvalue()


def _header(network: NetworkConfig = NERV, width: int = 48, height: int = 32, frames: int = 8, **raw: bytes) -> bytes:
    """A version-4 header by the documented layout; ``raw`` gives the bytes of any of its parts."""
    parts = {
        "kind": _varints(binary_header.KIND_CODES.index(network.kind)), "fields": _fields(network),
        "width": _varints(width), "height": _varints(height), "frames": _varints(frames),
        "fps": _varints(48), "encoder": b"\x00", "estimate": b"\x00", "segments": b"\x01",
    }
    parts.update(raw)
    return b"".join(parts.values())


def _segment(record=None, flags: bytes = b"\x00", stream: bytes = b"", network: NetworkConfig = NERV,
             context: bytes = b"\x00" * 9) -> bytes:
    """A segment by the documented layout: every weight the constant 0 unless ``record(i)`` gives its
    record; every latent grid ``context`` (9 signed varints, all 0 by default)."""
    kind = network_kind(network.kind)
    out = bytearray(flags)
    for i, (name, _) in enumerate(transmitted_shapes(network)):
        given = record(i) if record is not None else None
        out += STEP + (context if kind.is_latent(name) else b"\x00\x00") if given is None else given
    return bytes(out) + stream


def _file(header: bytes | None = None, segments: list[bytes] | None = None, tail: bytes = b"") -> bytes:
    body = bytearray(MAGIC + struct.pack("<H", 4))
    body += _header() if header is None else header
    for segment in [_segment()] if segments is None else segments:
        body += _varints(len(segment)) + segment
    return _reseal(bytes(body) + tail)


def _at_matrix(record: bytes):
    return lambda i: record if i == FIRST_MATRIX else None


def _bitset(*on: int) -> bytes:
    return sum(1 << i for i in on).to_bytes(-(-N_WEIGHTS // 8), "little")


def _zero_latents() -> bytes:
    """The stream of the LATENT network's latent grids, all zeros under a zero context."""
    encoder = constriction.stream.queue.RangeEncoder()
    kind = network_kind(LATENT.kind)
    for name, shape in transmitted_shapes(LATENT):
        if kind.is_latent(name):
            encode_latent_diagonals(np.zeros(shape, np.int32), ZERO_CONTEXT, encoder)
    return encoder.get_compressed().astype("<u4").tobytes()


def test_files_built_from_the_documented_layout_decode():
    parsed = read_bitstream(_file())
    assert parsed.header.network == NERV and parsed.version == 4
    assert all(not t.symbols.any() and t.params.scales[0] == np.float16(0.01) for t in parsed.tensors)
    pruned_none = _segment(_at_matrix(STEP + _varints(0, 0, 0)), flags=b"\x01" + _bitset(FIRST_MATRIX))
    tensor = read_bitstream(_file(segments=[pruned_none])).tensors[FIRST_MATRIX]
    assert tensor.mask is not None and not tensor.mask.any()
    pruned_all = _segment(_at_matrix(STEP + _varints(NUMEL, 0, 0)), flags=b"\x01" + _bitset(FIRST_MATRIX))
    assert read_bitstream(_file(segments=[pruned_all])).tensors[FIRST_MATRIX].mask.all()
    two = _file(header=_header(segments=_varints(2, 3)), segments=[_segment(), _segment()])
    assert [s.span for s in read_bitstream(two).segments] == [SegmentSpan(0, 3), SegmentSpan(3, 5)]
    # latent grids: their symbols in the one stream, in parameter order
    latent = _file(_header(LATENT), [_segment(network=LATENT, stream=_zero_latents())])
    parsed = read_bitstream(latent)
    assert all(t.context == (ZERO_CONTEXT if t.context is not None else None) and not t.symbols.any()
               for t in parsed.tensors)
    assert sum(t.context is not None for t in parsed.tensors) == 2


HOSTILE = {
    # the header
    "unknown kind": _file(_header(kind=b"\x05")),
    "field bits beyond the fields": _file(_header(fields=_varints(1 << 26))),
    "no strides (unresolved network)": _file(_header(fields=_fields(strides=None))),
    "zero channels": _file(_header(fields=_fields(fc_dim=0))),
    "enormous channels": _file(_header(fields=_fields(fc_dim=60_000))),
    "hundreds of strides": _file(_header(fields=_fields(strides=(2,) * 300))),
    "strides the network cannot take": _file(_header(fields=_fields(strides=(17,)))),
    "zero width": _file(_header(width=0)),
    "video larger than the network": _file(_header(width=10_000)),
    "zero frames": _file(_header(frames=0)),
    "frames beyond the format": _file(_header(frames=1 << 25)),
    "fps is NaN": _file(_header(fps=b"\x01" + struct.pack("<d", math.nan))),
    "fps is negative": _file(_header(fps=b"\x01" + struct.pack("<d", -24.0))),
    "fps badly formed": _file(_header(fps=b"\x03")),
    "encoder not text": _file(_header(encoder=b"\x02\xff\xfe")),
    "encoder too long": _file(_header(encoder=_varints(300) + b"a" * 300)),
    "estimate beyond the format": _file(_header(estimate=_varints(1 << 50))),
    "no segments": _file(_header(segments=b"\x00"), segments=[]),
    "more segments than frames": _file(_header(segments=_varints(9) + b"\x01" * 8), [_segment()] * 9),
    "segments beyond the video": _file(_header(segments=_varints(2, 9)), [_segment()] * 2),
    "a segment of no frames": _file(_header(segments=_varints(2, 0)), [_segment()] * 2),
    "file ends in the header": _reseal(MAGIC + struct.pack("<H", 4) + _header()[:5]),
    # segments
    "one segment missing": _file(_header(segments=_varints(2, 4)), [_segment()]),
    "segment longer than the file": _reseal(MAGIC + struct.pack("<H", 4) + _header() + _varints(10**6) + _segment()),
    "bytes after the last segment": _file(tail=b"\x00\x00\x00\x00"),
    "records cut short": _file(segments=[_segment()[:-3]]),
    # records
    "unknown flags": _file(segments=[_segment(flags=b"\x04")]),
    "pruned flag without a pruned tensor": _file(segments=[_segment(flags=b"\x01" + _bitset())]),
    "per-channel flag without such a tensor": _file(segments=[_segment(
        _at_matrix(STEP + _varints(NUMEL, 0, 0)), flags=b"\x03" + _bitset(FIRST_MATRIX) + _bitset())]),
    "bit set beyond the last weight": _file(segments=[_segment(flags=b"\x01" + _bitset(N_WEIGHTS))]),
    "step is NaN": _file(segments=[_segment(_at_matrix(np.float16(np.nan).tobytes() + b"\x00\x00"))]),
    "step is zero": _file(segments=[_segment(_at_matrix(b"\x00\x00\x00\x00"))]),
    "step is negative": _file(segments=[_segment(_at_matrix(np.float16(-1).tobytes() + b"\x00\x00"))]),
    "model code beyond the tables": _file(segments=[_segment(_at_matrix(STEP + _varints(MAX_MODEL_CODE + 1)))]),
    "constant beyond the symbol range": _file(segments=[_segment(_at_matrix(STEP + _varints(0, 2 * MAX_SYMBOL + 2)))]),
    "counts of no symbols": _file(segments=[_segment(_at_matrix(STEP + _varints(1, 0, 0)))]),
    "counts of a huge alphabet": _file(segments=[_segment(_at_matrix(STEP + _varints(1, 0, 60_000)))]),
    "counts all zero": _file(segments=[_segment(_at_matrix(STEP + _varints(1, 0, 2, 0, 0)))]),
    "counts beyond the symbol range":
        _file(segments=[_segment(_at_matrix(STEP + _varints(1, 2 * MAX_SYMBOL, 2, 1, 1)))]),
    "a count beyond the tensor": _file(segments=[_segment(_at_matrix(STEP + _varints(1, 0, 1, NUMEL + 1)))]),
    "kept beyond the tensor": _file(segments=[_segment(_at_matrix(STEP + _varints(NUMEL + 1, 0, 0)),
                                                       flags=b"\x01" + _bitset(FIRST_MATRIX))]),
    "per-channel steps cut short": _file(segments=[_segment(_at_matrix(STEP + b"\x00\x00"),
                                                            flags=b"\x02" + _bitset(FIRST_MATRIX))]),
    "a context beyond its bound": _file(_header(LATENT), [_segment(network=LATENT, context=_varints(80_000) * 9)]),
    # the stream
    "stream not whole words": _file(segments=[_segment(stream=b"\x01\x02\x03")]),
    "words in a stream of no symbols": _file(segments=[_segment(stream=b"\x01\x02\x03\x04")]),
    "latent grids without their stream": _file(_header(LATENT), [_segment(network=LATENT, stream=b"\xff" * 4)]),
    "words left after the latent grids":
        _file(_header(LATENT), [_segment(network=LATENT, stream=_zero_latents() + b"\x07" * 8)]),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_version_4_files_are_refused(capsys, tmp_path, case):
    with pytest.raises(BitstreamError):
        read_bitstream(HOSTILE[case])
    path = tmp_path / "hostile.bin"
    path.write_bytes(HOSTILE[case])
    out = tmp_path / "out.mkv"
    code, err, elapsed = _decompress(capsys, path, out)
    _assert_refused(code, err, out, case)
    assert elapsed < 10


@pytest.mark.parametrize("path", [GOLDEN_V4, GOLDEN_V4_MODELS], ids=lambda p: p.stem)
def test_damage_behind_a_valid_checksum_is_refused_or_decoded_never_a_crash(path):
    """Bytes changed, cut or inserted anywhere after the version, the checksum made valid again:
    the reader refuses the file (BitstreamError) or decodes some weights, never fails otherwise."""
    body = path.read_bytes()[:-4]
    rng = np.random.default_rng(20261206)
    refused = 0
    for i in range(300):
        buf = bytearray(body)
        at = int(rng.integers(6, len(buf)))
        if i % 3 == 0:
            buf[at] ^= 1 << int(rng.integers(0, 8))
        elif i % 3 == 1:
            del buf[at:]
        else:
            buf[at:at] = rng.integers(0, 256, int(rng.integers(1, 9)), np.uint8).tobytes()
        try:
            read_bitstream(_reseal(bytes(buf)))
        except BitstreamError:
            refused += 1
    assert refused >= 250


@pytest.mark.parametrize("name", ["golden.bin", "golden_v2.bin", "golden_v3.bin", "golden_v4.bin"])
def test_info_splits_every_version_into_header_side_information_and_coded_symbols(name):
    data = (DATA / name).read_bytes()
    info = bitstream_info(data)
    split, parts = info["size_split"], info["side_info_parts"]
    assert sum(split.values()) == len(data) and sum(parts.values()) == split["side_info"]
    assert min(parts.values()) >= 0 and {"framing", "models", "steps", "records"} <= set(parts)
    assert parts["framing"] == (18 if info["format_version"] < 4 else 4 + 2 + 4 + len(info["segments"]) * 2)
    assert split["payload"] > 0 and 0 < split["header"] < (400 if info["format_version"] < 4 else 64)
