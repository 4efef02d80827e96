"""Which network renders each frame of a file, and rendering frames in the order asked.

A file holds one or more independently fitted networks ("segments"), each rendering a
contiguous range of the video's frames (a version-1 file, and a short clip, hold one).
:meth:`FrameSource.locate` maps a frame to (segment, local index), and
:meth:`FrameSource.frames` builds each segment's network only when one of its frames is
asked for, keeping one network at a time.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pipeline.bitstream import ParsedStream
from pipeline.errors import InputError
from pipeline.networks import network_with_weights
from pipeline.quantization import dequantize
from pipeline.render import FrameRenderer
from pipeline.segments import SegmentSpan, check_tiling, segment_index


@dataclass(frozen=True)
class Segment:
    """One network and the frames it renders: ``first_frame`` .. ``first_frame + num_frames - 1``.

    The network was fitted to exactly these frames: local frame ``j`` is its output at time
    ``j / (num_frames - 1)``. ``build`` returns it, weights loaded, on the CPU.
    """

    first_frame: int
    num_frames: int
    build: Callable[[], nn.Module]


def load_network(parsed: ParsedStream, device: str | torch.device = "cpu", segment: int = 0) -> nn.Module:
    """The network of one segment of a parsed file (the only one of a short clip), weights loaded."""
    tensors = parsed.segments[segment].tensors
    if tensors is None:
        raise ValueError(f"segment {segment} was not decoded (outside the frames asked for)")
    return network_with_weights(parsed.header.network, [dequantize(t.symbols, t.params) for t in tensors], device)


def segments_of(parsed: ParsedStream) -> list[Segment]:
    """The segments of a parsed file, in frame order (one for a version-1 file)."""
    return [Segment(s.span.first, s.span.count, functools.partial(load_network, parsed, "cpu", i))
            for i, s in enumerate(parsed.segments)]


class FrameSource:
    """Renders any frames of a file, each from the segment that holds it.

    ``threads`` is passed to :class:`pipeline.render.FrameRenderer` (CPU only).
    """

    def __init__(self, segments: Sequence[Segment], width: int, height: int,
                 device: str | torch.device = "cpu", threads: int | None = None):
        spans = [SegmentSpan(s.first_frame, s.num_frames) for s in segments]
        try:
            check_tiling(spans)
        except ValueError as exc:
            raise InputError(f"the file's segments do not cover its frames one after the other ({exc})") from None
        self.segments = tuple(segments)
        self.num_frames = spans[-1].stop
        self.width, self.height = width, height
        self.device = torch.device(device)
        self.threads = threads
        self._spans = spans
        self._loaded: tuple[int, FrameRenderer] | None = None

    @classmethod
    def from_parsed(cls, parsed: ParsedStream, device: str | torch.device = "cpu",
                    threads: int | None = None) -> FrameSource:
        header = parsed.header
        return cls(segments_of(parsed), header.width, header.height, device, threads)

    def locate(self, frame: int) -> tuple[int, int]:
        """(index of the segment that renders ``frame``, the frame's index within it)."""
        if not 0 <= frame < self.num_frames:
            raise InputError(f"frame {frame} is outside the video's {self.num_frames} frames")
        segment = segment_index(self._spans, frame)
        return segment, frame - self._spans[segment].first

    def renderer(self, segment: int) -> FrameRenderer:
        """The renderer of one segment; building it drops the previous segment's network."""
        if self._loaded is None or self._loaded[0] != segment:
            self._loaded = None  # free the previous network before building the next
            record = self.segments[segment]
            model = record.build().to(self.device)
            self._loaded = (segment, FrameRenderer(model, record.num_frames, self.height, self.width, self.threads))
        return self._loaded[1]

    def frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        """Yields the frames (uint8 [H,W,3]) in the order asked, each as soon as it is rendered."""
        run: list[int] = []
        segment = None
        for frame in indices:
            where, local = self.locate(frame)
            if run and where != segment:
                yield from self._render_run(segment, run)
                run = []
            segment = where
            run.append(local)
        if run:
            yield from self._render_run(segment, run)

    def _render_run(self, segment: int, local: list[int]) -> Iterator[np.ndarray]:
        with contextlib.closing(self.renderer(segment).frames(local)) as frames:
            yield from frames
