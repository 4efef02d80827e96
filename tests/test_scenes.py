"""Shot changes (compress/scenes.py): cuts found on a clip with known ones, and segments placed at them."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from compress.scenes import cut_scores, cuts_in, detect_cuts, segment_bounds
from pipeline.errors import InputError
from pipeline.video_writer import write_video
from tests.conftest import smooth_clip

HEIGHT, WIDTH = 54, 96


def panning_texture(frames: int, step: int, seed: int) -> np.ndarray:
    """A smooth random texture moving ``step`` pixels a frame: a camera pan, i.e. much motion, no cut."""
    rng = np.random.default_rng(seed)
    coarse = rng.uniform(0, 255, size=(HEIGHT // 6 + 2, (WIDTH + step * frames) // 6 + 2, 3))
    texture = np.repeat(np.repeat(coarse, 6, axis=0), 6, axis=1)
    kernel = np.ones(5) / 5  # soften the blocks a little, as a real picture is
    texture = np.apply_along_axis(lambda r: np.convolve(r, kernel, mode="same"), 1, texture)
    return np.stack([texture[:HEIGHT, t * step : t * step + WIDTH] for t in range(frames)]).astype(np.uint8)


def moving_square(frames: int) -> np.ndarray:
    out = np.full((frames, HEIGHT, WIDTH, 3), (200, 180, 60), np.uint8)
    for t in range(frames):
        out[t, 10:30, 5 + 4 * t : 25 + 4 * t] = (20, 40, 160)
    return out


def three_shots() -> tuple[np.ndarray, list[int]]:
    shots = [smooth_clip(14, HEIGHT, WIDTH, seed=1), panning_texture(16, 3, seed=2), moving_square(10)]
    return np.concatenate(shots), [14, 30]


def test_two_hard_cuts_are_found_exactly_in_a_file(tmp_path):
    frames, cuts = three_shots()
    path = tmp_path / "shots.mkv"
    write_video(path, frames, fps=24)
    assert detect_cuts(path) == cuts
    assert detect_cuts(path, frame_range=(5, 35)) == [c - 5 for c in cuts]  # counted from the range's start


def test_a_pan_and_a_one_frame_flash_are_no_cuts():
    frames, cuts = three_shots()
    scores = cut_scores(frames)
    pan = scores[cuts[0] + 1 : cuts[1]]
    assert pan.max() < 0.25 * scores[cuts].min()  # the pan moves a lot but evenly
    flashed = frames.copy()
    flashed[6] = 255
    assert cuts_in(flashed) == cuts


@pytest.mark.parametrize(("num_frames", "cuts", "low", "high", "expected"), [
    (280, [], 1, 200, [(0, 140), (140, 140)]),  # balanced, not 200 + 80
    (300, [100, 250], 20, 200, [(0, 100), (100, 150), (250, 50)]),
    (300, [100, 105, 250], 20, 200, [(0, 105), (105, 145), (250, 50)]),  # 5 frames join the shorter neighbour
    (500, [50], 20, 200, [(0, 50), (50, 150), (200, 150), (350, 150)]),
    (10, [3, 7], 20, 200, [(0, 10)]),  # shorter than the minimum: one segment
    (50, [0, 50, 99, -4, 25, 25], 1, 200, [(0, 25), (25, 25)]),  # outside or repeated: ignored
])
def test_segment_bounds_examples(num_frames, cuts, low, high, expected):
    assert segment_bounds(num_frames, cuts, low, high) == expected


@pytest.mark.parametrize(("num_frames", "low", "high"), [(0, 1, 10), (10, 0, 10), (10, 6, 10)])
def test_segment_bounds_refuses_impossible_bounds(num_frames, low, high):
    with pytest.raises(InputError):
        segment_bounds(num_frames, [], low, high)


@settings(max_examples=150, deadline=None)
@given(st.integers(1, 600), st.lists(st.integers(-5, 605), max_size=12), st.integers(1, 60), st.integers(0, 140))
def test_segment_bounds_tile_the_clip_within_bounds_and_split_shots_evenly(num_frames, cuts, low, extra):
    high = 2 * low - 1 + extra
    segments = segment_bounds(num_frames, cuts, low, high)
    assert segments[0][0] == 0 and sum(n for _, n in segments) == num_frames
    assert all(a + n == b for (a, n), (b, _) in zip(segments, segments[1:]))
    assert all(n <= high for _, n in segments)
    assert all(n >= low for _, n in segments) or segments == [(0, num_frames)]
    # Between two boundaries that are cuts (or the clip's ends), the frames are split into the
    # fewest parts of at most `high` frames, of lengths that differ by one at most.
    at_cut = [i for i, (a, _) in enumerate(segments) if a == 0 or a in cuts] + [len(segments)]
    for i, j in zip(at_cut[:-1], at_cut[1:]):
        lengths = [n for _, n in segments[i:j]]
        assert len(lengths) == math.ceil(sum(lengths) / high) and max(lengths) - min(lengths) <= 1
