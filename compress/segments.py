"""A clip cut into segments, each its own network, encoded one at a time with per-segment checkpoints.

Every encode goes this way, one segment or many, from a file or from frames in memory:
:func:`plan_segments` (a file) or :func:`frames_clip` (an array) make a :class:`ClipPlan` (the
clip, its segments, how to read one), and :func:`encode_owned` encodes the segments this
process owns (all of them, or a share under torchrun: :mod:`compress.parallel`), each read when
its turn comes and kept in the checkpoint folder (:class:`compress.persist.SegmentStore`) when
done, so that ``--resume`` skips it. Encoding memory is thus bounded by a segment, not by the
video; the finished file is measured a segment at a time too (:mod:`compress.assemble`).

Default segment length: the clip is cut into as few segments as keep each one's frames within
:data:`SEGMENT_FLOAT_BYTES` as float32 RGB and at most :data:`MAX_SEGMENT_FRAMES` frames
(:func:`default_segment_frames`), of balanced lengths (280 frames with a bound of 194: two of
140). The rule bounds the encoder's memory; it was not chosen by a quality measurement (a
longer segment shares one network over more frames, a shorter one spends more header and
more networks). ``--segment-frames N`` cuts segments of exactly N frames, the last one shorter.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compress.encode import SegmentEncoding, SegmentRate, encode_segment
from compress.fit import FitInterrupted
from compress.parallel import SINGLE, Ranks
from compress.persist import FitCache, SegmentStore
from compress.plan import duration_text
from compress.scenes import detect_cuts, segment_bounds
from pipeline.bitstream import SegmentSpan
from pipeline.config import CodecPreset, NetworkConfig
from pipeline.errors import InputError
from pipeline.geometry import resolve_network
from pipeline.networks import build_network, count_parameters
from pipeline.video_io import count_frames, probe_video, read_video

SEGMENT_FLOAT_BYTES = 2 * 1024**3
MAX_SEGMENT_FRAMES = 300


def default_segment_frames(width: int, height: int) -> int:
    """The default segment length for frames of ``width`` x ``height`` (see the module's text)."""
    return max(1, min(MAX_SEGMENT_FRAMES, SEGMENT_FLOAT_BYTES // (width * height * 3 * 4)))


def segment_spans(num_frames: int, segment_frames: int | None) -> list[SegmentSpan]:
    """Consecutive segments of ``segment_frames`` frames (the last one shorter); one without a length."""
    if segment_frames is None or segment_frames >= num_frames:
        return [SegmentSpan(0, num_frames)]
    if segment_frames < 1:
        raise InputError(f"a segment needs at least one frame, got {segment_frames}")
    return [SegmentSpan(first, min(segment_frames, num_frames - first))
            for first in range(0, num_frames, segment_frames)]


def balanced_spans(num_frames: int, max_frames: int) -> list[SegmentSpan]:
    """As few segments as keep each within ``max_frames``, of lengths that differ by one at most
    (the longer ones first)."""
    count = max(1, math.ceil(num_frames / max_frames))
    base, longer = divmod(num_frames, count)
    spans, first = [], 0
    for index in range(count):
        length = base + (1 if index < longer else 0)
        spans.append(SegmentSpan(first, length))
        first += length
    return spans


@dataclass(frozen=True)
class ClipPlan:
    """The clip to encode, its segments and how to read one.

    ``read_frames(first, stop)`` gives the clip's frames ``first .. stop - 1``; ``identity``
    names the clip for the checkpoint folder's run key; ``source_id`` names the source in fit
    fingerprints, so that a checkpoint or a cached fit is never taken for another source's.
    """

    source_id: str
    identity: tuple
    num_frames: int
    width: int
    height: int
    fps: float
    spans: tuple[SegmentSpan, ...]
    read_frames: Callable[[int, int], np.ndarray]
    other_streams: tuple[str, ...] = ()

    def read(self, span: SegmentSpan) -> np.ndarray:
        """The frames of one segment."""
        frames = self.read_frames(span.first, span.stop)
        if len(frames) != span.count:
            raise InputError(f"{self.source_id}: frames {span.first}:{span.stop} gave {len(frames)} frames, not "
                             f"{span.count}; did the file change during the encode?")
        return frames


def frames_clip(frames: np.ndarray, fps: float, segment_frames: int | None = None, source_id: str = "") -> ClipPlan:
    """Frames in memory as a clip, cut into segments of ``segment_frames`` (None: one segment)."""
    T, H, W = frames.shape[:3]
    sample = hashlib.sha256(np.ascontiguousarray(frames[:: max(1, T // 8)]).tobytes()).hexdigest()
    identity = ("frames", source_id, T, W, H, fps, sample)
    return ClipPlan(source_id, identity, T, W, H, fps, tuple(segment_spans(T, segment_frames)),
                    lambda first, stop: frames[first:stop])


SCENE_MIN_FRAMES = 24  # with --scene-cuts, shots shorter than this join a neighbour


def plan_segments(source: Path, preset: CodecPreset, *, frame_range: tuple[int, int | None] | None = None,
                  size: tuple[int, int] | None = None, segment_frames: int | None = None,
                  scene_cuts: bool = False) -> ClipPlan:
    """Cuts the clip of a file into segments of ``segment_frames`` (None: the default length,
    balanced).

    A clip of one segment is read once, as a whole, and its plan holds the frames; a longer clip
    is counted by decoding it without keeping frames, and read per segment later. An
    unservable size is refused from the probe, before anything is decoded. ``scene_cuts``: the
    boundaries go to shot changes (:mod:`compress.scenes`), segments of
    :data:`SCENE_MIN_FRAMES` to the segment length (shots too long are split evenly).
    """
    if segment_frames is not None and segment_frames < 1:
        raise InputError(f"--segment-frames must be at least 1, got {segment_frames}")
    width, height = size if size is not None else _probed_size(source)
    resolve_network(preset.network, width, height)
    length = segment_frames or default_segment_frames(width, height)
    start, stop = frame_range if frame_range is not None else (0, None)
    # A clip no longer than a segment is read whole, as one array (the bytes of a one-segment
    # file are those of compress_frames on that array); otherwise one frame more than a segment
    # tells that it is longer, and only then is the clip counted.
    if stop is not None and stop - start <= length:
        video = read_video(source, frame_range=frame_range, size=size)
    else:
        video = read_video(source, frame_range=(start, start + length + 1), size=size)
    fps, others = video.info.fps, video.info.other_streams
    stat = source.stat()
    source_id = str(source.resolve())

    def identity(num_frames: int) -> tuple:
        return (source_id, stat.st_size, stat.st_mtime_ns, start, num_frames, width, height, fps, size)

    cuts = []
    if scene_cuts:
        cuts = detect_cuts(source, frame_range=frame_range)
    if len(video.frames) <= length and not cuts:
        frames = video.frames
        return ClipPlan(source_id, identity(len(frames)), len(frames), width, height, fps,
                        (SegmentSpan(0, len(frames)),), lambda first, stop: frames[first:stop], others)
    del video
    total = count_frames(source)
    num_frames = min(total, stop if stop is not None else total) - start
    if scene_cuts:
        shortest = max(1, min(SCENE_MIN_FRAMES, (length + 1) // 2))
        spans = [SegmentSpan(first, count) for first, count in segment_bounds(num_frames, cuts, shortest, length)]
    elif segment_frames:
        spans = segment_spans(num_frames, length)
    else:
        spans = balanced_spans(num_frames, length)

    def read(first: int, stop: int) -> np.ndarray:
        return read_video(source, frame_range=(start + first, start + stop), size=size).frames

    return ClipPlan(source_id, identity(num_frames), num_frames, width, height, fps, tuple(spans), read, others)


def _probed_size(source: Path) -> tuple[int, int]:
    probed = probe_video(source)
    return probed.width, probed.height


def network_for(plan: ClipPlan, preset: CodecPreset) -> NetworkConfig:
    """The network of every segment: resolved for the frame size and the nominal segment length."""
    return resolve_network(preset.network, plan.width, plan.height, plan.spans[0].count)


def parameters_of(network: NetworkConfig) -> int:
    """The parameter count of ``network``, without allocating its weights."""
    with torch.device("meta"):
        return count_parameters(build_network(network))


def check_disk_space(folder: Path, parameters: int, segments: int, processes_here: int) -> None:
    """Refuses to start when the disk cannot hold the output and the checkpoints.

    A generous estimate per parameter: the file at most 4 bytes (32-bit symbols before entropy
    coding); a finished segment 12 (its float32 weights, int32 symbols, masks); a fit
    checkpoint 48 (weights, Adam's two moments, the best and the last epoch's states), twice
    while it is replaced, for each process encoding on this machine at once.
    """
    needed = parameters * (segments * (4 + 12) + processes_here * 2 * 48) + (1 << 20)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise InputError(f"not enough disk space in {folder}: {free / 2**20:,.0f} MiB free, the output and its "
                         f"checkpoints may need up to {needed / 2**20:,.0f} MiB")


def notice_other_streams(plan: ClipPlan) -> None:
    """One line saying that streams other than the video are not encoded."""
    if plan.other_streams:
        kinds = ", ".join(dict.fromkeys(plan.other_streams))
        print(f"note: {plan.source_id} also holds {kinds} streams; only the video is encoded", file=sys.stderr)


class SegmentProgress:
    """Lines on stderr as segments finish: how many of how many, and the time left."""

    def __init__(self, plan: ClipPlan, owned: list[int], ranks: Ranks, enabled: bool):
        self.plan, self.ranks, self.enabled = plan, ranks, enabled
        self.frames_left = sum(plan.spans[i].count for i in owned)
        self.owned, self.done = len(owned), 0
        self.encoded_frames, self.encoded_seconds = 0, 0.0

    def finished(self, index: int, seconds: float | None) -> None:
        """Segment ``index`` is done: encoded in ``seconds``, or None: taken from the checkpoint."""
        span = self.plan.spans[index]
        self.done += 1
        self.frames_left -= span.count
        if seconds is not None:
            self.encoded_frames += span.count
            self.encoded_seconds += seconds
        if not self.enabled:
            return
        total = len(self.plan.spans)
        how = "taken from the checkpoint" if seconds is None else f"encoded in {duration_text(seconds)}"
        whose = "segments" if self.ranks.world == 1 else "of this rank's segments"
        line = f"{self.ranks.label}segment {index + 1}/{total} (frames {span.first}:{span.stop}) {how}; " \
               f"{self.done}/{self.owned} {whose} done"
        if self.frames_left and self.encoded_frames:
            line += f", about {duration_text(self.encoded_seconds / self.encoded_frames * self.frames_left)} left"
        print(line, file=sys.stderr)


def encode_owned(clip: ClipPlan, preset: CodecPreset, network: NetworkConfig, store: SegmentStore | None, *,
                 device: torch.device, resume: bool = False, progress: bool = True, fit_cache: FitCache | None = None,
                 deadline: float | None = None, ranks: Ranks = SINGLE,
                 rate_of: Callable[[SegmentSpan], SegmentRate] | None = None) -> list[tuple[int, SegmentEncoding]]:
    """Encodes the segments of ``clip`` that this process owns, each read when its turn comes and
    kept in ``store`` (open; None: nothing is kept) when done; with ``resume``, those the store
    holds are taken from it. Returns (index, encoding) pairs. ``deadline`` (a
    ``time.perf_counter()`` value: the whole encode's end) is shared out among this process's
    segments by their frames, each taking its share of the time left when it starts; ``rate_of(span)``:
    a segment's share of a rate target (see :func:`compress.encode.encode_segment`)."""
    owned = [i for i in range(len(clip.spans)) if ranks.owns(i)]
    shown = SegmentProgress(clip, owned, ranks, progress and len(clip.spans) > 1)
    # The budget is the whole encode's wall time. The file is measured at the end, so each
    # segment keeps time for the measurement still owed (the finished segments' frames, and on
    # rank 0 the other ranks'), and shares the rest with the segments left by their frames.
    owned_frames = sum(clip.spans[i].count for i in owned)
    owed = clip.num_frames - owned_frames if ranks.leader else 0
    frames_left = owned_frames
    encoded = []
    for index in owned:
        span = clip.spans[index]
        if resume and store is not None and (done := store.finished(index)) is not None:
            encoded.append((index, done))
            shown.finished(index, None)
            frames_left, owed = frames_left - span.count, owed + span.count
            continue
        started = time.perf_counter()
        budget = None
        if deadline is not None:
            budget = max(deadline - time.perf_counter(), 0.0) * (span.count + owed) / (frames_left + owed)
        try:
            encoding = encode_segment(clip.read(span), preset, network, span, index=index, device=device,
                                      progress=progress and ranks.leader, fit_cache=fit_cache,
                                      checkpoint=store.fit_checkpoint(index) if store is not None else None,
                                      resume=resume, source_id=clip.source_id, time_budget=budget,
                                      rate=rate_of(span) if rate_of is not None else None, measured_after=owed)
        except (FitInterrupted, KeyboardInterrupt):  # wherever it lands, the finished segments are kept
            raise FitInterrupted(store.folder if store is not None else None) from None
        frames_left, owed = frames_left - span.count, owed + span.count
        if store is not None:
            store.keep(index, encoding)
        encoded.append((index, encoding))
        shown.finished(index, time.perf_counter() - started)
    return encoded


def finish_store(store: SegmentStore, plan: ClipPlan, ranks: Ranks, written: bool) -> None:
    """After rank 0's write (``written`` on rank 0 only): every rank removes its segments' files,
    and each machine's checkpoint folder goes; kept, all of it, when the write failed."""
    if not ranks.from_leader(written):
        return
    store.forget(i for i in range(len(plan.spans)) if ranks.owns(i))
    ranks.barrier()
    if ranks.local_rank == 0:
        store.remove()
