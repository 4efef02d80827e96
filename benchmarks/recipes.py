"""Learning per CPU-second: training recipes run at one time budget on several clips, one table.

A recipe is a base preset with some settings changed (the optimizer, the latents' learning
rate, a schedule of the rate term, the network kind...). Each recipe encodes each clip with
``enerv-compress --time-budget`` (one process at a time, the whole command timed), and is
scored against the clip's x264 curve (medium, 4:4:4, CRF 18-42, from ``enerv-bench``):

- ``gap_db``: its PSNR-RGB minus x264's at the same bits per pixel (x264's curve interpolated
  on log rate);
- ``rate_excess``: its bits over x264's bits for the same PSNR, minus 1 (+0.5: 50 % more bits).

Both are local, one-point versions of BD-PSNR and BD-rate; compare recipes by them only on the
same machine and budget. ``python -m benchmarks.recipes CLIP... -o DIR`` writes ``DIR/recipes.csv``
and ``DIR/recipes.md``, keeping the rows already there (a rerun measures only what is missing).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from benchmarks.machine import machine_info
from pipeline.cli_common import OneLineErrorParser
from pipeline.config import load_preset, section_to_dict

ANCHOR = ("x264", "medium", "yuv444p")  # codec, preset, chroma format of the reference curve


@dataclass(frozen=True)
class Recipe:
    """A base preset's settings changed: ``changes`` maps a section to the fields set in it."""

    name: str
    description: str
    changes: dict[str, dict]


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("base", "the preset as shipped", {}),
    Recipe("latent-lr-5", "the per-frame latents at 5x the learning rate", {"fit": {"latent_lr": 5.0}}),
    Recipe("rate-warmup", "the rate term's weight grows from 0 over the first 30 % of the fit",
           {"codec": {"rate_warmup": 0.3}}),
    Recipe("ctx-grids", "every grid context-coded (kind enerv-ctx; the enerv-latent presets' kind since)",
           {"network": {"kind": "enerv-ctx"}}),
    Recipe("hist-grids", "grids coded by stored histograms (kind enerv-latent, the presets' kind before)",
           {"network": {"kind": "enerv-latent"}}),
    Recipe("soap", "SOAP for the network's matrices and kernels, Adam for the rest", {"fit": {"optimizer": "soap"}}),
    Recipe("batch-1", "one frame a step (twice the steps of batch 2)", {"fit": {"batch_size": 1}}),
    Recipe("table-symbols", "every weight's symbols within the bank tables' +-126: a 2-byte table, no stored counts",
           {"codec": {"table_symbols": True}}),
    Recipe("ctx-tables", "ctx-grids + table-symbols",
           {"network": {"kind": "enerv-ctx"}, "codec": {"table_symbols": True}}),
    Recipe("ctx-tables-lr5", "ctx-tables + latent-lr-5",
           {"network": {"kind": "enerv-ctx"}, "fit": {"latent_lr": 5.0}, "codec": {"table_symbols": True}}),
    Recipe("seed-2", "the preset as shipped, another seed (how far two runs of one recipe differ)",
           {"fit": {"seed": 2}}),
    Recipe("ctx-lr5-warm", "ctx-grids + latent-lr-5 + rate-warmup",
           {"network": {"kind": "enerv-ctx"}, "fit": {"latent_lr": 5.0}, "codec": {"rate_warmup": 0.3}}),
)}


def recipe_config(base: str, recipe: Recipe, quality: float) -> dict:
    """The YAML mapping of ``base`` with ``recipe``'s changes and ``quality``."""
    preset = load_preset(base)
    data = {"network": section_to_dict(preset.network), "fit": section_to_dict(preset.fit),
            "codec": section_to_dict(preset.codec)}
    data["network"] = {k: v for k, v in data["network"].items() if v is not None}
    for section, changes in recipe.changes.items():
        data[section].update(changes)
    data["codec"]["quality"] = quality
    return data


def anchor_curve(clip: Path, folder: Path) -> pd.DataFrame:
    """x264's reference curve for ``clip`` (bpp, psnr_rgb), measured once by enerv-bench into ``folder``."""
    results = folder / "results.csv"
    if not results.exists():
        folder.parent.mkdir(parents=True, exist_ok=True)
        codec, preset, pix_fmt = ANCHOR
        subprocess.run(_command("bench") + [str(clip), "-o", str(folder), "--codecs", codec,
                        "--anchor-presets", preset, "--pix-fmts", pix_fmt, "--crfs", "18,26,34,42", "--no-vmaf",
                        "--no-low-delay", "-q"], check=True)
    rows = pd.read_csv(results)
    rows = rows[(rows.codec == ANCHOR[0]) & (rows.pix_fmt == ANCHOR[2])]
    return rows.sort_values("bpp")[["bpp", "psnr_rgb"]].reset_index(drop=True)


def gap_to_anchor(bpp: float, psnr: float, anchor: pd.DataFrame) -> tuple[float, float]:
    """(PSNR gap in dB at equal rate, rate excess at equal PSNR) against ``anchor``'s curve,
    interpolated linearly on log rate; NaN outside the anchor's range (no extrapolation)."""
    log_rate = np.log(anchor.bpp.to_numpy())
    quality = anchor.psnr_rgb.to_numpy()
    gap = psnr - float(np.interp(np.log(bpp), log_rate, quality, left=np.nan, right=np.nan))
    order = np.argsort(quality)
    rate_at = np.interp(psnr, quality[order], log_rate[order], left=np.nan, right=np.nan)
    return gap, float(np.exp(np.log(bpp) - rate_at) - 1.0)


def _commit() -> str:
    """The checkout's commit, with "+changes" when the tree differs from it."""
    def git(*words: str) -> str:
        done = subprocess.run(["git", *words], capture_output=True, text=True, cwd=Path(__file__).parent)
        return done.stdout.strip() if done.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD")
    return (head + ("+changes" if git("status", "--porcelain", "--untracked-files=no") else "")) or "unknown"


def _command(name: str) -> list[str]:
    """``enerv-NAME`` run by this Python (the entry point's function, argv from the list)."""
    return [sys.executable, "-c", f"import sys, cli; sys.exit(cli.{name}_main())"]


def run_recipe(clip: Path, base: str, recipe: Recipe, quality: float, budget: float, work: Path) -> dict:
    """Encodes ``clip`` with ``recipe`` under ``budget`` seconds; the encoder's summary, timed."""
    work.mkdir(parents=True, exist_ok=True)
    config = work / f"{recipe.name}.yaml"
    config.write_text(yaml.safe_dump(recipe_config(base, recipe, quality), sort_keys=True))
    out, summary = work / f"{recipe.name}.bin", work / f"{recipe.name}.json"
    started = time.perf_counter()
    subprocess.run(_command("compress") + [str(clip), "-o", str(out), "--config", str(config),
                    "--time-budget", f"{budget:g}", "--json", str(summary), "-q"], check=True)
    seconds = time.perf_counter() - started
    result = json.loads(summary.read_text())
    epochs = result.get("epochs") or [float("nan")]
    return {"bytes": out.stat().st_size, "bpp": result["bpp"], "psnr_rgb": result["psnr"], "seconds": seconds,
            "fit_epochs": epochs[0]}


def table_markdown(rows: pd.DataFrame, budget: float, base: str, quality: float, series: str = "") -> str:
    """The table as Markdown: one row per recipe and clip, then each recipe's mean over clips."""
    commits = ", ".join(sorted(set(rows["commit"].dropna()))) if "commit" in rows else "-"
    lines = [f"# Recipes at {budget:g} s a point ({base}, quality {quality:g}){': ' + series if series else ''}",
             "", f"Code: {commits}. Command: `python -m benchmarks.recipes CLIPS -o DIR --base {base} "
             f"--quality {quality:g} --budget {budget:g}{' --series ' + series if series else ''}`.", "",
             f"Reference: {' '.join(ANCHOR)} (CRF 18-42). gap: PSNR-RGB minus the reference's at the same "
             "rate; rate excess: bits over the reference's for the same PSNR. Machine: "
             f"{rows.machine.iloc[0] if len(rows) else '-'}.", "",
             "| recipe | clip | bpp | PSNR-RGB (dB) | gap (dB) | rate excess | seconds | fit epochs |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for _, r in rows.iterrows():
        lines.append(f"| {r.recipe} | {r['clip']} | {r.bpp:.4f} | {r.psnr_rgb:.2f} | {r.gap_db:+.2f} | "
                     f"{r.rate_excess:+.0%} | {r.seconds:.0f} | {r.fit_epochs:.0f} |")
    lines += ["", "Mean over clips:", "", "| recipe | what it changes | gap (dB) | rate excess |",
              "| --- | --- | ---: | ---: |"]
    for name, group in rows.groupby("recipe", sort=False):
        what = RECIPES[name].description if name in RECIPES else ""
        lines.append(f"| {name} | {what} | {group.gap_db.mean():+.2f} | {group.rate_excess.mean():+.0%} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrorParser(prog="python -m benchmarks.recipes", description=__doc__.splitlines()[0])
    p.add_argument("clips", nargs="+", type=Path)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated, of: " + ", ".join(RECIPES))
    p.add_argument("--base", default="enerv-latent-xs", help="the preset the recipes change")
    p.add_argument("--quality", type=float, default=45.0)
    p.add_argument("--budget", type=float, default=120.0, help="seconds per encode (--time-budget)")
    p.add_argument("--series", default="", help="a name for this set of runs (the code they ran): rows of "
                                                "another series are kept apart, never reused")
    args = p.parse_args(argv)
    names = args.recipes.split(",")
    unknown = [n for n in names if n not in RECIPES]
    if unknown:
        p.error(f"unknown recipe(s) {', '.join(unknown)}")
    args.output.mkdir(parents=True, exist_ok=True)
    table = args.output / "recipes.csv"
    rows = pd.read_csv(table) if table.exists() else pd.DataFrame()
    import torch

    from compress.precision import uses_bf16

    bf16 = uses_bf16(torch.device("cpu"), load_preset(args.base).fit.precision)
    machine = f"{machine_info('cpu', codecs=False).get('cpu', '?')}, {torch.get_num_threads()} threads, " + (
        "bf16 autocast" if bf16 else "float32")
    for clip in args.clips:
        anchor = anchor_curve(clip, args.output / "anchor" / clip.stem)
        for name in names:
            key = (name, clip.name, args.budget, args.base, args.quality, args.series)
            if len(rows) and ((rows.recipe == name) & (rows.clip == clip.name) & (rows.budget == args.budget)
                              & (rows.base == args.base) & (rows.quality == args.quality)
                              & (rows.series.fillna("") == args.series)).any():
                continue
            got = run_recipe(clip, args.base, RECIPES[name], args.quality, args.budget,
                             args.output / "runs" / clip.stem / f"{args.base}-q{args.quality:g}-{args.budget:g}s")
            gap, excess = gap_to_anchor(got["bpp"], got["psnr_rgb"], anchor)
            row = dict(zip(("recipe", "clip", "budget", "base", "quality", "series"), key), **got, gap_db=gap,
                       rate_excess=excess, machine=machine, commit=_commit())
            rows = pd.concat([rows, pd.DataFrame([row])], ignore_index=True)
            rows.to_csv(table, index=False)
            print(f"{name} {clip.name}: {got['bpp']:.4f} bpp {got['psnr_rgb']:.2f} dB, gap {gap:+.2f} dB, "
                  f"rate {excess:+.0%}, {got['seconds']:.0f} s", file=sys.stderr, flush=True)
    rows["series"] = rows.series.fillna("")
    for (series, budget, base, quality), group in rows.groupby(["series", "budget", "base", "quality"]):
        name = f"recipes-{series + '-' if series else ''}{base}-q{quality:g}-{budget:g}s.md"
        (args.output / name).write_text(table_markdown(group, budget, base, quality, series))
    return 0


if __name__ == "__main__":
    sys.exit(main())
