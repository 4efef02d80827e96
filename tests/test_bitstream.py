import struct
import zlib

import numpy as np
import pytest
import torch

from compress.prune import prune_by_magnitude
from compress.quantize import LearnedQuantizer, quantize_network
from pipeline.bitstream import (
    FORMAT_VERSION,
    MAGIC,
    CodedTensor,
    SegmentSpan,
    StreamHeader,
    read_bitstream,
    read_header,
    transmitted_shapes,
    write_bitstream,
)
from pipeline.config import NetworkConfig
from pipeline.entropy import SymbolModel, empirical_entropy_bits
from pipeline.errors import BitstreamError
from pipeline.geometry import resolve_network
from pipeline.networks import build_network
from pipeline.segment_coding import MODEL_COUNTS, WeightModel
from pipeline.segments import check_tiling, segment_index

SMALL = dict(fc_dim=16, block_dim=16, mlp_dim=16, stem_dims=(32,), mod_dim=16, heads=2, head_dim=8,
             expansion=2.0, lower_width=8, pe_levels=16, max_stages=3)


def _coded(kind="enerv", bits=8, prune=0.3, width=48, height=32, seed=0, frames=8):
    torch.manual_seed(seed)
    network = resolve_network(NetworkConfig(kind=kind, **SMALL), width, height)
    model = build_network(network)
    masks = prune_by_magnitude(model, prune)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in masks:
                p.mul_(masks[name])
    coded = quantize_network(model, LearnedQuantizer(dict(model.named_parameters()), masks, bits=bits))
    return StreamHeader(network, width, height, frames, 24.0, "test"), coded


@pytest.fixture(scope="module")
def stream():
    header, coded = _coded()
    data, split = write_bitstream(header, coded)
    return header, coded, data, split


@pytest.mark.parametrize("kind", ["enerv", "nerv"])
@pytest.mark.parametrize("bits,prune", [(8, 0.0), (8, 0.5), (2, 0.2), (16, 0.0), (5, 0.9), (None, 0.0), (None, 0.4)])
def test_round_trip_is_bit_exact(kind, bits, prune):
    header, coded = _coded(kind, bits, prune)
    data, split = write_bitstream(header, coded)
    parsed = read_bitstream(data)
    assert parsed.header == header
    assert split.total == len(data) == parsed.split.total
    for ours, theirs in zip(coded, parsed.tensors):
        np.testing.assert_array_equal(ours.symbols, theirs.symbols)
        np.testing.assert_array_equal(ours.params.scales, theirs.params.scales)
        assert (ours.mask is None) == (theirs.mask is None)
        if ours.mask is not None:
            np.testing.assert_array_equal(ours.mask, theirs.mask)
            assert np.all(theirs.symbols[~theirs.mask] == 0)


def test_header_survives_and_shapes_match(stream):
    header, coded, data, _ = stream
    assert read_header(data) == header
    assert [s for _, s in transmitted_shapes(header.network)] == [c.symbols.shape for c in coded]


def test_segments_round_trip_and_decode_only_what_is_asked():
    header, first = _coded(seed=1, frames=10)
    _, second = _coded(seed=2, frames=10)
    _, third = _coded(seed=3, frames=10)
    spans = [SegmentSpan(0, 4), SegmentSpan(4, 5), SegmentSpan(9, 1)]
    data, split = write_bitstream(header, [first, second, third], spans)
    assert split.total == len(data)
    parsed = read_bitstream(data)
    assert [s.span for s in parsed.segments] == spans
    for coded, segment in zip([first, second, third], parsed.segments):
        for ours, theirs in zip(coded, segment.tensors):
            np.testing.assert_array_equal(ours.symbols, theirs.symbols)
    assert [parsed.segment_of(f) for f in range(10)] == [0] * 4 + [1] * 5 + [2]
    partial = read_bitstream(data, frames=range(5, 7))
    assert partial.segments[0].tensors is None and partial.segments[2].tensors is None
    for ours, theirs in zip(second, partial.segments[1].tensors):
        np.testing.assert_array_equal(ours.symbols, theirs.symbols)
    with pytest.raises(ValueError):
        _ = partial.tensors  # several segments: no single list of tensors


@pytest.mark.parametrize("spans", [[SegmentSpan(0, 4)], [SegmentSpan(0, 4), SegmentSpan(5, 5)],
                                   [SegmentSpan(1, 9)], [SegmentSpan(0, 12)]])
def test_segments_that_do_not_tile_the_video_are_not_written(spans):
    header, coded = _coded(frames=10)
    with pytest.raises(ValueError):
        write_bitstream(header, [coded] * len(spans), spans)


def test_symbols_beyond_the_format_range_are_not_written():
    header, coded = _coded(bits=None, prune=0.0)
    big = coded[0].symbols.copy()
    big.flat[0] = 1 << 15
    coded[0] = CodedTensor(coded[0].params, big, None)
    with pytest.raises(ValueError):
        write_bitstream(header, coded)


def test_each_tensor_codes_within_one_percent_of_its_entropy_in_version_2(stream):
    header, coded, _, _ = stream
    data, split = write_bitstream(header, coded, version=2)
    assert read_bitstream(data).version == 2
    for record, tensor in zip(split.per_tensor, coded):
        values = tensor.symbols[tensor.mask] if tensor.mask is not None else tensor.symbols
        entropy_bytes = empirical_entropy_bits(values) / 8
        if record["model"] == 0 and entropy_bytes:  # a shared model costs a little more than the tensor's own
            continue
        assert record["value_bytes"] <= 1.01 * entropy_bytes + 8, record


def test_each_weight_codes_within_one_percent_of_its_own_counts(stream):
    """Version 4: a bank table is taken where it codes within 1 % of the tensor's own counts, the
    bytes of those counts included; the one stream of a segment comes within a few words of the
    sum of the tensors' code lengths."""
    _, coded, data, split = stream
    assert read_bitstream(data).version == FORMAT_VERSION == 4
    ideal = 0.0
    for record, tensor in zip(split.per_tensor, coded):
        values = tensor.symbols[tensor.mask] if tensor.mask is not None else tensor.symbols
        counts = WeightModel(MODEL_COUNTS, counts=SymbolModel.from_symbols(values)).size
        own = empirical_entropy_bits(values) / 8 + counts
        assert record["value_bytes"] + record["model_bytes"] <= 1.01 * own + 0.2, record
        ideal += record["value_bytes"] + record["mask_bytes"]
    assert ideal <= split.masks + split.payload <= ideal + 8


def test_split_adds_up(stream):
    _, _, data, split = stream
    assert split.header > 0 and split.side_info > 0 and split.payload > 0 and split.masks > 0
    assert split.header + split.side_info + split.masks + split.payload == len(data)
    assert sum(split.side_parts.values()) == split.side_info
    assert split.side_parts["framing"] == 4 + 2 + 4 + 2  # magic, version, CRC, the segment's length


def _reseal(body: bytes) -> bytes:
    """A file with a valid CRC over modified content (to reach the checks behind it)."""
    return body + struct.pack("<I", zlib.crc32(body))


CORRUPTIONS = {
    "empty": lambda d: b"",
    "magic only": lambda d: MAGIC,
    "other kind of file": lambda d: b"\x1aE\xdf\xa3" + d[4:],
    "text": lambda d: b"hello, this is not a bitstream\n" * 4,
    "truncated header": lambda d: d[:12],
    "truncated payload": lambda d: d[:-10],
    "last byte missing": lambda d: d[:-1],
    "appended garbage": lambda d: d + b"\x00" * 7,
    "flipped payload bit": lambda d: d[:-20] + bytes([d[-20] ^ 0x10]) + d[-19:],
    "flipped header bit": lambda d: d[:20] + bytes([d[20] ^ 0x01]) + d[21:],
    "future version": lambda d: _reseal(MAGIC + struct.pack("<H", FORMAT_VERSION + 1) + d[6:-4]),
    "huge header length": lambda d: d[:6] + struct.pack("<I", 2**31) + d[10:],
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_corruptions_are_refused(stream, case):
    _, _, data, _ = stream
    with pytest.raises(BitstreamError):
        read_bitstream(CORRUPTIONS[case](data))


# --- segment tiling and lookup, one place for the writer, the reader and the decoder ----------------


def test_tiling_is_checked_in_one_place_and_a_frame_finds_its_segment():
    spans = [SegmentSpan(0, 4), SegmentSpan(4, 5), SegmentSpan(9, 1)]
    check_tiling(spans, 10)
    check_tiling(spans)  # without a frame count: only one after the other
    for bad, frames in ([], 10), (spans, 11), ([SegmentSpan(0, 4), SegmentSpan(5, 5)], 10), \
            ([SegmentSpan(0, 0), SegmentSpan(0, 10)], 10), ([SegmentSpan(1, 9)], None):
        with pytest.raises(ValueError, match="segments"):
            check_tiling(bad, frames)
    assert [segment_index(spans, f) for f in range(10)] == [0] * 4 + [1] * 5 + [2]
    for outside in (-1, 10):
        with pytest.raises(ValueError, match="outside"):
            segment_index(spans, outside)
    assert SegmentSpan(4, 5).overlaps(range(8, 12)) and not SegmentSpan(4, 5).overlaps(range(9, 12))
