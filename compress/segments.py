"""A video file encoded in segments, read one segment at a time, with per-segment checkpoints.

Encoding memory is bounded by a segment, not by the video: each segment's frames are read
from the file through ffmpeg when it is encoded, and again when the finished file is measured.
:func:`plan_segments` cuts the clip; :func:`encode_owned` encodes the segments this process
owns (all of them, or a share under torchrun: :mod:`compress.parallel`), keeping each finished
segment in a :class:`SegmentStore` so that ``--resume`` skips it; rank 0 gathers them and
:func:`assemble_planned` makes the file.

Default segment length (:func:`default_segment_frames`): as many frames as keep the segment's
frames within :data:`SEGMENT_FLOAT_BYTES` as float32 RGB, and at most
:data:`MAX_SEGMENT_FRAMES`. The rule bounds the encoder's memory; it was not chosen by a
quality measurement (a longer segment shares one network over more frames, a shorter one
spends more header and more networks).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from compress.encode import CompressResult, SegmentEncoding, assemble, encode_segment, segment_spans
from compress.fit import FitInterrupted, save_checkpoint
from compress.parallel import SINGLE, Ranks
from compress.plan import duration_text
from pipeline.bitstream import SegmentSpan
from pipeline.config import CodecPreset, NetworkConfig
from pipeline.errors import InputError
from pipeline.geometry import resolve_network
from pipeline.networks import build_network, count_parameters
from pipeline.render import resolve_device
from pipeline.video_io import count_frames, probe_video, read_video

SEGMENT_FLOAT_BYTES = 2 * 1024**3
MAX_SEGMENT_FRAMES = 300
STORE_VERSION = 1


def default_segment_frames(width: int, height: int) -> int:
    """The default segment length for frames of ``width`` x ``height`` (see the module's text)."""
    return max(1, min(MAX_SEGMENT_FRAMES, SEGMENT_FLOAT_BYTES // (width * height * 3 * 4)))


@dataclass(frozen=True)
class SegmentPlan:
    """The clip to encode (frames ``first_frame ..`` of ``source``) and its segments."""

    source: Path
    first_frame: int
    num_frames: int
    width: int
    height: int
    fps: float
    size: tuple[int, int] | None  # resize while reading
    spans: tuple[SegmentSpan, ...]
    other_streams: tuple[str, ...]

    def read(self, span: SegmentSpan) -> np.ndarray:
        """The frames of one segment, read from the source."""
        first = self.first_frame + span.first
        frames = read_video(self.source, frame_range=(first, first + span.count), size=self.size).frames
        if len(frames) != span.count:
            raise InputError(f"{self.source}: frames {first}:{first + span.count} gave {len(frames)} frames, not "
                             f"{span.count}; did the file change during the encode?")
        return frames


def plan_segments(source: Path, preset: CodecPreset, *, frame_range: tuple[int, int | None] | None = None,
                  size: tuple[int, int] | None = None, segment_frames: int | None = None
                  ) -> tuple[SegmentPlan, np.ndarray | None]:
    """Cuts the clip into segments of ``segment_frames`` (None: the default length).

    Returns the plan and, when the clip is one segment, its frames (read once, as a whole);
    a longer clip is counted by decoding it without keeping frames, and read per segment later.
    An unservable size is refused from the probe, before anything is decoded.
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
    if len(video.frames) <= length:
        plan = SegmentPlan(source, start, len(video.frames), width, height, fps, size,
                           (SegmentSpan(0, len(video.frames)),), others)
        return plan, video.frames
    del video
    total = count_frames(source)
    num_frames = min(total, stop if stop is not None else total) - start
    spans = tuple(segment_spans(num_frames, length))
    return SegmentPlan(source, start, num_frames, width, height, fps, size, spans, others), None


def _probed_size(source: Path) -> tuple[int, int]:
    probed = probe_video(source)
    return probed.width, probed.height


def network_for(plan: SegmentPlan, preset: CodecPreset) -> NetworkConfig:
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


def notice_other_streams(plan: SegmentPlan) -> None:
    """One line saying that streams other than the video are not encoded."""
    if plan.other_streams:
        kinds = ", ".join(dict.fromkeys(plan.other_streams))
        print(f"note: {plan.source} also holds {kinds} streams; only the video is encoded", file=sys.stderr)


class SegmentStore:
    """The checkpoint folder of a segmented encode: one file per finished segment and the fit
    checkpoint of each segment in progress, all keyed by the run (preset, network, source,
    its clip and segments, device type and time budget), so that another run is never taken
    for this one."""

    def __init__(self, folder: Path, run_key: str):
        self.folder = folder
        self.run_key = run_key

    @staticmethod
    def key_of(plan: SegmentPlan, preset: CodecPreset, network: NetworkConfig, device: torch.device,
               time_budget: float | None) -> str:
        stat = plan.source.stat()
        described = {
            "version": STORE_VERSION, "preset": asdict(preset), "network": asdict(network),
            "source": [str(plan.source.resolve()), stat.st_size, stat.st_mtime_ns],
            "clip": [plan.first_frame, plan.num_frames, plan.width, plan.height, plan.fps, plan.size],
            "spans": [[s.first, s.count] for s in plan.spans], "device": device.type, "time_budget": time_budget,
        }
        return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()

    @property
    def _manifest(self) -> Path:
        return self.folder / "run.json"

    def open(self, resume: bool) -> None:
        """Checks that ``resume`` continues this run; creates the folder for a new one."""
        if resume:
            if not self._manifest.exists():
                raise InputError(f"--resume: no checkpoint {self.folder} to resume from")
            try:
                key = json.loads(self._manifest.read_text()).get("run")
            except (OSError, ValueError, AttributeError):
                key = None
            if key != self.run_key:
                raise InputError(f"checkpoint {self.folder} belongs to a different input or configuration; "
                                 "delete it to start over")
            return
        self.folder.mkdir(exist_ok=True)
        tmp = self.folder / f".run.json.{id(self)}.tmp"  # several ranks may write it at once
        tmp.write_text(json.dumps({"run": self.run_key}) + "\n")
        tmp.replace(self._manifest)

    def _finished_file(self, index: int) -> Path:
        return self.folder / f"segment-{index:05d}.pt"

    def fit_checkpoint(self, index: int) -> Path:
        return self.folder / f"segment-{index:05d}.fit.ckpt"

    def finished(self, index: int) -> SegmentEncoding | None:
        """Segment ``index`` as an earlier run of this encode finished it, or None."""
        path = self._finished_file(index)
        if not path.exists():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=False)
        except Exception:  # noqa: BLE001 - damaged: encode the segment again
            return None
        if not isinstance(entry, dict) or entry.get("key") != self._segment_key(index):
            return None
        encoding = entry.get("encoding")
        return encoding if isinstance(encoding, SegmentEncoding) else None

    def keep(self, index: int, encoding: SegmentEncoding) -> None:
        """Stores a finished segment (atomically) and drops its fit checkpoint."""
        save_checkpoint(self._finished_file(index), {"key": self._segment_key(index), "encoding": encoding})
        self.fit_checkpoint(index).unlink(missing_ok=True)

    def forget(self, indices) -> None:
        """Removes these segments' files (the file they went into is written)."""
        for index in indices:
            self._finished_file(index).unlink(missing_ok=True)
            self.fit_checkpoint(index).unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _segment_key(self, index: int) -> str:
        return hashlib.sha256(f"{self.run_key}/{index}".encode()).hexdigest()


class SegmentProgress:
    """Lines on stderr as segments finish: how many of how many, and the time left."""

    def __init__(self, plan: SegmentPlan, owned: list[int], ranks: Ranks, enabled: bool):
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


def encode_owned(plan: SegmentPlan, preset: CodecPreset, store: SegmentStore, *, device: str = "auto",
                 resume: bool = False, progress: bool = True, fit_cache: Path | None = None,
                 time_budget: float | None = None, ranks: Ranks = SINGLE) -> list[tuple[int, SegmentEncoding]]:
    """Encodes the segments of ``plan`` that this process owns, each read from the source when
    its turn comes and kept in ``store`` (open) when done; with ``resume``, those the store
    holds are taken from it. Returns (index, encoding) pairs. See
    :func:`compress.encode.compress_frames` for the options; ``time_budget`` is shared out
    among the segments by their frames."""
    dev = resolve_device(device)
    network = network_for(plan, preset)
    source_id = str(plan.source.resolve())
    owned = [i for i in range(len(plan.spans)) if ranks.owns(i)]
    shown = SegmentProgress(plan, owned, ranks, progress)
    encoded = []
    for index in owned:
        span = plan.spans[index]
        if resume and (done := store.finished(index)) is not None:
            encoded.append((index, done))
            shown.finished(index, None)
            continue
        started = time.perf_counter()
        budget = None if time_budget is None else time_budget * span.count / plan.num_frames
        try:
            encoding = encode_segment(plan.read(span), preset, network, span, index=index, device=dev,
                                      progress=progress and ranks.leader, fit_cache=fit_cache,
                                      checkpoint=store.fit_checkpoint(index), resume=resume, source_id=source_id,
                                      time_budget=budget)
        except (FitInterrupted, KeyboardInterrupt):  # wherever it lands, the finished segments are kept
            raise FitInterrupted(store.folder) from None
        store.keep(index, encoding)
        encoded.append((index, encoding))
        shown.finished(index, time.perf_counter() - started)
    return encoded


def assemble_planned(plan: SegmentPlan, preset: CodecPreset, encoded: list[tuple[int, SegmentEncoding]], *,
                     device: str = "auto", time_budget: float | None = None, started: float,
                     target=None) -> tuple[bytes, CompressResult]:
    """The file of all the segments (``encoded``: (index, encoding) pairs in any order), measured
    on segments read again from the source; ``started`` (``time.perf_counter()``) times it."""
    if sorted(index for index, _ in encoded) != list(range(len(plan.spans))):
        raise RuntimeError("the encoded segments do not cover the clip")
    segments = [encoding for _, encoding in sorted(encoded, key=lambda pair: pair[0])]
    data, result = assemble(segments, network_for(plan, preset), plan.width, plan.height, plan.num_frames, plan.fps,
                            plan.read, resolve_device(device),
                            target_bytes=target.bytes if target is not None else None)
    codec = preset.codec
    return data, replace(result, preset=preset.name, quality=codec.quality, bits=codec.bits,
                         prune_ratio=codec.prune_ratio, seconds=time.perf_counter() - started,
                         time_budget=time_budget)


def finish_store(store: SegmentStore, plan: SegmentPlan, ranks: Ranks, written: bool) -> None:
    """After rank 0's write (``written`` on rank 0 only): every rank removes its segments' files,
    and each machine's checkpoint folder goes; kept, all of it, when the write failed."""
    if not ranks.from_leader(written):
        return
    store.forget(i for i in range(len(plan.spans)) if ranks.owns(i))
    ranks.barrier()
    if ranks.local_rank == 0:
        store.remove()
