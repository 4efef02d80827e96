"""Segments: the consecutive frame ranges of a video, each rendered by its own network.

One place checks that spans tile a video (the writer, the reader and the decoder's frame
source all ask it) and one place finds the span that holds a frame.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SegmentSpan:
    """Frames ``first .. first + count - 1`` of the video, rendered by one network."""

    first: int
    count: int

    @property
    def stop(self) -> int:
        return self.first + self.count

    def __contains__(self, frame: int) -> bool:
        return self.first <= frame < self.stop

    def overlaps(self, frames: range) -> bool:
        """Whether any of ``frames`` (a step-1 range) lies in this span."""
        return self.first < frames.stop and frames.start < self.stop


def check_tiling(spans: Sequence[SegmentSpan], num_frames: int | None = None) -> None:
    """Raises ValueError unless ``spans`` cover frames 0, 1, ... one after the other, each with at
    least one frame (and, given ``num_frames``, end at the video's last frame)."""
    if not spans:
        raise ValueError("the segments do not tile the video: there are none")
    expected = 0
    for i, span in enumerate(spans):
        if span.count < 1:
            raise ValueError(f"the segments do not tile the video: segment {i} has {span.count} frames")
        if span.first != expected:
            raise ValueError(f"the segments do not tile the video: segment {i} starts at frame {span.first}, "
                             f"not {expected}")
        expected = span.stop
    if num_frames is not None and expected != num_frames:
        raise ValueError(f"the segments do not cover the video: they hold {expected} frames, it has {num_frames}")


def segment_index(spans: Sequence[SegmentSpan], frame: int) -> int:
    """Index of the span of tiling ``spans`` that holds ``frame`` (ValueError outside them all)."""
    if not spans or not 0 <= frame < spans[-1].stop:
        raise ValueError(f"frame {frame} is outside the segments' {spans[-1].stop if spans else 0} frames")
    return bisect.bisect_right(spans, frame, key=lambda span: span.first) - 1
