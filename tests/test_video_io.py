"""Round trips, frame ranges, resizing, argument parsing and error paths of pipeline.video_io."""

from __future__ import annotations

import math
import os
import struct
import wave
from pathlib import Path

import numpy as np
import pytest
from conftest import mux_audio_and_subtitles

from pipeline.errors import InputError
from pipeline.ffmpeg import ffmpeg_version, has_encoder
from pipeline.video_io import (
    Video,
    VideoInfo,
    _parse_video_stream,
    count_frames,
    parse_frame_range,
    parse_frame_size,
    probe_video,
    read_video,
)
from pipeline.video_writer import write_video


def make_clip(frames: int = 8, height: int = 32, width: int = 48) -> np.ndarray:
    """Smooth moving colour waves: easy for H.264, yet every pixel and frame differs."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    red = 128 + 90 * np.sin(2 * np.pi * (x / width + 0.07 * t))
    green = 128 + 90 * np.cos(2 * np.pi * (y / height - 0.05 * t))
    blue = 128 + 80 * (np.sin(2 * np.pi * ((x + 2 * y) / (width + height) + 0.03 * t))
                       * np.cos(np.pi * x * y / (width * height)))
    return np.clip(np.stack([red, green, blue], axis=-1), 0, 255).astype(np.uint8)


def mean_abs_error(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


@pytest.fixture(scope="module")
def clip() -> np.ndarray:
    return make_clip()


@pytest.fixture(scope="module")
def odd_clip() -> np.ndarray:
    return make_clip(frames=5, height=17, width=21)


@pytest.fixture
def mkv(tmp_path: Path, clip: np.ndarray) -> Path:
    path = tmp_path / "clip.mkv"
    write_video(path, clip, fps=24)
    return path


# --- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(8, 32, 48), (5, 17, 21)])
def test_mkv_round_trip_is_bit_exact(tmp_path: Path, shape: tuple[int, int, int]) -> None:
    frames = make_clip(*shape)
    write_video(tmp_path / "a.mkv", frames)
    video = read_video(tmp_path / "a.mkv")
    assert isinstance(video, Video)
    assert np.array_equal(video.frames, frames)
    assert video.frames.dtype == np.uint8 and video.frames.flags.c_contiguous and video.frames.flags.writeable
    assert video.info == VideoInfo(width=shape[2], height=shape[1], frames=shape[0], fps=24.0, pix_fmt="bgr0")


@pytest.mark.parametrize("fps", [24.0, 25.0, 30000 / 1001])
def test_probe_reports_what_was_written(tmp_path: Path, clip: np.ndarray, fps: float) -> None:
    write_video(tmp_path / "a.mkv", clip, fps=fps)
    info = probe_video(tmp_path / "a.mkv")
    assert (info.width, info.height, info.pix_fmt) == (48, 32, "bgr0")
    assert info.fps == pytest.approx(fps, abs=0.01)
    assert info.frames == 0  # not known without decoding


def test_png_pattern_round_trip(tmp_path: Path, odd_clip: np.ndarray) -> None:
    pattern = tmp_path / "frames" / "f_%03d.png"
    write_video(pattern, odd_clip)
    assert sorted(os.listdir(tmp_path / "frames")) == [f"f_{i:03d}.png" for i in range(5)]
    assert np.array_equal(read_video(pattern).frames, odd_clip)
    assert np.array_equal(read_video(tmp_path / "frames").frames, odd_clip)
    assert probe_video(pattern).pix_fmt == "rgb24"


@pytest.mark.parametrize("existing", [False, True])
def test_png_folder_round_trip(tmp_path: Path, clip: np.ndarray, existing: bool) -> None:
    folder = tmp_path / "out"
    if existing:
        folder.mkdir()
    write_video(str(folder) + os.sep, clip)
    assert sorted(os.listdir(folder)) == [f"{i:05d}.png" for i in range(8)]
    assert np.array_equal(read_video(folder).frames, clip)
    assert sorted(os.listdir(tmp_path)) == ["out"]  # no staging folder left behind


def test_png_folder_rewrite_drops_stale_frames(tmp_path: Path, clip: np.ndarray) -> None:
    folder = tmp_path / "out"
    write_video(str(folder) + "/", clip)
    (folder / "notes.txt").write_text("keep me")
    write_video(folder, clip[:3])
    assert sorted(os.listdir(folder)) == ["00000.png", "00001.png", "00002.png", "notes.txt"]
    assert np.array_equal(read_video(folder).frames, clip[:3])


def test_png_folder_with_arbitrary_names_reads_in_name_order(tmp_path: Path, clip: np.ndarray) -> None:
    write_video(tmp_path / "seq" / "%d.png", clip[:3])
    for index, name in enumerate(["c.png", "b.png", "it's a.png"]):
        os.replace(tmp_path / "seq" / f"{index}.png", tmp_path / "seq" / name)
    (tmp_path / "seq" / "readme.txt").write_text("not a frame")
    # Name order: b.png (frame 1), c.png (frame 0), it's a.png (frame 2).
    assert np.array_equal(read_video(tmp_path / "seq").frames, clip[[1, 0, 2]])


def test_single_png(tmp_path: Path, clip: np.ndarray) -> None:
    write_video(tmp_path / "%d.png", clip[:1])
    video = read_video(tmp_path / "0.png")
    assert np.array_equal(video.frames, clip[:1])


def test_y4m_round_trip_is_close(tmp_path: Path, clip: np.ndarray) -> None:
    write_video(tmp_path / "a.y4m", clip)
    video = read_video(tmp_path / "a.y4m")
    assert video.frames.shape == clip.shape
    assert video.info.pix_fmt == "yuv444p"
    assert mean_abs_error(video.frames, clip) < 1.0  # 8-bit limited-range YUV rounding only
    assert np.abs(video.frames.astype(int) - clip).max() <= 3


def test_mp4_round_trip_is_close(tmp_path: Path, clip: np.ndarray) -> None:
    write_video(tmp_path / "a.mp4", clip, crf=18)
    video = read_video(tmp_path / "a.mp4")
    assert video.frames.shape == clip.shape
    assert video.info.pix_fmt == "yuv420p"
    assert mean_abs_error(video.frames, clip) < 5.0  # measured 2.5 (libx264 in ffmpeg 9.0)


def test_mp4_odd_size_is_padded_by_repeating_the_edge(tmp_path: Path, odd_clip: np.ndarray) -> None:
    write_video(tmp_path / "odd.mp4", odd_clip, crf=18)
    video = read_video(tmp_path / "odd.mp4")
    assert video.frames.shape == (5, 18, 22, 3)
    assert mean_abs_error(video.frames[:, :17, :21], odd_clip) < 8.0  # measured 4.9 on these tiny frames
    # The last real row/column measured 6.3 and 7.5; a black border bleeds into their chroma (19+).
    assert mean_abs_error(video.frames[:, 16, :21], odd_clip[:, 16]) < 12.0
    assert mean_abs_error(video.frames[:, :17, 20], odd_clip[:, :, 20]) < 12.0


@pytest.mark.parametrize("line, expected", [
    # ffmpeg 4.x/6.x wording of common sources
    ("h264 (High) (avc1 / 0x31637661), yuv420p(tv, bt709), 1920x1080 [SAR 1:1 DAR 16:9], 4000 kb/s, "
     "29.97 fps, 29.97 tbr, 30k tbn, 59.94 tbc (default)", (1920, 1080, 29.97, "yuv420p")),
    ("mjpeg (Baseline), yuvj420p(pc, bt470bg/unknown/unknown), 640x480, 25 tbr, 25 tbn",
     (640, 480, 25.0, "yuvj420p")),
    ("hevc (Main 10), yuv420p10le(tv, bt2020nc/bt2020/smpte2084), 3840x2160, SAR 1:1 DAR 16:9, 50 fps, 50 tbr",
     (3840, 2160, 50.0, "yuv420p10le")),
    ("rawvideo (Y800 / 0x30303859), gray, 64x48, 1k fps, 1k tbr", (64, 48, 1000.0, "gray")),
])
def test_stream_line_parser(line: str, expected: tuple[int, int, float, str]) -> None:
    info = _parse_video_stream(line)
    assert info is not None
    assert (info.width, info.height, info.fps, info.pix_fmt) == expected


# --- frame range and resize -------------------------------------------------------------------


def test_frame_range_selects_exact_frames(mkv: Path, clip: np.ndarray) -> None:
    video = read_video(mkv, frame_range=(2, 5))
    assert np.array_equal(video.frames, clip[2:5])
    assert video.info.frames == 3
    assert np.array_equal(read_video(mkv, frame_range=(6, None)).frames, clip[6:])
    assert np.array_equal(read_video(mkv, frame_range=parse_frame_range(":2")).frames, clip[:2])


def test_frame_range_is_clipped_at_the_end_like_a_slice(mkv: Path, clip: np.ndarray) -> None:
    assert np.array_equal(read_video(mkv, frame_range=(5, 100)).frames, clip[5:])


def test_count_frames_is_what_a_read_gives(mkv: Path, tmp_path: Path, clip: np.ndarray) -> None:
    assert count_frames(mkv) == len(clip) == len(read_video(mkv).frames)
    write_video(f"{tmp_path}/pngs/", clip[:3])
    assert count_frames(tmp_path / "pngs") == 3


def test_streams_beside_the_video_are_listed(mkv: Path, tmp_path: Path, clip: np.ndarray) -> None:
    assert probe_video(mkv).other_streams == ()
    both = tmp_path / "both.mkv"
    mux_audio_and_subtitles(mkv, both)
    assert probe_video(both).other_streams == ("audio", "subtitle")
    video = read_video(both)
    assert video.info.other_streams == ("audio", "subtitle")
    np.testing.assert_array_equal(video.frames, clip)


def test_resize(mkv: Path) -> None:
    video = read_video(mkv, size=(24, 16))
    assert video.frames.shape == (8, 16, 24, 3)
    assert (video.info.width, video.info.height, video.info.frames) == (24, 16, 8)
    assert read_video(mkv, frame_range=(1, 3), size=(50, 40)).frames.shape == (2, 40, 50, 3)


def test_resize_keeps_flat_colour(tmp_path: Path) -> None:
    flat = np.full((2, 32, 48, 3), (200, 100, 50), np.uint8)
    write_video(tmp_path / "flat.mkv", flat)
    assert np.array_equal(read_video(tmp_path / "flat.mkv", size=(24, 16)).frames[0, 5, 5], [200, 100, 50])


def test_path_with_colon_is_a_file_not_a_protocol(tmp_path: Path, clip: np.ndarray) -> None:
    path = tmp_path / "take:1.mkv"
    write_video(path, clip)
    assert np.array_equal(read_video(path).frames, clip)


# --- argument parsing -------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [("2:5", (2, 5)), ("3:", (3, None)), (":4", (0, 4)),
                                            (" 0 : 16 ", (0, 16)), (":", (0, None))])
def test_parse_frame_range(text: str, expected: tuple[int, int | None]) -> None:
    assert parse_frame_range(text) == expected


@pytest.mark.parametrize("text", ["", "5", "a:b", "-1:3", "2:-1", "5:5", "6:2", "1:2:3", "1.5:3", "٣:٥"])
def test_parse_frame_range_rejects(text: str) -> None:
    with pytest.raises(InputError, match="frame range"):
        parse_frame_range(text)


@pytest.mark.parametrize("text, expected", [("640x360", (640, 360)), ("24X16", (24, 16)), (" 1 x 1 ", (1, 1))])
def test_parse_frame_size(text: str, expected: tuple[int, int]) -> None:
    assert parse_frame_size(text) == expected


@pytest.mark.parametrize("text", ["", "640", "0x360", "640x0", "-640x360", "640x-360", "64.5x36", "axb", "640*360"])
def test_parse_frame_size_rejects(text: str) -> None:
    with pytest.raises(InputError, match="size"):
        parse_frame_size(text)


# --- bad inputs ---------------------------------------------------------------------------------


def write_sine_wav(path: Path, seconds: float = 0.2, rate: int = 8000) -> None:
    samples = [int(10000 * math.sin(2 * math.pi * 440 * i / rate)) for i in range(int(seconds * rate))]
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(struct.pack(f"<{len(samples)}h", *samples))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file"):
        read_video(tmp_path / "missing.mp4")
    with pytest.raises(InputError, match="no such file"):
        probe_video(tmp_path / "missing.mp4")


def test_missing_pattern(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="%05d.png"):
        read_video(tmp_path / "%05d.png")


def test_text_file(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 10)
    with pytest.raises(InputError, match="notes.mp4") as excinfo:
        read_video(path)
    assert "\n" not in str(excinfo.value)


def test_folder_without_pngs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .png"):
        read_video(tmp_path / "empty")
    (tmp_path / "empty" / "a.txt").write_text("x")
    with pytest.raises(InputError, match="no .png"):
        probe_video(tmp_path / "empty")


def test_range_past_the_end(mkv: Path) -> None:
    with pytest.raises(InputError, match="no frames"):
        read_video(mkv, frame_range=(8, 12))
    with pytest.raises(InputError, match="no frames"):
        read_video(mkv, frame_range=(20, None))


def test_audio_only_input(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    write_sine_wav(path)
    with pytest.raises(InputError, match="no video stream"):
        read_video(path)


# --- writing failures leave nothing behind ------------------------------------------------------


@pytest.mark.parametrize("frames", [np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8), np.uint8),
                                    np.zeros((2, 8, 8, 4), np.uint8), np.zeros((0, 8, 8, 3), np.uint8),
                                    [[[[0, 0, 0]]]]])
def test_write_rejects_bad_frames(tmp_path: Path, frames: np.ndarray) -> None:
    with pytest.raises(ValueError, match="frames"):
        write_video(tmp_path / "a.mkv", frames)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("name", ["a.avi", "a", "out/%05d.jpg", "out/%d_%d.png"])
def test_write_rejects_unsupported_paths(tmp_path: Path, clip: np.ndarray, name: str) -> None:
    with pytest.raises(InputError):
        write_video(tmp_path / name, clip)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("options", [{"crf": -5}, {"fps": 1e-12}])
def test_failed_encode_removes_the_temporary(tmp_path: Path, clip: np.ndarray, options: dict) -> None:
    with pytest.raises(InputError, match=r"a\.mp4: ffmpeg could not write it"):
        write_video(tmp_path / "a.mp4", clip, **options)  # a CRF or frame rate ffmpeg refuses
    assert os.listdir(tmp_path) == []


def test_write_replaces_an_existing_file(tmp_path: Path, clip: np.ndarray) -> None:
    write_video(tmp_path / "a.mkv", clip)
    write_video(tmp_path / "a.mkv", clip[:2])
    assert np.array_equal(read_video(tmp_path / "a.mkv").frames, clip[:2])
    assert os.listdir(tmp_path) == ["a.mkv"]


def test_write_into_missing_folder(tmp_path: Path, clip: np.ndarray) -> None:
    with pytest.raises(InputError, match="does not exist"):
        write_video(tmp_path / "nope" / "a.mkv", clip)
    assert os.listdir(tmp_path) == []


# --- ffmpeg facts -------------------------------------------------------------------------------


def test_ffmpeg_facts() -> None:
    assert ffmpeg_version().startswith("ffmpeg version")
    assert has_encoder("png") and has_encoder("ffv1")
    assert not has_encoder("no-such-encoder")
