"""The benchmark's report, rebuilt from ``results.csv`` alone:

    python -m benchmarks.report OUT/results.csv -o DIR [--bd-method akima]

writes ``bd_rate.csv``, ``rd.png``/``rd.svg`` and ``report.md`` into DIR, and where the
results allow it ``rd_vmaf.png`` (points with VMAF), ``time_axis.csv``/``.png`` (curves that
span the time axis's rates), ``budget_curve.csv``/``.png`` (E-NeRV at several time budgets:
"What minutes buy") and ``time_to_quality.png`` (``time_to_quality.csv`` beside the
results). Every fact
the report states comes from the rows: codec versions and flags, epochs, budgets, how the
points ran, the machines that measured them. A ``run.json`` beside the results (enerv-bench
writes one) adds the run's command, dates and wall times. enerv-bench itself builds its
report with :func:`build_report`, from the files it has just written.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from benchmarks import budget_curve, plots, tables, time_axis
from benchmarks.bd import BD_METHODS, bd_table, metrics_of
from benchmarks.curves import curve_label
from benchmarks.registry import ANCHOR_CODECS, ANCHORS
from benchmarks.report_notes import (
    RunSummary,
    anchors_note,
    budget_note,
    caption,
    concurrency_note,
    machines,
    run_lines,
    skipped_note,
    source_note,
    time_axis_text,
    vmaf_note,
)
from benchmarks.results import read_results
from pipeline.cli_common import OneLineErrorParser, run_command
from pipeline.errors import InputError
from pipeline.files import write_atomically

HISTORY_COLUMNS = ["video", "setting", "point", "fit_key", "epoch", "seconds", "loss", "psnr"]


def report_text(results: pd.DataFrame, bd: pd.DataFrame, run: RunSummary | None, bd_method: str,
                time_to_quality: bool, axis: pd.DataFrame | None = None, vmaf_plot: bool = False,
                minutes: pd.DataFrame | None = None) -> str:
    """``minutes``: :func:`benchmarks.budget_curve.budget_bd` of results with several budgets (its
    section, "What minutes buy", is there when it has rows)."""
    axis = time_axis.time_axis(results) if axis is None else axis
    minutes_text = ("\n## What minutes buy\n\n" + budget_curve.markdown(minutes, results) + "\n"
                    if minutes is not None and not minutes.empty else "")
    if time_to_quality:
        ttq = ("![PSNR against encoding time](time_to_quality.png)\n\n"
               "The lines are the training-time estimate that the fit records after each epoch (float outputs, "
               "averaged over the epoch while the weights change), not a measurement of a file; the stars are "
               "the PSNR of the decoded files at the end of each whole encode (a shared fit counted in full). "
               "The data are in `time_to_quality.csv`.")
    else:
        ttq = "(E-NeRV was not run, or its fitting history is not beside these results, so there is no fitting curve.)"
    avg_note = ("Average rows are the mean of the per-video values. " if results["video"].nunique() > 1
                else "One video: its values are the averages, and the figure has no separate average panel. ")
    anchor_note = anchors_note(results)
    wall = run.wall_by_codec if run is not None else None
    measured = set(run.measured_codecs) if run is not None else set()
    containers = "".join(f"the {ANCHORS[c].extension} ({ANCHORS[c].container}) for {ANCHORS[c].title}, "
                         for c in ANCHOR_CODECS if (results["codec"] == c).any())
    vmaf_tables = ""
    if "vmaf" in metrics_of(results):
        figure = "![VMAF against bits per pixel](rd_vmaf.png)\n\n" if vmaf_plot else ""
        vmaf_tables = (f"\nVMAF (BD-rate / BD-VMAF, in VMAF points; {vmaf_note(results)}):\n\n"
                       f"{tables.bd_matrix(bd, 'vmaf')}\n\n{figure}")
    return f"""# Rate-distortion benchmark

{run_lines(results, run)}

![PSNR against bits per pixel](rd.png)

[rd.svg](rd.svg) (vector). {caption(results)} {skipped_note(run)}

## Summary

For each curve: its BD-rate (PSNR-RGB, averaged over the videos) against each anchor codec's reference
curve (its first `--quick` preset in 4:2:0 where the results have it), and the mean encode and decode
seconds of one of its points (the whole clip). * as in the tables below.

{tables.summary_table(results, bd)}
{minutes_text}
## BD-rate against the anchors

Average over videos; per-video values are in `bd_rate.csv`. Each cell: BD-rate / BD-PSNR of the
row's curve against the column's anchor. Negative BD-rate = fewer bits than the anchor for the same
quality; positive BD-PSNR = more quality at the same rate. Computed with the `bjontegaard` package
({bd_method} interpolation, log10 rate), on each curve's Pareto front (points beaten by a cheaper
and better point of the same curve are left out). BD-rate is averaged over the PSNR range both curves
cover, BD-PSNR over the rate range both cover (no extrapolation); * marks a cell where that common range
covers under half of the narrower curve's range, or a value is undefined because the curves do not
overlap at all (see the `note` and `*_overlap` columns of the CSV).
{avg_note}

PSNR-RGB:

{tables.bd_matrix(bd, 'psnr_rgb')}

PSNR-YUV ((6 Y + U + V) / 8, BT.709):

{tables.bd_matrix(bd, 'psnr_yuv')}
{vmaf_tables}
## Curves

{tables.curve_summary(results)}

## E-NeRV points

Each point is a complete E-NeRV encode (`compress_frames`: fit, prune, quantize, entropy-code) written
to a real `.bin`; its rate is the file's size on disk, and its quality is measured on the frames decoded
by `decode_frames` from the file's bytes. `command` in `results.csv` is the `enerv-compress` command that
makes the same file. {budget_note(results)}

{tables.enerv_points_table(results)}

Points of a curve that differ only in codec settings (quality, bits, pruning) fit the same network to the same
frames, so they share one fit: the first to run fits it and stores it under `fits/`, the others load it
and run only their own fine-tunes, quantization and coding. Each point's **encode s** counts the whole
encode: **fit s**, the shared fit's time, measured once when it ran ("(shared)": taken from the fit
cache), plus **own s**, the point's own work. Per fit:

{tables.shared_fits_table(results)}

## Quality against encode time

{time_axis_text(axis, time_axis.has_values(axis))}

## Time to quality

{ttq}

## Anchors

{anchor_note}

{tables.anchor_flags(results)}

## Colour handling and rate accounting

- Every codec is measured on 8-bit RGB frames decoded from its own output file, against the RGB source
  frames (the input decoded once to RGB24 by ffmpeg{source_note(results)}). PSNR-RGB is the mean over frames
  of the per-frame PSNR over the three channels; PSNR-YUV converts both RGB frame sets to BT.709
  limited-range Y'CbCr at full chroma resolution and takes (6 PSNR-Y + PSNR-U + PSNR-V) / 8; MS-SSIM is on
  RGB (n/a below 161 pixels a side).
- The anchors convert RGB to Y'CbCr explicitly with ffmpeg's scale filter (BT.709 matrix, limited "tv"
  range, stream tagged bt709/tv) and back the same way when decoding; yuv420p halves the chroma
  resolution both ways, yuv444p keeps it. E-NeRV fits and renders RGB directly.
- {vmaf_note(results)}
- The rate is the size of the whole file for every codec: {containers}the `.bin` (header, side
  information, masks, payload and checksum) for E-NeRV. bpp =
  8 x bytes / (width x height x frames); kbps at the source frame rate. The encoded files are kept
  under `files/`.

## Time

{tables.timing_table(results, wall, measured)}

Encode time of an anchor point: the ffmpeg process from raw RGB on its input pipe to the finished file
(colour conversion included); decode: ffmpeg from the file to raw RGB. Encode time of an E-NeRV point:
`compress_frames` (fitting, or the shared fit's measured time when the point took it from the cache,
then pruning, quantization, entropy coding and its own check of the decoded frames) and writing the
file; the source is decoded once per video for every codec, and that time is in no point. Decode:
`decode_frames` from the file's bytes (entropy decoding, rebuilding the network, rendering every frame).
{concurrency_note(results)}

## Machine

{machines(results)}
"""


def write_budget_curve(results: pd.DataFrame, out: Path, method: str) -> pd.DataFrame | None:
    """budget_curve.csv and .png where the results hold several E-NeRV budgets (else None, and an
    earlier build's files are removed)."""
    minutes = budget_curve.budget_bd(results, method) if len(budget_curve.budgets(results)) > 1 else None
    if minutes is None or minutes.empty:
        for name in ("budget_curve.csv", "budget_curve.png"):
            (out / name).unlink(missing_ok=True)
        return None
    write_atomically(out / "budget_curve.csv", minutes.to_csv(index=False).encode())
    anchor = budget_curve.crossing_anchor(results)
    found = budget_curve.crossing(minutes, anchor)
    mark = "" if anchor is None else f"BD-rate 0 vs {curve_label(*anchor)} ({found.kind})"
    plots.plot_budget_curve(budget_curve.main_curve(minutes), out / "budget_curve.png",
                            "Each budget's E-NeRV curve (the Pareto envelope over its presets, if several) against "
                            "each anchor curve; BD-rate on PSNR-RGB averaged over the videos. x: the budget each "
                            "point's epochs were scaled to (estimated before the fit), not its measured encode time.",
                            found.seconds, mark)
    return minutes


def build_report(results_csv: Path, out: Path, bd_method: str | None = None) -> pd.DataFrame:
    """Writes bd_rate.csv, the figures and report.md into ``out`` from a results file (and the
    ``time_to_quality.csv`` and ``run.json`` beside it, when they are there); returns the BD table."""
    results = read_results(results_csv)
    run = RunSummary.read(results_csv.parent / "run.json")
    method = bd_method or (run.bd_method if run is not None else "akima")
    bd = bd_table(results, method)
    write_atomically(out / "bd_rate.csv", bd.to_csv(index=False).encode())
    plots.plot_rd(results, out / "rd.png", out / "rd.svg", caption(results))
    vmaf_plot = "vmaf" in metrics_of(results)
    if vmaf_plot:
        plots.plot_rd(results, out / "rd_vmaf.png", None, caption(results) + " " + vmaf_note(results), "vmaf")
    axis = time_axis.time_axis(results)
    axis_plot = time_axis.has_values(axis)
    if axis_plot:  # only where some curve spans a target rate: tiny test clips do not
        write_atomically(out / "time_axis.csv", axis.to_csv(index=False).encode())
        plots.plot_time_axis(axis, out / "time_axis.png", "Encode time: one point (the whole clip) on the machine "
                             "of this report; quality interpolated on each curve's Pareto front, log-rate.")
    for name, written in (("rd_vmaf.png", vmaf_plot), ("time_axis.csv", axis_plot), ("time_axis.png", axis_plot)):
        if not written:
            (out / name).unlink(missing_ok=True)  # an earlier build's would not match these results
    minutes = write_budget_curve(results, out, method)
    history_csv = results_csv.parent / "time_to_quality.csv"
    history = pd.read_csv(history_csv) if history_csv.is_file() else pd.DataFrame(columns=HISTORY_COLUMNS)
    if not history.empty:
        plots.plot_time_to_quality(history, results, out / "time_to_quality.png")
    text = report_text(results, bd, run, method, time_to_quality=not history.empty, axis=axis, vmaf_plot=vmaf_plot,
                       minutes=minutes)
    write_atomically(out / "report.md", text.encode())
    return bd


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrorParser(prog="python -m benchmarks.report",
                           description="Rebuild bd_rate.csv, the figures and report.md from an enerv-bench "
                                       "results.csv.")
    p.add_argument("results", help="a results.csv written by enerv-bench")
    p.add_argument("-o", "--output", required=True, help="folder to write into (created if its parent exists)")
    p.add_argument("--bd-method", choices=BD_METHODS, help="BD interpolation (default: the run's, else akima)")
    args = p.parse_args(argv)
    results_csv, out = Path(args.results), Path(args.output)
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise InputError(f"the output's parent folder {out.parent} does not exist")
    read_results(results_csv)  # refuse a bad file before creating anything
    out.mkdir(exist_ok=True)
    build_report(results_csv, out, args.bd_method)
    print(f"wrote {out}/report.md, bd_rate.csv and the figures")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, sys.argv[1:]))
