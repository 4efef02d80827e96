"""``compress_video``: a file in, a ``.bin`` out, in segments read one at a time when the clip is long."""

from __future__ import annotations

import sys
import time
from dataclasses import replace
from pathlib import Path

from compress import segments as cut
from compress.encode import (
    CompressResult,
    _require_checkpoint,
    compress_frames,
    plan_encode,
    preset_for_target,
)
from compress.parallel import SINGLE, Ranks
from compress.ratecontrol import RateRequest
from pipeline.config import CodecPreset
from pipeline.files import check_output_path, write_atomically
from pipeline.render import resolve_device
from pipeline.stages import StageTimer


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
) -> CompressResult | None:
    """Reads a video, compresses it and writes the ``.bin`` atomically.

    The clip is cut into segments of ``segment_frames`` frames (None: one segment when the clip
    is short, else the memory-bound default of :func:`compress.segments.default_segment_frames`).
    One segment is read whole and goes through :func:`compress_frames`; its fitting checkpoint is
    ``OUTPUT.ckpt``. Longer clips are read one segment at a time (:mod:`compress.segments`), so
    memory is bounded by a segment; their checkpoints are the folder ``OUTPUT.ckpt.d``, one file
    per finished segment, which ``resume`` skips. Checkpoints are removed once the file is
    written. ``ranks`` (:mod:`compress.parallel`): this process's share of the segments in a
    torchrun job; rank 0 writes the file and returns the result, the other ranks return None.
    ``rate``: a target, resolved with the video's size, length and frame rate (one network
    width and quality for all segments, one step factor over the whole file). ``dry_run``:
    print the plan and return None, writing nothing.
    """
    source, output = Path(source), Path(output)
    check_output_path(output, [source])
    timer = StageTimer()
    with timer.stage("read"):
        plan, frames = cut.plan_segments(source, preset, frame_range=frame_range, size=size,
                                         segment_frames=segment_frames)
    if ranks.leader:
        cut.notice_other_streams(plan)
    target = rate.target(plan.width, plan.height, plan.num_frames, plan.fps) if rate is not None else None
    if dry_run:
        if ranks.leader:
            sample = frames if frames is not None else plan.read(plan.spans[0])
            for line in plan_encode(sample, preset, device=device, time_budget=time_budget, target=target,
                                    segments=len(plan.spans), total_frames=plan.num_frames):
                print(line, file=sys.stderr)
        return None
    rate_plan = None
    if target is not None and frames is None:  # several segments: one width and quality for all
        preset, rate_plan = preset_for_target(preset, target, plan.width, plan.height, plan.spans[0].count,
                                              len(plan.spans))
        if progress and ranks.leader:
            print(f"rate: target {target.asked} = {target.bytes:,} bytes; network width x{rate_plan.width:g} "
                  f"({rate_plan.parameters:,} parameters a segment), quality {rate_plan.quality:g}", file=sys.stderr)
    network = cut.network_for(plan, preset)
    cut.check_disk_space(output.parent, cut.parameters_of(network), len(plan.spans), ranks.local_world)
    if frames is not None:
        if not ranks.leader:
            return None
        checkpoint = output.with_name(output.name + ".ckpt")
        if resume:
            _require_checkpoint(checkpoint)
        data, result = compress_frames(frames, plan.fps, preset, device=device, progress=progress,
                                       fit_cache=fit_cache, checkpoint=checkpoint, resume=resume,
                                       source_id=str(source.resolve()), time_budget=time_budget, target=target)
        with timer.stage("write"):
            write_atomically(output, data)
        checkpoint.unlink(missing_ok=True)
    else:
        store = cut.SegmentStore(output.with_name(output.name + ".ckpt.d"),
                                 cut.SegmentStore.key_of(plan, preset, network, resolve_device(device), time_budget))
        store.open(resume)
        started = time.perf_counter()
        encoded = cut.encode_owned(plan, preset, store, device=device, resume=resume, progress=progress,
                                   fit_cache=fit_cache, time_budget=time_budget, ranks=ranks)
        gathered = ranks.gather(encoded)
        written = False
        try:
            if gathered is not None:
                data, result = cut.assemble_planned(plan, preset, gathered, device=device, time_budget=time_budget,
                                                    started=started, target=target)
                if rate_plan is not None:
                    result = replace(result, width_factor=rate_plan.width, target_asked=target.asked)
                with timer.stage("write"):
                    write_atomically(output, data)
                written = True
        finally:
            cut.finish_store(store, plan, ranks, written)
        if gathered is None:
            return None
    stages = {"read": round(timer.seconds["read"], 3), **result.stage_seconds,
              "write": round(timer.seconds["write"], 3)}
    return replace(result, output=str(output), seconds=result.seconds + timer.total, stage_seconds=stages)


