"""Segments: each its own network, one file with an index; one segment is today's file."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from compress import segments
from compress.fit import FitInterrupted
from compress.segments import default_segment_frames, segment_spans
from compress.video import compress_frames, compress_video
from decompress.decode import decode_frames
from pipeline.bitstream import SegmentSpan, read_bitstream
from pipeline.config import load_preset
from pipeline.errors import InputError
from pipeline.metrics import psnr
from pipeline.presets import with_fit_epochs
from pipeline.video_writer import write_video
from tests.conftest import mux_audio_and_subtitles, smooth_clip

TINY = with_fit_epochs(load_preset("test-tiny"), 6)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


# --- compress_video: segments read from the file one at a time ----------------------------------

QUICK = with_fit_epochs(load_preset("test-tiny"), 2)


@pytest.fixture
def source(tmp_path) -> tuple[Path, np.ndarray]:
    frames = smooth_clip(10, 32, 48)
    path = tmp_path / "clip.mkv"
    write_video(path, frames, fps=24)  # FFV1: reads back exactly
    return path, frames


@pytest.fixture
def reads(monkeypatch) -> list[tuple[int, int | None] | None]:
    """The frame ranges compress_video reads from the source."""
    seen = []
    real = segments.read_video

    def recording(path, frame_range=None, size=None):
        seen.append(frame_range)
        return real(path, frame_range=frame_range, size=size)

    monkeypatch.setattr(segments, "read_video", recording)
    return seen


def test_default_length_bounds_a_segment_in_float32():
    assert default_segment_frames(48, 32) == segments.MAX_SEGMENT_FRAMES == 300
    assert default_segment_frames(1920, 1080) == 86
    assert default_segment_frames(1920, 1080) * 1920 * 1080 * 3 * 4 <= 2 * 1024**3
    assert default_segment_frames(16384, 16384) == 1


def test_streamed_segments_are_the_in_memory_segments_and_leave_no_checkpoint(source, tmp_path, reads):
    path, frames = source
    out = tmp_path / "clip.bin"
    result = compress_video(path, out, QUICK, segment_frames=4, progress=False)
    expected, alone = compress_frames(frames, 24.0, QUICK, progress=False, segment_frames=4,
                                      source_id=str(path.resolve()))
    assert out.read_bytes() == expected and result.segments == 3 and result.psnr == alone.psnr
    # Never more than a segment (and the one frame that tells the clip is longer) at once.
    assert all(r is not None and r[1] - r[0] <= 5 for r in reads), reads
    assert (0, 4) in reads and (8, 10) in reads
    assert not (tmp_path / "clip.bin.ckpt.d").exists() and not (tmp_path / "clip.bin.ckpt").exists()


def test_a_long_clip_is_cut_by_default_and_a_range_is_cut_from_its_start(source, tmp_path, monkeypatch):
    path, frames = source
    monkeypatch.setattr(segments, "MAX_SEGMENT_FRAMES", 4)
    result = compress_video(path, tmp_path / "a.bin", QUICK, progress=False)
    assert result.segments == 3
    result = compress_video(path, tmp_path / "b.bin", QUICK, frame_range=(1, None), segment_frames=3,
                            progress=False)
    expected, _ = compress_frames(frames[1:], 24.0, QUICK, progress=False, segment_frames=3,
                                  source_id=str(path.resolve()))
    assert (tmp_path / "b.bin").read_bytes() == expected and result.frames == 9 and result.segments == 3


def test_interrupted_segments_resume_from_the_finished_ones(source, tmp_path, monkeypatch):
    path, _ = source
    out, folder = tmp_path / "clip.bin", tmp_path / "clip.bin.ckpt.d"
    expected = compress_video(path, tmp_path / "whole.bin", QUICK, segment_frames=4, progress=False)
    encoded = []
    real = segments.encode_segment

    def interrupted_at_the_second(frames, *args, index, **kwargs):
        encoded.append(index)
        if index == 1:
            raise FitInterrupted(kwargs["checkpoint"])
        return real(frames, *args, index=index, **kwargs)

    monkeypatch.setattr(segments, "encode_segment", interrupted_at_the_second)
    with pytest.raises(FitInterrupted, match="--resume") as caught:
        compress_video(path, out, QUICK, segment_frames=4, progress=False)
    assert caught.value.checkpoint == folder and not out.exists()
    assert sorted(p.name for p in folder.iterdir()) == ["run.json", "segment-00000.pt"]
    # Another configuration is not this run; a plain run starts over; --resume skips segment 0.
    with pytest.raises(InputError, match="different input or configuration"):
        compress_video(path, out, with_fit_epochs(QUICK, 3), segment_frames=4, resume=True, progress=False)
    monkeypatch.setattr(segments, "encode_segment",
                        lambda *a, index, **k: encoded.append(index) or real(*a, index=index, **k))
    encoded.clear()
    result = compress_video(path, out, QUICK, segment_frames=4, resume=True, progress=False)
    assert encoded == [1, 2] and result.bytes == expected.bytes
    assert out.read_bytes() == (tmp_path / "whole.bin").read_bytes() and not folder.exists()


def test_resume_needs_the_checkpoint_folder(source, tmp_path):
    path, _ = source
    with pytest.raises(InputError, match="--resume: no checkpoint .*ckpt.d"):
        compress_video(path, tmp_path / "clip.bin", QUICK, segment_frames=4, resume=True, progress=False)


def test_too_little_disk_space_is_refused_before_any_work(source, tmp_path, monkeypatch):
    path, _ = source
    monkeypatch.setattr(segments.shutil, "disk_usage",
                        lambda folder: shutil._ntuple_diskusage(10**9, 10**9 - 4096, 4096))
    monkeypatch.setattr(segments, "encode_owned", None)  # would fail if reached
    with pytest.raises(InputError, match="not enough disk space"):
        compress_video(path, tmp_path / "clip.bin", QUICK, segment_frames=4, progress=False)
    with pytest.raises(InputError, match="not enough disk space"):
        compress_video(path, tmp_path / "clip.bin", QUICK, progress=False)


def test_progress_counts_segments_and_notices_other_streams_once(source, tmp_path, capsys):
    path, _ = source
    both = tmp_path / "both.mkv"
    mux_audio_and_subtitles(path, both)
    compress_video(both, tmp_path / "clip.bin", QUICK, segment_frames=4, progress=True)
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note:")]
    assert len(notes) == 1 and "audio, subtitle" in notes[0] and "only the video" in notes[0]
    assert "segment 1/3 (frames 0:4) encoded in" in err and "1/3 segments done, about" in err
    assert "segment 3/3 (frames 8:10)" in err and "3/3 segments done\n" in err
