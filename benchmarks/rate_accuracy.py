"""Rate control's accuracy: how close files land to the targets asked, and where their PSNR lies
against files of fixed qualities fitted the same way.

    python -m benchmarks.rate_accuracy data/*.mkv -o reports/rate-320 --epochs 50

For each clip, every target (``--targets``, bits per pixel) is asked of the preset with
``--target-bpp``, and every quality of ``--qualities`` is run without a target (the kind's own
curve). Both use the same epochs (``--epochs``; no time budget, so the results do not depend on
the machine's load). Writes ``rate_accuracy.csv`` (one row per file) and ``rate_accuracy.md``
(the landing error per target, and the PSNR gap to the fixed-quality curve at the same rate,
interpolated on log rate between its neighbours). Rows already in the CSV are kept and not
measured again, so an interrupted run continues.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.machine import machine_info
from compress.ratecontrol import RateRequest
from compress.video import compress_frames
from pipeline.cli_common import OneLineErrorParser, run_command
from pipeline.config import load_preset
from pipeline.presets import with_codec_settings, with_fit_epochs
from pipeline.video_io import read_video


def envelope_gap(bpp: float, psnr: float, curve: pd.DataFrame) -> float:
    """PSNR minus the fixed-quality curve's at ``bpp`` (linear in log rate between the two points
    around it; NaN outside the curve's range)."""
    curve = curve.sort_values("bpp")
    x, y = np.log(curve["bpp"].to_numpy()), curve["psnr"].to_numpy()
    if len(x) < 2 or not x[0] <= np.log(bpp) <= x[-1]:
        return float("nan")
    return float(psnr - np.interp(np.log(bpp), x, y))


def _run(frames, fps, preset, target_bpp: float | None, quality: float | None) -> dict:
    if quality is not None:
        preset = with_codec_settings(preset, {"quality": quality})
    T, H, W = frames.shape[:3]
    target = RateRequest(bpp=target_bpp).target(W, H, T, fps) if target_bpp is not None else None
    data, result = compress_frames(frames, fps, preset, progress=False, target=target)
    return {"bytes": len(data), "bpp": result.bpp, "psnr": result.psnr, "quality": result.quality,
            "rate_lambda": result.rate_lambda, "seconds": result.seconds,
            "target_bytes": target.bytes if target is not None else None}


def summary_table(rows: pd.DataFrame) -> str:
    """The Markdown table of the targets' rows: error and PSNR gap to the fixed-quality curve."""
    lines = ["| clip | target bpp | asked bytes | file bytes | error | PSNR dB | vs fixed-quality curve | "
             "lambda / quality 50's |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for clip, group in rows.groupby("clip", sort=False):
        curve = group[group["kind"] == "quality"]
        for _, r in group[group["kind"] == "target"].sort_values("target_bpp").iterrows():
            gap = envelope_gap(r["bpp"], r["psnr"], curve)
            gap_text = f"{gap:+.2f} dB" if np.isfinite(gap) else "outside"
            lines.append(f"| {clip} | {r['target_bpp']:g} | {int(r['target_bytes']):,} | {int(r['bytes']):,} | "
                         f"{r['bytes'] / r['target_bytes'] - 1:+.1%} | {r['psnr']:.2f} | {gap_text} | "
                         f"{r['rate_lambda'] / 0.01:.3g} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrorParser(prog="python -m benchmarks.rate_accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("inputs", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--preset", default="enerv-latent-xs")
    p.add_argument("--epochs", type=int, default=50)
    p.add_argument("--targets", default="0.02,0.05,0.1,0.2,0.3")
    p.add_argument("--qualities", default="30,45,60")
    args = p.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    csv = args.output / "rate_accuracy.csv"
    rows = pd.read_csv(csv) if csv.exists() else pd.DataFrame()
    preset = with_fit_epochs(load_preset(args.preset), args.epochs)
    asks = [("target", float(t)) for t in args.targets.split(",")] + [("quality", float(q))
                                                                       for q in args.qualities.split(",")]
    for path in args.inputs:
        source = read_video(path)
        for kind, value in asks:
            done = (not rows.empty and ((rows["clip"] == path.name) & (rows["kind"] == kind)
                                        & (rows["value"] == value) & (rows["epochs"] == args.epochs)).any())
            if done:
                continue
            print(f"{path.name}: {kind} {value:g}", file=sys.stderr, flush=True)
            got = _run(source.frames, source.info.fps, preset, value if kind == "target" else None,
                       value if kind == "quality" else None)
            row = {"clip": path.name, "kind": kind, "value": value, "epochs": args.epochs, "preset": args.preset,
                   "target_bpp": value if kind == "target" else None, **got}
            rows = pd.concat([rows, pd.DataFrame([row])], ignore_index=True)
            rows.to_csv(csv, index=False)
    machine = machine_info("cpu", codecs=False)
    text = (f"# Rate control's accuracy\n\nCommand: `python -m benchmarks.rate_accuracy "
            f"{' '.join(sys.argv[1:] if argv is None else argv)}`\n\nPreset {args.preset}, {args.epochs} fitting "
            f"epochs for every file (no time budget). Machine: {machine.get('cpu', '?')}, "
            f"{machine.get('cpu count', '?')}, torch {machine.get('torch', '?')}.\n\n"
            + summary_table(rows[rows["epochs"] == args.epochs]) + "\n")
    (args.output / "rate_accuracy.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, sys.argv[1:]))
