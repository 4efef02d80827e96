"""What a benchmark run leaves in its folder: results.csv, time_to_quality.csv and run.json,
then the report built from them (bd_rate.csv, the figures, report.md)."""

from __future__ import annotations

import shlex
import time

import pandas as pd

from benchmarks.curves import curve_label
from benchmarks.plan import Plan
from benchmarks.report import HISTORY_COLUMNS, RunSummary, build_report
from benchmarks.results import results_frame
from benchmarks.runner import RunRecords, now
from benchmarks.tables import fmt
from pipeline.files import write_atomically


def history_frame(run: RunRecords) -> pd.DataFrame:
    """Every E-NeRV point's fitting history: loss and PSNR after each epoch."""
    rows = []
    for record in run.records:
        names = {k: record.row.get(k) for k in ("video", "setting", "point", "fit_key")}
        rows += [{**names, **{k: h[k] for k in ("epoch", "seconds", "loss", "psnr")}} for h in record.history]
    return pd.DataFrame(rows, columns=HISTORY_COLUMNS)


def write_outputs(plan: Plan, run: RunRecords, started: str, start_time: float) -> pd.DataFrame:
    """Writes the run's files and its report; returns the BD table."""
    out = plan.out
    results = results_frame([r.row for r in run.records])
    write_atomically(out / "results.csv", results.to_csv(index=False).encode())
    history = history_frame(run)
    if history.empty:
        (out / "time_to_quality.csv").unlink(missing_ok=True)  # an earlier run's would not match
    else:
        write_atomically(out / "time_to_quality.csv", history.to_csv(index=False).encode())
    measured_codecs = sorted({r.row["codec"] for r in run.records if r.key in run.measured})
    summary = RunSummary(
        command="enerv-bench " + shlex.join(plan.settings.argv), started=started, finished=now(),
        wall_seconds=time.perf_counter() - start_time, measured=len(run.measured),
        cached=len(run.records) - len(run.measured), bd_method=plan.settings.bd_method,
        wall_by_codec=run.wall, measured_codecs=tuple(measured_codecs), skipped=dict(plan.skipped))
    write_atomically(out / "run.json", summary.to_json().encode())
    return build_report(out / "results.csv", out)


def print_headline(bd: pd.DataFrame) -> None:
    avg = bd[bd["video"] == "average"]
    for _, r in avg[avg["test_codec"] == "enerv"].iterrows():
        print(f"BD-rate {curve_label(r['test_codec'], r['test_setting'])} vs "
              f"{curve_label(r['anchor_codec'], r['anchor_setting'])}: "
              f"{fmt(r['bd_rate_psnr_rgb'], '+.1f')} % (PSNR-RGB), "
              f"BD-PSNR {fmt(r['bd_psnr_psnr_rgb'], '+.2f')} dB")
