"""Shot changes, and segment boundaries placed at them.

A hard cut is a frame whose difference from the previous frame stands far above the
differences of the frames around it: camera motion and moving objects change many frames
in a row, a cut changes one. The score of frame ``n`` is ``d[n] - max(d[n-1], d[n+1])``,
where ``d[n]`` is the mean absolute difference of the luma of frames ``n-1`` and ``n``,
downscaled to 64x36 (levels 0..255). A cut is a score above :data:`CUT_THRESHOLD`.

Chosen by measurement over ffmpeg's scene score (``select='gt(scene,X)'``) on a 320-frame
clip with six known cuts (the bunny, the street camera, the bunny pan and a jump cut within
the bunny): both find all six with no false cut, but ffmpeg does so for thresholds 0.2..0.3
only (its lowest cut scores 0.31, its highest non-cut 0.18: a margin of 1.7x), this score
for 2..24 levels (lowest cut 28, highest non-cut 1.5: 19x). Both cost about a decode of
the clip. A one-frame flash scores low (both of its differences are high), so it is no cut;
gradual transitions (fades, dissolves) are not detected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from pipeline.errors import InputError
from pipeline.video_io import read_video

ANALYSIS_SIZE = (64, 36)  # (W, H): cuts are found on frames this small; detail does not matter
CUT_THRESHOLD = 8.0  # luma levels (0..255) by which a frame's difference must exceed its neighbours'
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)  # BT.601


def cut_scores(frames: np.ndarray) -> np.ndarray:
    """Per frame of uint8 RGB ``frames`` [T,H,W,3], how far its difference from the previous frame
    stands above its neighbours' (luma levels; frame 0 scores 0)."""
    luma = frames.astype(np.float32) @ _LUMA
    diff = np.zeros(len(frames), np.float32)
    diff[1:] = np.abs(np.diff(luma, axis=0)).mean(axis=(1, 2))
    neighbours = np.zeros_like(diff)
    neighbours[1:] = diff[:-1]  # the previous frame's difference
    neighbours[:-1] = np.maximum(neighbours[:-1], diff[1:])  # and the next frame's
    scores = diff - neighbours
    scores[0] = 0.0
    return scores


def cuts_in(frames: np.ndarray, threshold: float = CUT_THRESHOLD) -> list[int]:
    """Indices of the frames of ``frames`` that start a new shot (never 0)."""
    return [int(i) for i in np.flatnonzero(cut_scores(frames) > threshold)]


def detect_cuts(source: str | Path, size: tuple[int, int] | None = None,
                frame_range: tuple[int, int | None] | None = None, threshold: float = CUT_THRESHOLD) -> list[int]:
    """The frames of ``source`` (anything :func:`pipeline.video_io.read_video` reads) where a new
    shot starts, counted from the start of ``frame_range``.

    ``size`` (W, H) is the size the frames are analysed at (default :data:`ANALYSIS_SIZE`); the
    clip is read once at that size (64x36 RGB: 7 KB a frame).
    """
    frames = read_video(source, frame_range=frame_range, size=size or ANALYSIS_SIZE).frames
    return cuts_in(frames, threshold)


def _split_evenly(first: int, count: int, parts: int) -> list[tuple[int, int]]:
    """``count`` frames from ``first`` in ``parts`` runs whose lengths differ by one at most."""
    base, extra = divmod(count, parts)
    out, start = [], first
    for i in range(parts):
        length = base + (1 if i < extra else 0)
        out.append((start, length))
        start += length
    return out


def segment_bounds(num_frames: int, cuts: Iterable[int], min_frames: int, max_frames: int) -> list[tuple[int, int]]:
    """Segments ``(first, count)`` that tile ``num_frames`` frames, with boundaries at ``cuts``.

    Shots shorter than ``min_frames`` are merged into their shorter neighbour (the shortest
    first), so a burst of cuts does not make tiny segments; shots longer than ``max_frames``
    are split into the fewest equal parts (lengths differ by one at most) that fit. Every
    segment then has ``min_frames`` to ``max_frames`` frames, except a clip shorter than
    ``min_frames``, which is one segment. With no cuts this is the balanced cut of the clip:
    280 frames with a maximum of 200 give 140 + 140. Cuts outside ``1..num_frames-1`` are
    ignored. Needs ``2 * min_frames <= max_frames + 1``, without which some lengths cannot be
    split within the bounds.
    """
    if num_frames < 1:
        raise InputError(f"a clip has at least one frame, got {num_frames}")
    if min_frames < 1 or max_frames < 1 or 2 * min_frames > max_frames + 1:
        raise InputError(f"segment lengths {min_frames}..{max_frames}: need 1 <= min and 2 x min <= max + 1")
    edges = [0, *sorted({int(c) for c in cuts if 0 < int(c) < num_frames}), num_frames]
    shots = [[a, b - a] for a, b in zip(edges[:-1], edges[1:])]
    while len(shots) > 1:
        i = min(range(len(shots)), key=lambda k: (shots[k][1], k))
        if shots[i][1] >= min_frames:
            break
        if i == 0:
            j = 1
        elif i == len(shots) - 1:
            j = i - 1
        else:
            j = i - 1 if shots[i - 1][1] <= shots[i + 1][1] else i + 1
        lo, hi = min(i, j), max(i, j)
        shots[lo:hi + 1] = [[shots[lo][0], shots[lo][1] + shots[hi][1]]]
    out: list[tuple[int, int]] = []
    for first, count in shots:
        out.extend(_split_evenly(first, count, math.ceil(count / max_frames)))
    return out


__all__ = ["ANALYSIS_SIZE", "CUT_THRESHOLD", "cut_scores", "cuts_in", "detect_cuts", "segment_bounds"]
