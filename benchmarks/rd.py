"""``enerv-bench``: rate-distortion benchmark of E-NeRV against the anchors of benchmarks.registry.

    enerv-bench INPUT [INPUT ...] -o reports/NAME [--codecs enerv,x264,...] [--quick] [--no-vmaf]

For each input and codec it encodes at several rate points, decodes each file, measures it
against the source and writes into the output folder: ``results.csv`` (one row per point),
``bd_rate.csv``, ``rd.png``/``rd.svg`` (and ``rd_vmaf.png``), ``time_axis.csv``/``.png``,
``budget_curve.csv``/``.png`` (with several ``--budget-seconds``), ``time_to_quality.png``/``.csv``,
``run.json`` and ``report.md``. The encoded files stay under
``files/``; each finished point is cached as one JSON file under ``cache/`` and each E-NeRV fit
under ``fits/``, so an interrupted benchmark continues where it stopped (``--force`` recomputes).

Every option is checked, every input decoded and every encoder looked up before any
encoding starts; a problem is one ``error:`` line and exit status 2, with nothing written.
The steps live in their own modules: settings (argv), plan, runner, point_cache, outputs.
"""

from __future__ import annotations

import shutil
import sys
import time

from benchmarks.machine import machine_info
from benchmarks.outputs import print_headline, write_outputs
from benchmarks.plan import make_plan
from benchmarks.point_cache import PointCache
from benchmarks.runner import dry_run, now, run_jobs
from benchmarks.settings import parse_settings
from benchmarks.sources import FrameStore, ReadOptions
from pipeline.cli_common import run_command


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    started, start_time = now(), time.perf_counter()
    settings = parse_settings(argv)
    store = FrameStore(ReadOptions(settings.frame_range, settings.size))
    plan = make_plan(settings, store)
    for name, why in plan.skipped:
        print(f"note: {name} is left out: {why}", file=sys.stderr)
    if settings.vmaf and plan.vmaf_note:
        print(f"note: VMAF {plan.vmaf_note}", file=sys.stderr)
    cache = PointCache(plan.out)
    if settings.dry_run:
        return dry_run(plan, cache)
    plan.out.mkdir(exist_ok=True)
    if settings.force:
        shutil.rmtree(plan.out / "fits", ignore_errors=True)  # fit again, once, and share that fit
    for sub in ("cache", "files", "fits"):
        (plan.out / sub).mkdir(exist_ok=True)
    run = run_jobs(plan, cache, store, machine_info(plan.device))
    bd = write_outputs(plan, run, started, start_time)
    print_headline(bd)
    measured = len(run.measured)
    print(f"{len(run.records)} points ({measured} measured, {len(run.records) - measured} cached) in "
          f"{time.perf_counter() - start_time:.0f} s; wrote {plan.out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, sys.argv[1:]))
