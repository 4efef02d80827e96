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
from benchmarks.registry import ANCHOR_CODECS, ANCHORS, CHROMA
from pipeline.cli_common import OneLineErrorParser, add_version
from pipeline.config import CodecPreset, load_preset, preset_names
from pipeline.errors import InputError
from pipeline.presets import with_fit_epochs
from pipeline.video_io import parse_frame_range, parse_frame_size

CODECS = ("enerv", *ANCHOR_CODECS)
PIX_FMTS = tuple(CHROMA)
LOW_DELAY_PRESET = "medium"

# What --quick and the default (full) run sweep; every item can be set by its own option. The
# anchors' presets and rate values are their registry entries' (benchmarks.registry).
# --quick runs the plain command's codec (enerv-latent-xs) at five rate targets, 120 s a point:
# 0.02-0.3 bpp, no two neighbours more than 2x apart, on every clip (a ladder of qualities cannot
# do that: the same quality gave 0.089 bpp on vtest and 0.30 on the bundled clip). Rate control
# steers each point onto its target. The full run sweeps the enerv-grid ladder, the Pareto
# envelope of (network size, quality) pairs, without a budget.
QUICK = {
    "mode": "quick",
    "enerv_presets": ["enerv-latent-xs"],
    "enerv_points": "0.02bpp,0.04bpp,0.08bpp,0.15bpp,0.3bpp",
    "budget_seconds": (120.0,),
    "pix_fmts": list(PIX_FMTS),
    "low_delay": False,
}
FULL = {
    "mode": "full",
    "enerv_presets": ["enerv-grid-xs", "enerv-grid-s", "enerv-grid-m", "enerv-grid-l", "enerv-grid-xl"],
    "enerv_points": "30,40,50,60,70",
    "budget_seconds": (0.0,),
    "pix_fmts": list(PIX_FMTS),
    "low_delay": True,
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
    budget_seconds: tuple[float, ...]  # per point, ascending; (0.0,) = none; several: one curve per preset each
    device: str  # as asked: auto, cpu or cuda
    explicit_codecs: bool  # --codecs was given: a codec this ffmpeg lacks is an error, not skipped
    rates: dict[str, tuple[float, ...]]  # anchor -> its CRFs (QPs for vvenc)
    anchor_presets: dict[str, tuple[str, ...]]  # anchor -> its presets
    pix_fmts: tuple[str, ...]  # chroma formats asked (each anchor runs those it offers)
    low_delay: bool
    vmaf: bool
    jobs: int  # anchor encodes at once; 0 = decided by the plan
    frame_range: tuple[int, int | None] | None
    size: tuple[int, int] | None
    bd_method: str
    force: bool
    dry_run: bool
    quiet: bool


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="enerv-bench",
                           description="Rate-distortion benchmark: E-NeRV against " + ", ".join(ANCHOR_CODECS) + ".")
    add_version(p)
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files (or PNG patterns / folders)")
    p.add_argument("-o", "--output", required=True, help="output folder (its parent must exist)")
    p.add_argument("--codecs", help="comma-separated, of: " + ", ".join(CODECS) + " (default: all; an anchor this "
                                    "ffmpeg lacks is then left out, while one named here is an error)")
    p.add_argument("--quick", action="store_true",
                   help="a small sweep: the plain command's codec at five rate targets (0.02-0.3 bpp), 120 s a point, "
                        "and each anchor's "
                        "quick presets (--dry-run gives the total)")
    g = p.add_argument_group("E-NeRV points")
    g.add_argument("--enerv-presets", help="comma-separated presets of cfgs/, one curve each "
                                           "(default: " + ",".join(QUICK["enerv_presets"]) + " with --quick, else "
                                           "enerv-grid-xs,-s,-m,-l,-xl)")
    g.add_argument("--enerv-points", help=f"comma-separated points, each {POINT_SPEC}: "
                   "the points of every preset's curve; "
                                          "they share one fit per preset and video where the preset fits before "
                                          "the rate term (the enerv-grid presets) "
                                          f"(default: {QUICK['enerv_points']} with --quick, "
                                          f"else {FULL['enerv_points']})")
    g.add_argument("--epochs", type=int, help="fitting epochs instead of the preset's (fine-tune epochs scale along)")
    g.add_argument("--budget-seconds", metavar="SECONDS[,SECONDS...]",
                   help="time budget per E-NeRV point: fewer epochs when the estimated fit + fine-tune time is "
                        "longer, one factor for a whole curve (0 = none; default "
                        f"{QUICK['budget_seconds'][0]:g} with --quick, else none); "
                        "several, comma-separated (75,150,300,600), give each preset one curve per budget and the "
                        "report a 'What minutes buy' section")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where E-NeRV fits and decodes")
    g = p.add_argument_group("anchors")
    rates = "; ".join(f"{s.name} {s.knob.upper()} {','.join(f'{v:g}' for v in s.rates['quick'])}"
                      for s in ANCHORS.values())
    presets = "; ".join(f"{s.name} {','.join(s.default_presets['quick'])} ({','.join(s.default_presets['full'])})"
                        for s in ANCHORS.values())
    g.add_argument("--crfs", help="comma-separated rate values: each VALUE (for every anchor) or CODEC:VALUE (for "
                                  "that one only), CRF for all but vvenc, whose value is a QP (default with --quick: "
                                  f"{rates}; the full run sweeps more)")
    g.add_argument("--anchor-presets", help="comma-separated presets, each PRESET (for every anchor that has it) or "
                                            "CODEC:PRESET; an anchor given none runs its default (with --quick, and "
                                            f"in brackets the full run's: {presets})")
    g.add_argument("--pix-fmts", help="comma-separated, of yuv420p, yuv444p (default: both; an anchor runs those "
                                      "its encoder in this ffmpeg takes: VVenC codes 4:2:0 in 10 bits)")
    g.add_argument("--low-delay", action=argparse.BooleanOptionalAction, default=None,
                   help=f"also a low-delay setting of x264 and x265 ({LOW_DELAY_PRESET}, tune zerolatency, GOP 12, no "
                        "B-frames); "
                        "default: on, off with --quick")
    g.add_argument("--vmaf", action=argparse.BooleanOptionalAction, default=True,
                   help="measure VMAF (libvmaf, model vmaf_v0.6.1) on every point (default: on where ffmpeg has "
                        "libvmaf)")
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


def parse_budgets(text: str) -> tuple[float, ...]:
    """'300' -> (300.0,); '600,75,150' -> (75.0, 150.0, 600.0); '0' -> (0.0,), no budget. 0 cannot be one
    of several budgets (it has no place on the report's seconds axis)."""
    budgets = []
    for item in split_list(text, "--budget-seconds"):
        try:
            value = float(item)
        except ValueError:
            value = math.nan
        if not (value >= 0 and math.isfinite(value)):
            raise InputError(f"--budget-seconds must be 0 (none) or positive numbers of seconds, got {item!r}")
        budgets.append(value)
    if len(budgets) > 1 and 0 in budgets:
        raise InputError(f"--budget-seconds: 0 (no budget) cannot be one of several budgets, got {text!r}")
    if len(set(budgets)) != len(budgets):
        raise InputError(f"--budget-seconds: {text!r} repeats a budget")
    return tuple(sorted(budgets))


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


def _per_anchor(text: str | None, what: str, anchors: tuple[str, ...]) -> tuple[dict[str, list[str]], list[str]]:
    """The CODEC:VALUE items of an option, by anchor, and its plain items."""
    specific: dict[str, list[str]] = {}
    plain: list[str] = []
    for item in split_list(text, what) if text else []:
        codec, sep, value = item.partition(":")
        if not sep:
            plain.append(item)
        elif codec not in anchors:
            raise InputError(f"{what}: {item!r} names {codec!r}, which is not an anchor of this run "
                             f"({', '.join(anchors) or 'none'})")
        else:
            specific.setdefault(codec, []).append(value.strip())
    return specific, plain


def _rates(text: str | None, anchors: tuple[str, ...], mode: str) -> dict[str, tuple[float, ...]]:
    specific, plain = _per_anchor(text, "--crfs", anchors)
    rates = {}
    for name in anchors:
        spec = ANCHORS[name]
        items = specific.get(name) or plain or [f"{v:g}" for v in spec.rates[mode]]
        values = []
        for item in items:
            try:
                value = float(item)
            except ValueError:
                raise InputError(f"--crfs: {item!r} is not a number") from None
            low, high = spec.knob_range
            if not low <= value <= high:
                raise InputError(f"--crfs: {item} is outside {name}'s {spec.knob.upper()} range {low}..{high}")
            values.append(int(value) if value == int(value) else value)
        rates[name] = tuple(values)
    return rates


def _anchor_presets(text: str | None, anchors: tuple[str, ...], mode: str) -> dict[str, tuple[str, ...]]:
    specific, plain = _per_anchor(text, "--anchor-presets", anchors)
    for name, presets in specific.items():
        bad = [p for p in presets if p not in ANCHORS[name].presets]
        if bad:
            raise InputError(f"--anchor-presets: {name} has no preset {', '.join(bad)}; choose from "
                             f"{', '.join(ANCHORS[name].presets)}")
    unknown = [p for p in plain if not any(p in ANCHORS[name].presets for name in anchors)]
    if unknown:
        raise InputError(f"--anchor-presets: unknown {', '.join(unknown)} for "
                         f"{', '.join(anchors) or 'no anchor'}; name one as CODEC:PRESET")
    chosen = {}
    for name in anchors:
        spec = ANCHORS[name]
        known = [p for p in plain if p in spec.presets]
        chosen[name] = tuple(specific.get(name) or known or spec.default_presets[mode])
    return chosen


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
    codecs = tuple(split_list(args.codecs, "--codecs")) if args.codecs else CODECS
    unknown = [c for c in codecs if c not in CODECS]
    if unknown:
        raise InputError(f"unknown codec(s) {', '.join(unknown)}; choose from {', '.join(CODECS)}")
    out = Path(args.output)
    _check_output(out)
    if args.jobs < 0:
        raise InputError(f"--jobs must be 0 (auto) or more, got {args.jobs}")
    if args.epochs is not None and args.epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {args.epochs}")
    budgets = defaults["budget_seconds"] if args.budget_seconds is None else parse_budgets(args.budget_seconds)

    presets: tuple[CodecPreset, ...] = ()
    points: tuple[ENeRVPoint, ...] = ()
    if "enerv" in codecs:
        if args.enerv_presets:
            names = split_list(args.enerv_presets, "--enerv-presets")
        else:
            names = [n for n in defaults["enerv_presets"] if n in preset_names()] or ["enerv-latent-xs"]
        presets = tuple(with_fit_epochs(load_preset(name), args.epochs) for name in names)
        points = tuple(parse_point(item) for item in
                       split_list(args.enerv_points or defaults["enerv_points"], "--enerv-points"))
    anchors = tuple(c for c in codecs if c != "enerv")
    return BenchSettings(
        argv=tuple(argv), inputs=tuple(Path(p) for p in args.inputs), output=out, codecs=codecs,
        enerv_presets=presets, enerv_points=points, budget_seconds=budgets, device=args.device,
        explicit_codecs=args.codecs is not None,
        # Anchor options are checked only when an anchor runs (a sweep may be reused with --codecs enerv).
        rates=_rates(args.crfs, anchors, defaults["mode"]) if anchors else {},
        anchor_presets=_anchor_presets(args.anchor_presets, anchors, defaults["mode"]) if anchors else {},
        pix_fmts=_choices(args.pix_fmts, defaults["pix_fmts"], PIX_FMTS, "--pix-fmts") if anchors else (),
        low_delay=defaults["low_delay"] if args.low_delay is None else args.low_delay, vmaf=args.vmaf,
        jobs=args.jobs, frame_range=parse_frame_range(args.frames) if args.frames else None,
        size=parse_frame_size(args.size) if args.size else None, bd_method=args.bd_method, force=args.force,
        dry_run=args.dry_run, quiet=args.quiet)
