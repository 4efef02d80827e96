"""Runs a plan: each point from the point cache, or measured by its codec and then cached."""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import multiprocessing
import time
from dataclasses import dataclass, field

from benchmarks.codec import RDPoint, SourceClip
from benchmarks.curves import curve_label
from benchmarks.enerv import ENeRV
from benchmarks.plan import Job, Plan
from benchmarks.point_cache import PointCache, PointRecord
from benchmarks.sources import FrameStore
from pipeline.epochs import EpochPlan


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


@dataclass
class RunRecords:
    """What a run produced: every point's record in plan order, which of them this run
    measured, and the wall time each codec took in this run."""

    records: list[PointRecord]
    measured: set[str] = field(default_factory=set)
    wall: dict[str, float] = field(default_factory=dict)


def point_row(job: Job, point: RDPoint, parallel_jobs: int, machine: dict, vmaf_note: str = "") -> dict:
    """The row of results.csv: the measured point and the run's bookkeeping."""
    row = {"video": job.video.name, "label": curve_label(point.codec, point.setting), "file": job.file,
           "key": job.key, "measured_at": now()}
    row.update(point.to_row())
    row["vmaf_model"] = point.vmaf_model or vmaf_note
    row.update({"config": json.dumps(point.config, sort_keys=True), "parallel_jobs": parallel_jobs,
                "source_pix_fmt": job.video.pix_fmt, "machine": json.dumps(machine)})
    return row


def _print_point(i: int, n: int, row: dict, cached: bool) -> None:
    print(f"[{i}/{n}] {row['video']} {row['label']} {row['point']}: {int(row['bytes']):,} bytes, "
          f"{row['bpp']:.4f} bpp, PSNR {row['psnr_rgb']:.2f} dB"
          + (f", VMAF {row['vmaf']:.2f}" if row.get("vmaf") is not None else "")
          + f", encode {row['encode_seconds']:.2f} s" + (" (cached)" if cached else ""), flush=True)


def dry_run(plan: Plan, cache: PointCache) -> int:
    print(f"enerv-bench dry run: {len(plan.jobs)} points into {plan.out}; nothing is encoded")
    todo = 0
    for i, job in enumerate(plan.jobs, 1):
        cached = not plan.settings.force and cache.load(job) is not None
        todo += not cached
        detail = ""
        if isinstance(job.codec, ENeRV):
            epochs = EpochPlan.of(job.codec.point_preset(job.point)).text
            budget = job.codec.budget_seconds
            detail = f" ({epochs} epochs" + (f", budget {budget:g} s" if budget else "") + ")"
        print(f"[{i}/{len(plan.jobs)}] {job.video.name} {curve_label(job.codec.name, job.codec.setting())} "
              f"{job.point.label}{detail}: {'cached' if cached else 'would run'}")
    print(f"{todo} to run, {len(plan.jobs) - todo} cached")
    for line in time_estimate(plan):
        print(line)
    return 0


def _minutes(seconds: float) -> str:
    return f"{seconds:,.0f} s ({seconds / 60:,.1f} min)"


def time_estimate(plan: Plan) -> list[str]:
    """The dry run's time estimate: each budget times its E-NeRV points (every clip, cached or not), and
    the anchors' points, which have no estimate. A point's encode time counts its shared fit in full, so
    points that share a fit take less wall time than their budgets' sum; a point can also run over."""
    enerv = [j for j in plan.jobs if isinstance(j.codec, ENeRV)]
    lines, total = [], 0.0
    for budget in dict.fromkeys(j.codec.budget_seconds for j in enerv):
        n = sum(j.codec.budget_seconds == budget for j in enerv)
        if budget <= 0:
            lines.append(f"no budget: {n} E-NeRV points, time not estimated")
            continue
        total += n * budget
        lines.append(f"budget {budget:g} s: {n} E-NeRV points x {budget:g} s = {_minutes(n * budget)}")
    anchors = len(plan.jobs) - len(enerv)
    if total or anchors:
        lines.append(f"estimated time: {_minutes(total)} for E-NeRV (the sum of its budgets over points and clips; "
                     f"points that share a fit take less) + {anchors} anchor points (not estimated; the README "
                     "lists their encode seconds per point)")
    return lines


def add_vmaf(job: Job, record: PointRecord, clip: SourceClip, plan: Plan, cache: PointCache) -> PointRecord:
    """A cached point's VMAF, measured on the frames decoded from its kept file."""
    from benchmarks.vmaf import measure_vmaf

    decoded = job.codec.decode(plan.out / job.file, clip.frames.shape[2], clip.frames.shape[1])
    score = measure_vmaf(decoded, clip.frames, clip.fps)
    return cache.save(job, {**record.row, "vmaf": score.mean, "vmaf_model": score.model}, record.history)


def run_jobs(plan: Plan, cache: PointCache, store: FrameStore, machine: dict) -> RunRecords:
    """Measures (or takes from the cache) every point of the plan.

    Anchor points run in worker processes when the plan allows several at once (E-NeRV
    then fits in the main process meanwhile); otherwise everything runs one after the other.
    """
    run = RunRecords(records=[])
    by_key: dict[str, PointRecord] = {}
    n, done = len(plan.jobs), 0

    def finish(job: Job, point: RDPoint, parallel: int) -> None:
        nonlocal done
        by_key[job.key] = cache.save(job, point_row(job, point, parallel, machine, plan.vmaf_note), point.history)
        run.measured.add(job.key)
        done += 1
        _print_point(done, n, by_key[job.key].row, cached=False)

    for video in plan.videos:
        todo, unscored = [], []
        for job in (j for j in plan.jobs if j.video is video):
            record = None if plan.settings.force else cache.load(job)
            if record is None:
                todo.append(job)
                continue
            by_key[job.key] = record
            if plan.vmaf and record.row.get("vmaf") is None:
                unscored.append(job)  # measured by a run without VMAF: scored from its kept file
                continue
            done += 1
            _print_point(done, n, record.row, cached=True)
        if not todo and not unscored:
            continue
        (plan.out / "files" / video.slug).mkdir(parents=True, exist_ok=True)
        clip = store.clip(video)
        for job in unscored:
            by_key[job.key] = add_vmaf(job, by_key[job.key], clip, plan, cache)
            done += 1
            _print_point(done, n, by_key[job.key].row, cached=True)
        pooled = [j for j in todo if not isinstance(j.codec, ENeRV)] if plan.jobs_at_once > 1 else []
        pool, futures, pool_start = None, {}, 0.0
        try:
            if len(pooled) > 1:
                pool = concurrent.futures.ProcessPoolExecutor(plan.jobs_at_once,
                                                              mp_context=multiprocessing.get_context("spawn"))
                pool_start = time.perf_counter()
                futures = {pool.submit(j.codec.run, clip, j.point, plan.out / j.file, plan.vmaf): j for j in pooled}
            in_pool = {j.key for j in futures.values()}
            for job in (j for j in todo if j.key not in in_pool):
                start = time.perf_counter()
                finish(job, job.codec.run(clip, job.point, plan.out / job.file, plan.vmaf), 1)
                run.wall[job.codec.name] = run.wall.get(job.codec.name, 0.0) + time.perf_counter() - start
            for future in concurrent.futures.as_completed(futures):
                finish(futures[future], future.result(), plan.jobs_at_once)
            if futures:
                # Concurrent: the anchors' wall time is shared, reported under one name.
                name = "+".join(sorted({j.codec.name for j in pooled})) + " (concurrent)"
                run.wall[name] = run.wall.get(name, 0.0) + time.perf_counter() - pool_start
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
    run.records = [by_key[j.key] for j in plan.jobs]
    return run
