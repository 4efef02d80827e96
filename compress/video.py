"""The encoder's entry points: :func:`compress_video` (a file in, a ``.bin`` out) and
:func:`compress_frames` (frames in memory, bytes out), one path for both.

A clip is a plan of segments (:class:`compress.segments.ClipPlan`; a short clip is a plan of one).
:func:`encode_clip` chooses the network for a rate target, encodes the segments this process
owns (:func:`compress.segments.encode_owned`), gathers them on rank 0 and makes the file
(:func:`compress.assemble.assemble`); its result is the one that is printed and reported.
"""

from __future__ import annotations

import resource
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from compress import segments as cut
from compress.assemble import assemble
from compress.encode import SegmentRate, plan_segment, segment_seed
from compress.fit import Clip, FitInterrupted
from compress.parallel import SINGLE, Ranks
from compress.persist import FitCache, SegmentStore, run_key
from compress.plan import plan_lines
from compress.ratecontrol import RatePlan, RateRequest, RateTarget, preset_for_target
from compress.result import ENCODER_NAME, CompressResult
from pipeline.bitstream import SegmentSpan, StreamHeader, write_bitstream
from pipeline.config import CodecPreset, NetworkConfig, section_to_dict
from pipeline.errors import InputError
from pipeline.files import check_output_path, write_atomically
from pipeline.networks import build_network
from pipeline.render import resolve_device
from pipeline.stages import StageTimer


def _checked_frames(frames: np.ndarray, fps: float) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise InputError(f"expected uint8 RGB frames [T,H,W,3], got {getattr(frames, 'dtype', type(frames))} "
                         f"{getattr(frames, 'shape', '')}")
    if frames.shape[0] < 1:
        raise InputError("no frames to compress")
    if not (fps > 0 and np.isfinite(fps)):
        raise InputError(f"the frame rate must be a positive number, got {fps!r}")
    return frames


def _check_budget(time_budget: float | None) -> None:
    if time_budget is not None and not (time_budget > 0 and np.isfinite(time_budget)):
        raise InputError(f"the time budget must be a positive number of seconds, got {time_budget!r}")


def _chosen_for_target(clip: cut.ClipPlan, preset: CodecPreset, target: RateTarget | None, scale_width: bool,
                       progress: bool, leader: bool):
    """The preset rate control chose for ``target`` (one width and quality for all segments)."""
    if target is None:
        return preset, None
    preset, plan = preset_for_target(preset, target, clip.width, clip.height, clip.spans[0].count, len(clip.spans),
                                     scale_width)
    if leader and plan.notice:
        print(plan.notice, file=sys.stderr)
    if progress and leader:
        print(plan.describe(len(clip.spans)), file=sys.stderr)
    return preset, plan


def _segment_rates(clip: cut.ClipPlan, network: NetworkConfig, rate_plan: RatePlan | None):
    """Each segment's share of the target (by its frames), measured as a file of that segment alone."""
    if rate_plan is None:
        return None
    one = len(clip.spans) == 1
    header = StreamHeader(network, clip.width, clip.height, clip.num_frames if one else clip.spans[0].count, clip.fps,
                          ENCODER_NAME)
    overhead = (rate_plan.target.bytes - rate_plan.weight_bytes) // len(clip.spans)

    def size_of(coded) -> int:
        return len(write_bitstream(header, coded)[0])

    def rate_of(span: SegmentSpan) -> SegmentRate:
        return SegmentRate(size_of, overhead + round(rate_plan.weight_bytes * span.count / clip.num_frames), overhead,
                           calibrate_steps=one)

    return rate_of


def encode_clip(clip: cut.ClipPlan, preset: CodecPreset, *, store: SegmentStore | None = None,
                device: torch.device, progress: bool = True, fit_cache: FitCache | None = None,
                resume: bool = False, time_budget: float | None = None, ranks: Ranks = SINGLE,
                target: RateTarget | None = None, scale_width: bool = True,
                rate_plan=None, started: float | None = None) -> tuple[bytes, CompressResult] | None:
    """The file of a clip and its measured result (rank 0); None on the other ranks.

    ``preset`` is the one to run (rate control already applied when ``rate_plan`` is given).
    ``time_budget`` counts from ``started`` (a ``time.perf_counter()`` value; default: now).
    """
    started = time.perf_counter() if started is None else started
    if rate_plan is None:
        preset, rate_plan = _chosen_for_target(clip, preset, target, scale_width, progress, ranks.leader)
    target_bytes = rate_plan.target.bytes if rate_plan is not None else None
    network = cut.network_for(clip, preset)
    encoded = cut.encode_owned(clip, preset, network, store, device=device, resume=resume, progress=progress,
                               fit_cache=fit_cache, ranks=ranks, rate_of=_segment_rates(clip, network, rate_plan),
                               deadline=None if time_budget is None else started + time_budget)
    gathered = ranks.gather(encoded)
    if gathered is None:
        return None
    if sorted(index for index, _ in gathered) != list(range(len(clip.spans))):
        raise RuntimeError("the encoded segments do not cover the clip")
    ordered = [encoding for _, encoding in sorted(gathered, key=lambda pair: pair[0])]
    data, result = assemble(ordered, network, clip.width, clip.height, clip.num_frames, clip.fps, clip.read, device,
                            target_bytes=target_bytes)
    codec = preset.codec
    result = replace(result, preset=preset.name, quality=codec.quality, bits=codec.bits,
                     prune_ratio=codec.prune_ratio, seconds=time.perf_counter() - started, time_budget=time_budget,
                     peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    if rate_plan is not None:
        result = replace(result, width_factor=rate_plan.width, target_asked=rate_plan.target.asked,
                         notices=[rate_plan.notice] if rate_plan.notice else [])
    return data, result


def _store_for(folder: Path, clip: cut.ClipPlan, preset: CodecPreset, device: torch.device,
               time_budget: float | None, target: RateTarget | None) -> SegmentStore:
    key = run_key(list(clip.identity), preset, cut.network_for(clip, preset), clip.spans, device, time_budget)
    codec_key = repr((section_to_dict(preset.codec), target.bytes if target is not None else None))
    return SegmentStore(folder, key, codec_key)


def compress_frames(
    frames: np.ndarray,
    fps: float,
    preset: CodecPreset,
    *,
    device: str = "auto",
    progress: bool = True,
    fit_cache: Path | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    source_id: str = "",
    time_budget: float | None = None,
    segment_frames: int | None = None,
    target: RateTarget | None = None,
    scale_width: bool = True,
) -> tuple[bytes, CompressResult]:
    """Compresses uint8 RGB frames [T,H,W,3] and returns the bitstream's bytes and the measured result.

    Writes no output file. The reported quality is measured on the frames rendered from the
    weights decoded from the returned bytes, exactly what ``enerv-decompress`` will produce.

    ``checkpoint``: the checkpoint folder (:mod:`compress.persist`; fitting checkpoints every
    minute, and on Ctrl-C or SIGTERM, which raise :class:`~compress.fit.FitInterrupted`, and
    finished segments); it is left for the caller to remove once the bytes are safely stored.
    ``resume`` continues from it; resuming from a finished fit with other codec settings
    re-runs only the codec stages. ``fit_cache``: a folder of fitted networks, keyed by the
    fit's fingerprint (network and fit settings, ``source_id``, the frames) and the device; a
    fit found there is not run again (``fit_reused``), and a fit that runs is stored there.
    Calls that differ only in the ``codec`` section thus share one fit. ``source_id`` names the
    source, so that neither a checkpoint nor a cached fit is taken for another source's.
    ``time_budget`` (seconds): the epochs are laid over it from steps timed on this device and
    re-planned from the measured pace as training goes. ``segment_frames``: cut the clip into
    segments of that many frames, each its own network (None: one segment). ``target``: a file
    size to land on (:mod:`compress.ratecontrol`): the network's width (unless not
    ``scale_width``) and the quality knob are chosen for it, and every quantization step is
    then scaled by one factor so that the file lands on it.
    """
    started = time.perf_counter()
    frames = _checked_frames(frames, fps)
    _check_budget(time_budget)
    clip = cut.frames_clip(frames, fps, segment_frames, source_id)
    dev = resolve_device(device)
    preset, rate_plan = _chosen_for_target(clip, preset, target, scale_width, progress, True)
    store = None
    if checkpoint is not None:
        store = _store_for(Path(checkpoint), clip, preset, dev, time_budget, target)
        store.open(resume)
    elif resume:
        raise ValueError("resume needs the checkpoint's path")
    encoded = encode_clip(clip, preset, store=store, device=dev, progress=progress,
                          fit_cache=FitCache(fit_cache) if fit_cache is not None else None, resume=resume,
                          time_budget=time_budget, target=target, scale_width=scale_width, rate_plan=rate_plan,
                          started=started)
    return encoded


def compress_video(
    source: str | Path,
    output: str | Path,
    preset: CodecPreset,
    *,
    frame_range: tuple[int, int | None] | None = None,
    size: tuple[int, int] | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
    fit_cache: Path | None = None,
    time_budget: float | None = None,
    segment_frames: int | None = None,
    ranks: Ranks = SINGLE,
    rate: RateRequest | None = None,
    dry_run: bool = False,
    scene_cuts: bool = False,
) -> CompressResult | None:
    """Reads a video, compresses it and writes the ``.bin`` atomically.

    The clip is cut into segments (:func:`compress.segments.plan_segments`: one when the clip is
    short, of ``segment_frames`` frames when given), read one at a time, so memory is bounded by
    a segment. Checkpoints go to the folder ``OUTPUT.ckpt.d`` (one file per finished segment and
    the fitting checkpoint of the one in progress), which ``resume`` continues and which is
    removed once the file is written. ``ranks`` (:mod:`compress.parallel`): this process's share
    of the segments in a torchrun job; rank 0 writes the file and returns the result, the other
    ranks return None. ``rate``: a target, resolved with the video's size, length and frame rate
    (one network width and quality for all segments, one step factor over the whole file).
    ``dry_run``: print the plan and return None, writing nothing. ``scene_cuts``: segment
    boundaries at shot changes (:func:`compress.segments.plan_segments`).
    """
    started = time.perf_counter()  # a time budget counts the whole command, reading included
    source, output = Path(source), Path(output)
    check_output_path(output, [source])
    _check_budget(time_budget)
    timer = StageTimer()
    with timer.stage("read"):
        clip = cut.plan_segments(source, preset, frame_range=frame_range, size=size, segment_frames=segment_frames,
                                 scene_cuts=scene_cuts)
    if ranks.leader:
        cut.notice_other_streams(clip)
    target = rate.target(clip.width, clip.height, clip.num_frames, clip.fps) if rate is not None else None
    dev = resolve_device(device)
    preset, rate_plan = _chosen_for_target(clip, preset, target, True, progress or dry_run, ranks.leader)
    if dry_run:
        if ranks.leader:
            for line in plan_clip(clip, preset, device=dev, time_budget=time_budget):
                print(line, file=sys.stderr)
        return None
    network = cut.network_for(clip, preset)
    cut.check_disk_space(output.parent, cut.parameters_of(network), len(clip.spans), ranks.local_world)
    store = _store_for(output.with_name(output.name + ".ckpt.d"), clip, preset, dev, time_budget, target)
    store.open(resume)
    written = False
    try:
        encoded = encode_clip(clip, preset, store=store, device=dev, progress=progress,
                              fit_cache=FitCache(fit_cache) if fit_cache is not None else None, resume=resume,
                              time_budget=time_budget, ranks=ranks, rate_plan=rate_plan, started=started)
        if encoded is not None:
            data, result = encoded
            with timer.stage("write"):
                write_atomically(output, data)
            written = True
    except FitInterrupted:
        raise  # the folder is what --resume continues from
    except BaseException:
        if ranks.world == 1 and store.holds_nothing():  # nothing to resume from: leave nothing behind
            store.remove()
        raise
    finally:
        cut.finish_store(store, clip, ranks, written)
    if encoded is None:
        return None
    stages = {"read": round(timer.seconds["read"], 3), **result.stage_seconds,
              "write": round(timer.seconds["write"], 3)}
    return replace(result, output=str(output), seconds=time.perf_counter() - started, stage_seconds=stages)


def plan_clip(clip: cut.ClipPlan, preset: CodecPreset, *, device: torch.device,
              time_budget: float | None = None) -> list[str]:
    """The plan of an encode (``--dry-run``), from steps timed on this device on the first
    segment; no fitting. ``preset``: rate control already applied."""
    span = clip.spans[0]
    frames = clip.read(span)
    torch.manual_seed(segment_seed(preset.fit.seed, 0))
    model = build_network(cut.network_for(clip, preset)).to(device)
    share = None if time_budget is None else time_budget * span.count / clip.num_frames
    plan = plan_segment(model, Clip.from_numpy(frames, device), preset, time_budget=share)
    lines = plan_lines(preset, plan.epochs, plan.parameters, span.count, clip.width, clip.height, device, plan.steps,
                       plan.estimate * clip.num_frames / span.count, time_budget)
    if len(clip.spans) > 1:
        lines.append(f"plan: {len(clip.spans)} segments of up to {span.count} frames, each its own network")
    return lines
