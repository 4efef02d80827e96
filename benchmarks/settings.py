"""``enerv-bench``'s options: parsed and checked once into frozen :class:`BenchSettings`.

Nothing past :func:`parse_settings` sees the argparse namespace. Every problem is an
InputError (one ``error:`` line, exit 2) raised before anything is written.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass
from pathlib import Path

from benchmarks.bd import BD_METHODS
from benchmarks.enerv import POINT_SPEC, ENeRVPoint, parse_point
from pipeline.cli_common import OneLineErrorParser
from pipeline.config import CodecPreset, load_preset, preset_names
from pipeline.errors import InputError
from pipeline.presets import with_fit_epochs
from pipeline.video_io import parse_frame_range, parse_frame_size

CODECS = ("enerv", "x264", "x265")
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
PIX_FMTS = ("yuv420p", "yuv444p")
LOW_DELAY_PRESET = "medium"

# What --quick and the default (full) run sweep; every item can be set by its own option.
# E-NeRV's curve is the Pareto envelope of (network size, quality) pairs of the enerv-grid
# ladder: small networks serve low rates, wide ones high rates (see the README's measurement).
QUICK = {
    "enerv_presets": ["enerv-grid-xs", "enerv-grid-m", "enerv-grid-xl"],
    "enerv_points": "40,60",
    "budget_seconds": 300.0,
    "anchor_presets": ["medium"],
    "pix_fmts": list(PIX_FMTS),
    "low_delay": False,
    "crfs": [18, 26, 34, 42],
}
FULL = {
    "enerv_presets": ["enerv-grid-xs", "enerv-grid-s", "enerv-grid-m", "enerv-grid-l", "enerv-grid-xl"],
    "enerv_points": "30,40,50,60,70",
    "budget_seconds": 0.0,
    "anchor_presets": ["medium", "veryslow"],
    "pix_fmts": list(PIX_FMTS),
    "low_delay": True,
    "crfs": [18, 22, 26, 30, 34, 38, 42, 46],
}


@dataclass(frozen=True)
class BenchSettings:
    """Everything a benchmark run does, from its command line."""

    argv: tuple[str, ...]
    inputs: tuple[Path, ...]
    output: Path
    codecs: tuple[str, ...]
    enerv_presets: tuple[CodecPreset, ...]  # --epochs applied
    enerv_points: tuple[ENeRVPoint, ...]
    budget_seconds: float
    device: str  # as asked: auto, cpu or cuda
    crfs: tuple[float, ...]
    anchor_presets: tuple[str, ...]
    pix_fmts: tuple[str, ...]
    low_delay: bool
    jobs: int  # anchor encodes at once; 0 = decided by the plan
    frame_range: tuple[int, int | None] | None
    size: tuple[int, int] | None
    bd_method: str
    force: bool
    dry_run: bool
    quiet: bool


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="enerv-bench", description="Rate-distortion benchmark: E-NeRV against x264 and x265.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files (or PNG patterns / folders)")
    p.add_argument("-o", "--output", required=True, help="output folder (its parent must exist)")
    p.add_argument("--codecs", default=",".join(CODECS), help="comma-separated, of: " + ", ".join(CODECS))
    p.add_argument("--quick", action="store_true",
                   help="a small sweep (about 15 minutes for the bundled clip on 2 idle CPU cores)")
    g = p.add_argument_group("E-NeRV points")
    g.add_argument("--enerv-presets", help="comma-separated presets of cfgs/, one curve each "
                                           "(default: enerv-grid-xs,-m,-xl with --quick, else "
                                           "enerv-grid-xs,-s,-m,-l,-xl)")
    g.add_argument("--enerv-points", help=f"comma-separated points, each {POINT_SPEC}: "
                   "the points of every preset's curve; "
                                          "they share one fit per preset and video "
                                          f"(default: {QUICK['enerv_points']} with --quick, "
                                          f"else {FULL['enerv_points']})")
    g.add_argument("--epochs", type=int, help="fitting epochs instead of the preset's (fine-tune epochs scale along)")
    g.add_argument("--budget-seconds", type=float,
                   help="time budget per E-NeRV point: fewer epochs when the estimated fit + fine-tune time is "
                        "longer, one factor for a whole curve (0 = none; default 300 with --quick, else none)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where E-NeRV fits and decodes")
    g = p.add_argument_group("anchors")
    g.add_argument("--crfs", help="comma-separated CRFs (default: 18,26,34,42 with --quick, else 18,22,...,46)")
    g.add_argument("--anchor-presets", help="comma-separated x264/x265 presets (default: medium with --quick, "
                                            "else medium,veryslow)")
    g.add_argument("--pix-fmts", help="comma-separated, of yuv420p, yuv444p (default: both)")
    g.add_argument("--low-delay", action=argparse.BooleanOptionalAction, default=None,
                   help=f"also a low-delay setting ({LOW_DELAY_PRESET}, tune zerolatency, GOP 12, no B-frames); "
                        "default: on, off with --quick")
    g.add_argument("--jobs", type=int, default=0,
                   help="anchor encodes at once (0 = auto: 1 unless E-NeRV runs on a GPU and there are 4+ cores)")
    g = p.add_argument_group("input and output")
    g.add_argument("--frames", help="use frames A:B (half-open) of every input")
    g.add_argument("--size", help="resize every input to WxH")
    g.add_argument("--bd-method", choices=BD_METHODS, default="akima", help="BD interpolation (default akima)")
    g.add_argument("--force", action="store_true", help="recompute every point and fit, ignoring the caches")
    g.add_argument("--dry-run", action="store_true", help="list the points and whether they are cached; encode nothing")
    g.add_argument("-q", "--quiet", action="store_true", help="one line per point, no progress bars")
    return p


def split_list(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise InputError(f"{what}: expected a comma-separated list, got {text!r}")
    if len(set(items)) != len(items):
        raise InputError(f"{what}: {text!r} repeats an item")
    return items


def _check_output(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    if not parent.is_dir():
        raise InputError(f"the output's parent folder {parent} does not exist")
    target = out if out.is_dir() else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise InputError(f"output folder {target} is not writable")
    for sub in ("cache", "files", "fits"):
        if (out / sub).exists() and not (out / sub).is_dir():
            raise InputError(f"{out / sub} exists and is not a folder")


def _crfs(text: str | None, default: list[int]) -> tuple[float, ...]:
    crfs = []
    for item in split_list(text, "--crfs") if text else [str(c) for c in default]:
        try:
            value = float(item)
        except ValueError:
            raise InputError(f"--crfs: {item!r} is not a number") from None
        if not 0 <= value <= 51:
            raise InputError(f"--crfs: {item} is outside 0..51")
        crfs.append(int(value) if value == int(value) else value)
    return tuple(crfs)


def _choices(text: str | None, default: list[str], allowed: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = split_list(text, what) if text else default
    bad = [i for i in items if i not in allowed]
    if bad:
        raise InputError(f"{what}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    return tuple(items)


def parse_settings(argv: list[str]) -> BenchSettings:
    """The checked settings of a command line (inputs are only checked later, by the plan)."""
    args = build_parser().parse_args(argv)
    defaults = QUICK if args.quick else FULL
    codecs = tuple(split_list(args.codecs, "--codecs"))
    unknown = [c for c in codecs if c not in CODECS]
    if unknown:
        raise InputError(f"unknown codec(s) {', '.join(unknown)}; choose from {', '.join(CODECS)}")
    out = Path(args.output)
    _check_output(out)
    if args.jobs < 0:
        raise InputError(f"--jobs must be 0 (auto) or more, got {args.jobs}")
    if args.epochs is not None and args.epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {args.epochs}")
    budget = defaults["budget_seconds"] if args.budget_seconds is None else args.budget_seconds
    if not (budget >= 0 and math.isfinite(budget)):
        raise InputError(f"--budget-seconds must be 0 (none) or a positive number, got {args.budget_seconds}")

    presets: tuple[CodecPreset, ...] = ()
    points: tuple[ENeRVPoint, ...] = ()
    if "enerv" in codecs:
        if args.enerv_presets:
            names = split_list(args.enerv_presets, "--enerv-presets")
        else:
            names = [n for n in defaults["enerv_presets"] if n in preset_names()] or ["enerv-grid-m"]
        presets = tuple(with_fit_epochs(load_preset(name), args.epochs) for name in names)
        points = tuple(parse_point(item) for item in
                       split_list(args.enerv_points or defaults["enerv_points"], "--enerv-points"))
    anchors = any(c != "enerv" for c in codecs)
    return BenchSettings(
        argv=tuple(argv), inputs=tuple(Path(p) for p in args.inputs), output=out, codecs=codecs,
        enerv_presets=presets, enerv_points=points, budget_seconds=budget, device=args.device,
        crfs=_crfs(args.crfs, defaults["crfs"]) if anchors else (),
        anchor_presets=_choices(args.anchor_presets, defaults["anchor_presets"], X26X_PRESETS, "--anchor-presets")
        if anchors else (),
        pix_fmts=_choices(args.pix_fmts, defaults["pix_fmts"], PIX_FMTS, "--pix-fmts") if anchors else (),
        low_delay=defaults["low_delay"] if args.low_delay is None else args.low_delay,
        jobs=args.jobs, frame_range=parse_frame_range(args.frames) if args.frames else None,
        size=parse_frame_size(args.size) if args.size else None, bd_method=args.bd_method, force=args.force,
        dry_run=args.dry_run, quiet=args.quiet)
