"""pipeline.video_writer.VideoWriter: frames streamed into ffmpeg one at a time, outputs put in place only when
complete."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import InputError
from pipeline.video_io import read_video
from pipeline.video_writer import VideoWriter, write_video
from tests.conftest import smooth_clip


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return smooth_clip(6, 18, 22)  # even and odd sizes both matter to some formats


def test_frames_written_one_at_a_time_read_back_exactly(tmp_path: Path, clip: np.ndarray) -> None:
    with VideoWriter(tmp_path / "a.mkv", 22, 18, fps=24) as writer:
        for frame in clip[:4]:
            writer.write(frame)
        writer.write(clip[4:])  # several at once
    assert writer.frames_written == 6
    assert np.array_equal(read_video(tmp_path / "a.mkv").frames, clip)
    assert os.listdir(tmp_path) == ["a.mkv"]


def test_a_png_sequence_streams_into_a_new_folder(tmp_path: Path, clip: np.ndarray) -> None:
    with VideoWriter(str(tmp_path / "seq") + "/", 22, 18) as writer:
        for frame in clip:
            writer.write(frame)
    assert sorted(os.listdir(tmp_path / "seq")) == [f"{i:05d}.png" for i in range(6)]
    assert np.array_equal(read_video(tmp_path / "seq").frames, clip)
    assert os.listdir(tmp_path) == ["seq"]


def test_y4m_is_bt601_limited_range_and_says_so(tmp_path: Path) -> None:
    grey_levels = np.array([0, 64, 128, 255], np.uint8)
    frames = np.repeat(grey_levels[:, None, None, None], 3, axis=3) * np.ones((4, 8, 8, 3), np.uint8)
    write_video(tmp_path / "g.y4m", frames)
    header, body = (tmp_path / "g.y4m").read_bytes().split(b"\n", 1)
    assert b"C444" in header.split(b" ") and b"XCOLORRANGE=LIMITED" in header.split(b" "), header
    step = len(b"FRAME\n") + 3 * 8 * 8
    assert len(body) == 4 * step and all(body[i * step : i * step + 6] == b"FRAME\n" for i in range(4))
    planes = [np.frombuffer(body, np.uint8, 3 * 64, i * step + 6).reshape(3, 8, 8) for i in range(4)]
    # Grey has no chroma; luma maps 0..255 to 16..235.
    assert [int(p[0, 0, 0]) for p in planes] == [16, 71, 126, 235]
    assert all((p[1:] == 128).all() for p in planes)


def test_a_writer_left_by_an_exception_leaves_nothing(tmp_path: Path, clip: np.ndarray) -> None:
    (tmp_path / "a.mkv").write_bytes(b"previous result")
    with pytest.raises(RuntimeError, match="stop"):
        with VideoWriter(tmp_path / "a.mkv", 22, 18) as writer:
            writer.write(clip[:3])
            raise RuntimeError("stop")
    assert os.listdir(tmp_path) == ["a.mkv"]
    assert (tmp_path / "a.mkv").read_bytes() == b"previous result"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(tmp_path / "frames" / "%03d.png", 22, 18) as writer:
            writer.write(clip[:3])
            raise KeyboardInterrupt
    assert os.listdir(tmp_path) == ["a.mkv"]


def test_frames_of_another_size_are_refused(tmp_path: Path, clip: np.ndarray) -> None:
    with pytest.raises(ValueError, match="frames must be uint8"):
        with VideoWriter(tmp_path / "a.mkv", 22, 18) as writer:
            writer.write(clip[0])
            writer.write(clip[0, :, :20])
    with pytest.raises(ValueError, match="frames must be uint8"):
        with VideoWriter(tmp_path / "a.mkv", 22, 18) as writer:
            writer.write(clip[0].astype(np.float32))
    assert os.listdir(tmp_path) == []


def test_a_writer_given_no_frames_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no frames"):
        with VideoWriter(tmp_path / "a.mkv", 22, 18):
            pass
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("size", [(0, 18), (22, -1), (22.0, 18)])
def test_bad_sizes_are_refused_before_anything_is_written(tmp_path: Path, size) -> None:
    with pytest.raises(ValueError, match="width and height"):
        VideoWriter(tmp_path / "a.mkv", *size)
    assert os.listdir(tmp_path) == []


def test_unsupported_paths_are_refused_before_anything_is_written(tmp_path: Path) -> None:
    for name in ("a.avi", "out/%05d.jpg"):
        with pytest.raises(InputError):
            VideoWriter(tmp_path / name, 22, 18)
    assert os.listdir(tmp_path) == []
