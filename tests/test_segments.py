"""Segments: each its own network, one file with an index; one segment is today's file."""

from __future__ import annotations

import numpy as np
import pytest

from compress.encode import compress_frames, segment_spans
from decompress.decode import decode_frames
from pipeline.bitstream import SegmentSpan, read_bitstream
from pipeline.config import load_preset
from pipeline.errors import InputError
from pipeline.metrics import psnr
from pipeline.presets import with_fit_epochs
from tests.conftest import smooth_clip

TINY = with_fit_epochs(load_preset("test-tiny"), 6)


def test_spans_tile_the_clip():
    assert segment_spans(10, None) == [SegmentSpan(0, 10)]
    assert segment_spans(10, 10) == segment_spans(10, 50) == [SegmentSpan(0, 10)]
    assert segment_spans(10, 4) == [SegmentSpan(0, 4), SegmentSpan(4, 4), SegmentSpan(8, 2)]
    with pytest.raises(InputError):
        segment_spans(10, 0)


def test_one_segment_is_the_unsegmented_file_and_segments_decode_to_what_was_measured():
    frames = smooth_clip(10, 32, 48)
    plain, _ = compress_frames(frames, 24.0, TINY, progress=False)
    one, _ = compress_frames(frames, 24.0, TINY, progress=False, segment_frames=10)
    assert one == plain
    data, result = compress_frames(frames, 24.0, TINY, progress=False, segment_frames=4)
    parsed = read_bitstream(data)
    assert [s.span for s in parsed.segments] == segment_spans(10, 4) and result.segments == 3
    decoded = decode_frames(data).frames
    assert decoded.shape == frames.shape
    assert abs(psnr(decoded, frames) - result.psnr) < 1e-9
    # Random access across a segment boundary gives the same frames as the full decode.
    np.testing.assert_array_equal(decode_frames(data, (3, 9)).frames, decoded[3:9])
