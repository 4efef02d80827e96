"""``enerv-bench``: rate-distortion benchmark of E-NeRV against x264 and x265.

    enerv-bench INPUT [INPUT ...] -o reports/NAME [--codecs enerv,x264,x265] [--quick]

For each input and codec it encodes at several rate points, decodes each file, measures it
against the source and writes into the output folder: ``results.csv`` (one row per point),
``bd_rate.csv``, ``rd.png``/``rd.svg``, ``time_to_quality.png``/``.csv`` and ``report.md``.
The encoded files stay under ``files/``; each finished point is cached as one JSON file under
``cache/``, so an interrupted benchmark continues where it stopped (``--force`` recomputes).

Every option is checked, every input probed and decoded and every encoder looked up before
any encoding starts; a problem is one ``error:`` line and exit status 2, with nothing written.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import hashlib
import json
import math
import multiprocessing
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks import report
from benchmarks.anchors import FFmpegAnchor, RDPoint, X264Anchor, X265Anchor, encoder_version
from pipeline.cli_common import OneLineErrorParser
from pipeline.config import CodecPreset, load_preset, override, preset_names, section_to_dict
from pipeline.errors import InputError
from pipeline.files import write_atomically
from pipeline.metrics import ms_ssim_mean, psnr, psnr_yuv
from pipeline.video_io import ffmpeg_version, parse_frame_range, parse_size, probe_video, read_video

SCHEMA = 1  # part of every cache key: a change of what a point means invalidates the cache
CODECS = ("enerv", "x264", "x265")
ANCHOR_CLASSES = {"x264": X264Anchor, "x265": X265Anchor}
X26X_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow",
                "placebo")
PIX_FMTS = ("yuv420p", "yuv444p")
LOW_DELAY_PRESET = "medium"

# What --quick and the default (full) run sweep; every item can be set by its own option.
QUICK = {
    "enerv_presets": ["enerv-cpu-s"],
    "enerv_points": "8:0,6:0.2,6:0.4",
    "budget_seconds": 150.0,
    "anchor_presets": ["medium"],
    "pix_fmts": list(PIX_FMTS),
    "low_delay": False,
    "crfs": [18, 26, 34, 42],
}
FULL = {
    "enerv_presets": ["enerv-cpu-s", "enerv-cpu-m", "enerv-cpu-l"],  # those that exist
    "enerv_points": "8:0,6:0.2,6:0.4,5:0.4",
    "budget_seconds": 0.0,
    "anchor_presets": ["medium", "veryslow"],
    "pix_fmts": list(PIX_FMTS),
    "low_delay": True,
    "crfs": [18, 22, 26, 30, 34, 38, 42, 46],
}

COLUMNS = [
    "video", "codec", "setting", "label", "point", "preset", "knob", "knob_value", "bytes", "bpp", "kbps",
    "psnr_rgb", "psnr_yuv", "ms_ssim", "encode_seconds", "decode_seconds", "frames", "width", "height", "fps",
    "pix_fmt", "crf", "low_delay", "bits", "prune_ratio", "epochs", "prune_epochs", "qat_epochs", "epochs_requested",
    "budget_seconds", "estimated_seconds", "parameters", "fit_seconds", "resumed", "device", "file", "command",
    "config", "key", "measured_at",
]


INT_COLUMNS = ["bytes", "frames", "width", "height", "bits", "epochs", "prune_epochs", "qat_epochs", "parameters"]


def build_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="enerv-bench", description="Rate-distortion benchmark: E-NeRV against x264 and x265.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="video files (or PNG patterns / folders)")
    p.add_argument("-o", "--output", required=True, help="output folder (its parent must exist)")
    p.add_argument("--codecs", default=",".join(CODECS), help="comma-separated, of: " + ", ".join(CODECS))
    p.add_argument("--quick", action="store_true",
                   help="a small sweep (about 10 minutes for the bundled clip on 2 CPU cores)")
    g = p.add_argument_group("E-NeRV points")
    g.add_argument("--enerv-presets", help="comma-separated presets of cfgs/, one curve each "
                                           "(default: enerv-cpu-s with --quick, else enerv-cpu-s,-m,-l)")
    g.add_argument("--enerv-points", help="comma-separated BITS:PRUNE pairs, the points of every preset's curve "
                                          f"(default: {QUICK['enerv_points']} with --quick, "
                                          f"else {FULL['enerv_points']})")
    g.add_argument("--epochs", type=int, help="fitting epochs instead of the preset's (fine-tune epochs scale along)")
    g.add_argument("--budget-seconds", type=float,
                   help="time budget per E-NeRV point: fewer epochs when the estimated fit + fine-tune time is "
                        "longer (0 = none; default 150 with --quick, else none)")
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
    g.add_argument("--bd-method", choices=report.BD_METHODS, default="akima", help="BD interpolation (default akima)")
    g.add_argument("--force", action="store_true", help="recompute every point, ignoring the cache")
    g.add_argument("--dry-run", action="store_true", help="list the points and whether they are cached; encode nothing")
    g.add_argument("-q", "--quiet", action="store_true", help="one line per point, no progress bars")
    return p


# --- the plan ---------------------------------------------------------------------------------


@dataclass
class VideoSource:
    path: Path
    name: str  # the "video" column
    slug: str  # its folder under files/
    fingerprint: dict
    frames: int
    width: int
    height: int
    fps: float
    pix_fmt: str


@dataclass
class Job:
    video: VideoSource
    codec: str
    setting: str
    point: str
    params: dict  # everything that defines the point (the cache key hashes it)
    file: str  # relative to the output folder
    anchor: FFmpegAnchor | None = None
    preset: CodecPreset | None = None  # E-NeRV: with bits, prune and --epochs applied (before any budget)
    key: str = field(default="")

    def __post_init__(self) -> None:
        blob = json.dumps({"schema": SCHEMA, "video": self.video.fingerprint, "codec": self.codec,
                           "setting": self.setting, "params": self.params}, sort_keys=True)
        self.key = hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass
class Plan:
    args: argparse.Namespace
    out: Path
    videos: list[VideoSource]
    jobs: list[Job]
    device: str
    frame_range: tuple[int, int | None] | None
    size: tuple[int, int] | None
    budget: float
    jobs_at_once: int
    settings: dict


def _split(text: str, what: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise InputError(f"{what}: expected a comma-separated list, got {text!r}")
    if len(set(items)) != len(items):
        raise InputError(f"{what}: {text!r} repeats an item")
    return items


def _parse_points(text: str) -> list[tuple[int, float]]:
    points = []
    for item in _split(text, "--enerv-points"):
        bits, sep, prune = item.partition(":")
        try:
            b, r = int(bits), float(prune if sep else "nan")
        except ValueError:
            raise InputError(f"--enerv-points: bad point {item!r}; expected BITS:PRUNE, e.g. 6:0.2") from None
        if not 2 <= b <= 16 or not 0 <= r < 1:
            raise InputError(f"--enerv-points: bad point {item!r}; bits must be 2..16 and prune in [0, 1)")
        points.append((b, r))
    return points


def _check_output(out: Path) -> None:
    parent = out.parent if str(out.parent) else Path(".")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    if not parent.is_dir():
        raise InputError(f"the output's parent folder {parent} does not exist")
    target = out if out.is_dir() else parent
    if not os.access(target, os.W_OK | os.X_OK):
        raise InputError(f"output folder {target} is not writable")
    for sub in ("cache", "files"):
        if (out / sub).exists() and not (out / sub).is_dir():
            raise InputError(f"{out / sub} exists and is not a folder")


def _fingerprint(path: Path, frame_range, size) -> dict:
    st = path.stat() if path.exists() else path.parent.stat()  # a PNG pattern: its folder
    return {"path": str(path.resolve()), "bytes": st.st_size, "mtime_ns": st.st_mtime_ns,
            "frames": list(frame_range) if frame_range else None, "size": list(size) if size else None}


_last_frames: dict[tuple, np.ndarray] = {}  # the last video decoded, so a one-video run decodes it once


def load_frames(path: Path, frame_range, size) -> np.ndarray:
    key = (str(path), frame_range, size)
    if key not in _last_frames:
        _last_frames.clear()
        _last_frames[key] = read_video(path, frame_range=frame_range, size=size).frames
    return _last_frames[key]


def _enerv_preset(name: str, bits: int, prune: float, epochs: int | None) -> CodecPreset:
    """The preset with this point's bits and pruning; ``epochs`` scales the fine-tunes as enerv-compress does."""
    preset = load_preset(name)
    fit, codec = preset.fit, preset.codec
    if epochs is not None and fit.epochs:
        scale = epochs / fit.epochs
        codec = override(codec, prune_epochs=round(codec.prune_epochs * scale),
                         qat_epochs=round(codec.qat_epochs * scale))
    fit = override(fit, epochs=epochs)
    # No pruning means no fine-tune after it: say so in the config that the row records.
    codec = override(codec, bits=bits, prune_ratio=prune, prune_epochs=codec.prune_epochs if prune > 0 else 0)
    return override(preset, fit=fit, codec=codec)


def _auto_jobs(device: str, runs_enerv: bool) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    # On a CPU, anchors next to a fit would slow it down and skew both timings.
    if runs_enerv and device == "cuda" and cores >= 4:
        return min(4, cores // 2)
    return 1


def make_plan(argv: list[str] | None) -> Plan:
    """Parses and checks everything; raises InputError before anything is written."""
    args = build_parser().parse_args(argv)
    defaults = QUICK if args.quick else FULL
    codecs = _split(args.codecs, "--codecs")
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
    frame_range = parse_frame_range(args.frames) if args.frames else None
    size = parse_size(args.size) if args.size else None

    device = "cpu"
    enerv_presets: list[CodecPreset] = []
    points: list[tuple[int, float]] = []
    if "enerv" in codecs:
        from pipeline.render import resolve_device

        device = resolve_device(args.device).type
        if args.enerv_presets:
            names = _split(args.enerv_presets, "--enerv-presets")
        else:
            names = [n for n in defaults["enerv_presets"] if n in preset_names()] or ["enerv-cpu-s"]
        points = _parse_points(args.enerv_points or defaults["enerv_points"])
        for name in names:
            for bits, prune in points:
                enerv_presets.append(_enerv_preset(name, bits, prune, args.epochs))  # validates all values

    anchors: list[FFmpegAnchor] = []
    crfs: list[float] = []
    anchor_codecs = [c for c in codecs if c in ANCHOR_CLASSES]
    if anchor_codecs:
        crfs = []
        for text in _split(args.crfs, "--crfs") if args.crfs else [str(c) for c in defaults["crfs"]]:
            try:
                value = float(text)
            except ValueError:
                raise InputError(f"--crfs: {text!r} is not a number") from None
            if not 0 <= value <= 51:
                raise InputError(f"--crfs: {text} is outside 0..51")
            crfs.append(int(value) if value == int(value) else value)
        presets = _split(args.anchor_presets, "--anchor-presets") if args.anchor_presets else defaults["anchor_presets"]
        bad = [p for p in presets if p not in X26X_PRESETS]
        if bad:
            raise InputError(f"--anchor-presets: unknown {', '.join(bad)}; choose from {', '.join(X26X_PRESETS)}")
        pix_fmts = _split(args.pix_fmts, "--pix-fmts") if args.pix_fmts else defaults["pix_fmts"]
        bad = [p for p in pix_fmts if p not in PIX_FMTS]
        if bad:
            raise InputError(f"--pix-fmts: unknown {', '.join(bad)}; choose from {', '.join(PIX_FMTS)}")
        low_delay = defaults["low_delay"] if args.low_delay is None else args.low_delay
        for codec in anchor_codecs:
            cls = ANCHOR_CLASSES[codec]
            extra = {"version_sei": False} if cls is X264Anchor else {}
            settings = [(p, f, False) for p in presets for f in pix_fmts]
            if low_delay:
                settings += [(LOW_DELAY_PRESET, f, True) for f in pix_fmts]
            for preset, pix_fmt, ld in settings:
                anchors.append(cls(preset=preset, pix_fmt=pix_fmt, low_delay=ld, **extra))
        for anchor in {type(a): a for a in anchors}.values():
            anchor.check_available()

    # Inputs last: the costliest checks (each is decoded once, to know it decodes).
    videos: list[VideoSource] = []
    seen: set[str] = set()
    for text in args.inputs:
        path = Path(text)
        info = probe_video(path)
        resolved = str(path.resolve())
        if resolved in seen:
            raise InputError(f"input {text} is given twice")
        seen.add(resolved)
        frames = load_frames(path, frame_range, size)
        T, H, W = frames.shape[:3]
        if any(a.pix_fmt == "yuv420p" for a in anchors) and (W % 2 or H % 2):
            raise InputError(f"{text}: {W}x{H} has an odd side, which yuv420p cannot hold; pass --size or "
                             "--pix-fmts yuv444p")
        if enerv_presets:
            from pipeline.geometry import resolve_network

            for preset in {p.name: p for p in enerv_presets}.values():
                resolve_network(preset.network, W, H)
        videos.append(VideoSource(path=path, name=text, slug="", fingerprint=_fingerprint(path, frame_range, size),
                                  frames=T, width=W, height=H, fps=info.fps, pix_fmt=info.pix_fmt))
    names = [Path(v.name).name for v in videos]
    stems = [Path(v.name).stem for v in videos]
    for v, name, stem in zip(videos, names, stems):
        if names.count(name) == 1:
            v.name = name
        suffix = "" if stems.count(stem) == 1 else "-" + hashlib.sha1(str(v.path.resolve()).encode()).hexdigest()[:6]
        v.slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in stem) + suffix

    jobs: list[Job] = []
    ffmpeg = ffmpeg_version() if anchors else None  # another ffmpeg build makes other anchor points
    for v in videos:
        for anchor in anchors:
            for crf in crfs:
                params = {"encoder": anchor.encoder, "preset": anchor.preset, "pix_fmt": anchor.pix_fmt,
                          "low_delay": anchor.low_delay, "crf": crf, "codec_flags": anchor.codec_flags(),
                          "ffmpeg": ffmpeg}
                point = f"crf{crf:g}"
                jobs.append(Job(v, anchor.name, anchor.setting(), point, params,
                                f"files/{v.slug}/{anchor.name}-{anchor.setting()}-{point}{anchor.extension}",
                                anchor=anchor))
        for preset in enerv_presets:
            bits, prune = preset.codec.bits, preset.codec.prune_ratio
            params = {"preset": preset.name, "bits": bits, "prune": prune, "epochs": args.epochs,
                      "budget_seconds": budget or None, "device": device,
                      "config": {k: section_to_dict(getattr(preset, k)) for k in ("network", "fit", "codec")}}
            point = f"{bits}b/{prune:.0%}"
            jobs.append(Job(v, "enerv", preset.name, point, params,
                            f"files/{v.slug}/enerv-{preset.name}-b{bits}-p{round(prune * 100):02d}.bin",
                            preset=preset))
    if len({j.key for j in jobs}) != len(jobs):
        raise InputError("the sweep names the same point twice (check --enerv-points and --crfs)")
    jobs_at_once = args.jobs or _auto_jobs(device, bool(enerv_presets))
    settings = {"codecs": codecs, "crfs": crfs, "anchors": anchors, "enerv_points": points,
                "enerv_presets": list(dict.fromkeys(p.name for p in enerv_presets))}
    return Plan(args, out, videos, jobs, device, frame_range, size, budget, jobs_at_once, settings)


# --- the cache --------------------------------------------------------------------------------


def _cache_path(plan: Plan, job: Job) -> Path:
    return plan.out / "cache" / f"{job.key}.json"


def load_cached(plan: Plan, job: Job) -> dict | None:
    """The cached record of a point, if it is there, readable, and its file is intact."""
    path = _cache_path(plan, job)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    row = record.get("row") if isinstance(record, dict) else None
    if not isinstance(row, dict) or record.get("key") != job.key or record.get("schema") != SCHEMA:
        return None
    try:
        if (plan.out / row["file"]).stat().st_size != row["bytes"]:
            return None
    except (OSError, KeyError, TypeError):
        return None
    return record


def _json_ready(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return _json_ready(value.item())
    if isinstance(value, dict):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    return value


def save_record(plan: Plan, job: Job, row: dict, history: list[dict]) -> dict:
    record = {"schema": SCHEMA, "key": job.key, "row": row, "history": history}
    write_atomically(_cache_path(plan, job), (json.dumps(_json_ready(record), indent=1) + "\n").encode())
    return record


# --- measuring a point ------------------------------------------------------------------------


def _now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def _base_row(job: Job) -> dict:
    v = job.video
    return {"video": v.name, "codec": job.codec, "setting": job.setting,
            "label": report.curve_label(job.codec, job.setting), "point": job.point, "frames": v.frames,
            "width": v.width, "height": v.height, "fps": v.fps, "file": job.file, "key": job.key,
            "measured_at": _now()}


def _measure_anchor(anchor: FFmpegAnchor, frames: np.ndarray, crf: float, fps: float, target: str) -> RDPoint:
    """Runs in the main process or in a pool worker: encode to ``target``, decode, measure."""
    return anchor.run(frames, crf, fps, keep=Path(target))


def _partial(final: Path) -> Path:
    return final.with_name(final.stem + ".partial" + final.suffix)  # keeps the extension ffmpeg needs


def _anchor_row(plan: Plan, job: Job, point: RDPoint, partial: Path) -> dict:
    final = plan.out / job.file
    os.replace(partial, final)
    row = _base_row(job)
    row.update(point.to_row())
    row.update({"codec": job.codec, "setting": job.setting, "preset": job.anchor.preset,
                "pix_fmt": job.anchor.pix_fmt, "crf": job.params["crf"], "low_delay": job.anchor.low_delay,
                "device": "cpu", "command": point.command.replace(str(partial), str(final)),
                "config": json.dumps(job.params, sort_keys=True)})
    return row


def estimate_seconds_per_epoch(preset: CodecPreset, frames: np.ndarray, device: str) -> float:
    """Seconds per training epoch over the whole clip, from two short epochs on a few frames.

    The second epoch is timed (the first carries one-off start-up costs) and scaled to the
    clip's number of steps per epoch.
    """
    import torch

    from compress.fit import Clip, train
    from pipeline.geometry import resolve_network
    from pipeline.networks import build_network

    T, H, W = frames.shape[:3]
    batch = preset.fit.batch_size
    subset = frames[: min(T, 3 * batch)]
    dev = torch.device(device)
    torch.manual_seed(0)
    model = build_network(resolve_network(preset.network, W, H)).to(dev)
    result = train(model, Clip.from_numpy(subset, dev), preset.fit, epochs=2, lr=preset.fit.lr, progress=False)
    epoch_seconds = result.history[-1]["seconds"] - result.history[0]["seconds"]
    steps = math.ceil(len(subset) / batch)
    return epoch_seconds / steps * math.ceil(T / batch)


def _epochs_of(preset: CodecPreset) -> tuple[int, int, int]:
    pe = preset.codec.prune_epochs if preset.codec.prune_ratio > 0 else 0
    return preset.fit.epochs, pe, preset.codec.qat_epochs


def apply_budget(preset: CodecPreset, seconds_per_epoch: float, budget: float) -> tuple[CodecPreset, float]:
    """Scales all epoch counts down by one factor when their estimated time exceeds ``budget``.

    Assumes a fine-tune epoch costs what a fitting epoch does. Returns the preset to run and
    the estimate for the epochs it runs.
    """
    fit, pe, qe = _epochs_of(preset)
    estimate = seconds_per_epoch * (fit + pe + qe)
    if budget <= 0 or estimate <= budget:
        return preset, estimate
    scale = budget / estimate
    fit = max(1, math.floor(fit * scale))
    pe = max(1, math.floor(pe * scale)) if pe else 0
    qe = max(1, math.floor(qe * scale)) if qe else 0
    preset = override(preset, fit=override(preset.fit, epochs=fit),
                      codec=override(preset.codec, prune_epochs=pe, qat_epochs=qe))
    return preset, seconds_per_epoch * (fit + pe + qe)


def enerv_command(job: Job, preset: CodecPreset, plan: Plan) -> str:
    """The enerv-compress command line that runs exactly this configuration."""
    fit, pe, qe = _epochs_of(preset)
    words = ["enerv-compress", str(job.video.path), "-o", str(plan.out / job.file), "--preset", preset.name,
             "--epochs", str(fit), "--prune-epochs", str(pe), "--qat-epochs", str(qe),
             "--prune", f"{preset.codec.prune_ratio:g}", "--bits", str(preset.codec.bits), "--device", plan.device]
    if plan.frame_range:
        start, stop = plan.frame_range
        words += ["--frames", f"{start}:{'' if stop is None else stop}"]
    if plan.size:
        words += ["--size", f"{plan.size[0]}x{plan.size[1]}"]
    return shlex.join(words)


_epoch_estimates: dict[tuple, float] = {}


def run_enerv(plan: Plan, job: Job, frames: np.ndarray, progress: bool) -> tuple[dict, list[dict]]:
    """One complete compress_video run to a .bin, then decode_frames from the file's bytes and measure."""
    from compress.encode import compress_video
    from compress.fit import FitInterrupted
    from decompress.decode import decode_frames, read_file_bytes

    final = plan.out / job.file
    checkpoint = final.with_name(final.name + ".ckpt")
    plan_file = final.with_name(final.name + ".plan.json")
    preset, estimate, resume = job.preset, math.nan, False
    # An interrupted point continues from its checkpoint with the epochs it had planned.
    saved = None
    if checkpoint.exists() and not plan.args.force:
        with contextlib.suppress(OSError, ValueError):
            saved = json.loads(plan_file.read_text())
    if isinstance(saved, dict) and saved.get("key") == job.key:
        fit, pe, qe = saved["epochs"]
        preset = override(preset, fit=override(preset.fit, epochs=fit),
                          codec=override(preset.codec, prune_epochs=pe, qat_epochs=qe))
        estimate, resume = saved.get("estimated_seconds", math.nan), True
    else:
        checkpoint.unlink(missing_ok=True)
        if plan.budget > 0:
            spe_key = (job.video.slug, preset.name, plan.device)
            if spe_key not in _epoch_estimates:
                _epoch_estimates[spe_key] = estimate_seconds_per_epoch(preset, frames, plan.device)
            preset, estimate = apply_budget(preset, _epoch_estimates[spe_key], plan.budget)
        write_atomically(plan_file, json.dumps({"key": job.key, "epochs": _epochs_of(preset),
                                                "estimated_seconds": _json_ready(estimate)}).encode())

    def compress(resume: bool):
        return compress_video(job.video.path, final, preset, frame_range=plan.frame_range, size=plan.size,
                              device=plan.device, resume=resume, progress=progress)

    start = time.perf_counter()
    try:
        try:
            result = compress(resume)
        except InputError as exc:
            if not resume or "checkpoint" not in str(exc):
                raise
            checkpoint.unlink(missing_ok=True)  # a checkpoint this run cannot use: start the point over
            start, resume = time.perf_counter(), False
            result = compress(False)
    except FitInterrupted:
        print(f"note: {job.file} keeps its checkpoint; the same command continues this point", file=sys.stderr)
        raise KeyboardInterrupt from None
    encode_seconds = time.perf_counter() - start
    plan_file.unlink(missing_ok=True)

    size = final.stat().st_size
    if size != result.bytes:
        raise RuntimeError(f"{final}: {size} bytes on disk, but the encoder reported {result.bytes}")
    start = time.perf_counter()
    decoded = decode_frames(read_file_bytes(final), device=plan.device)
    decode_seconds = time.perf_counter() - start
    if decoded.frames.shape != frames.shape:
        raise RuntimeError(f"{final} decodes to {decoded.frames.shape}, expected {frames.shape}")

    T, H, W = frames.shape[:3]
    fit, pe, qe = _epochs_of(preset)
    row = _base_row(job)
    row.update({
        "preset": preset.name, "knob": "bits,prune", "knob_value": f"{preset.codec.bits},{preset.codec.prune_ratio:g}",
        "bytes": size, "bpp": 8.0 * size / (W * H * T), "kbps": 8.0 * size / (T / job.video.fps) / 1000.0,
        "psnr_rgb": psnr(decoded.frames, frames), "psnr_yuv": psnr_yuv(decoded.frames, frames),
        "ms_ssim": ms_ssim_mean(decoded.frames, frames), "encode_seconds": encode_seconds,
        "decode_seconds": decode_seconds, "pix_fmt": "rgb24", "bits": preset.codec.bits,
        "prune_ratio": preset.codec.prune_ratio, "epochs": fit, "prune_epochs": pe, "qat_epochs": qe,
        "epochs_requested": "+".join(str(e) for e in _epochs_of(job.preset)),
        "budget_seconds": plan.budget or None, "estimated_seconds": estimate, "parameters": result.parameters,
        "fit_seconds": result.stage_seconds.get("fit", math.nan), "device": result.device, "resumed": resume,
        "command": enerv_command(job, preset, plan),
        "config": json.dumps({k: section_to_dict(getattr(preset, k)) for k in ("network", "fit", "codec")},
                             sort_keys=True),
    })
    return row, list(result.fit_history)


# --- running ----------------------------------------------------------------------------------


def _print_point(i: int, n: int, row: dict, cached: bool) -> None:
    print(f"[{i}/{n}] {row['video']} {row['label']} {row['point']}: {int(row['bytes']):,} bytes, "
          f"{row['bpp']:.4f} bpp, PSNR {row['psnr_rgb']:.2f} dB, encode {row['encode_seconds']:.2f} s"
          + (" (cached)" if cached else ""), flush=True)


def dry_run(plan: Plan) -> int:
    print(f"enerv-bench dry run: {len(plan.jobs)} points into {plan.out}; nothing is encoded")
    todo = 0
    for i, job in enumerate(plan.jobs, 1):
        cached = not plan.args.force and load_cached(plan, job) is not None
        todo += not cached
        detail = ""
        if job.preset is not None:
            fit, pe, qe = _epochs_of(job.preset)
            detail = f" ({fit}+{pe}+{qe} epochs" + (f", budget {plan.budget:g} s" if plan.budget else "") + ")"
        print(f"[{i}/{len(plan.jobs)}] {job.video.name} {report.curve_label(job.codec, job.setting)} {job.point}"
              f"{detail}: {'cached' if cached else 'would run'}")
    print(f"{todo} to run, {len(plan.jobs) - todo} cached")
    return 0


def run_jobs(plan: Plan) -> tuple[list[dict], set[str], dict[str, float]]:
    """Measures (or takes from the cache) every point; returns the records, the keys of the
    points measured in this run, and the wall time each codec took in this run."""
    progress = not plan.args.quiet and sys.stderr.isatty()
    records: dict[str, dict] = {}
    wall: dict[str, float] = {}
    measured: set[str] = set()
    n, done = len(plan.jobs), 0
    for video in plan.videos:
        jobs = [j for j in plan.jobs if j.video is video]
        todo = []
        for job in jobs:
            record = None if plan.args.force else load_cached(plan, job)
            if record is not None:
                record["row"]["video"] = video.name
                records[job.key] = record
                done += 1
                _print_point(done, n, record["row"], cached=True)
            else:
                todo.append(job)
        if not todo:
            continue
        (plan.out / "files" / video.slug).mkdir(parents=True, exist_ok=True)
        frames = load_frames(video.path, plan.frame_range, plan.size)
        anchor_jobs = [j for j in todo if j.anchor is not None]
        enerv_jobs = [j for j in todo if j.preset is not None]

        def finish(job: Job, row: dict, history: list[dict]) -> None:
            nonlocal done
            records[job.key] = save_record(plan, job, row, history)
            done += 1
            measured.add(job.key)
            _print_point(done, n, row, cached=False)

        partials = [_partial(plan.out / j.file) for j in anchor_jobs]
        try:
            pool = None
            futures = {}
            if plan.jobs_at_once > 1 and len(anchor_jobs) > 1:
                pool = concurrent.futures.ProcessPoolExecutor(plan.jobs_at_once,
                                                              mp_context=multiprocessing.get_context("spawn"))
                anchor_start = time.perf_counter()
                for job, partial in zip(anchor_jobs, partials):
                    futures[pool.submit(_measure_anchor, job.anchor, frames, job.params["crf"], video.fps,
                                        str(partial))] = (job, partial)
            else:
                for job, partial in zip(anchor_jobs, partials):
                    start = time.perf_counter()
                    point = _measure_anchor(job.anchor, frames, job.params["crf"], video.fps, str(partial))
                    finish(job, _anchor_row(plan, job, point, partial), [])
                    wall[job.codec] = wall.get(job.codec, 0.0) + time.perf_counter() - start
            for job in enerv_jobs:
                start = time.perf_counter()
                row, history = run_enerv(plan, job, frames, progress)
                finish(job, row, history)
                wall["enerv"] = wall.get("enerv", 0.0) + time.perf_counter() - start
            if pool is not None:
                try:
                    for future in concurrent.futures.as_completed(futures):
                        job, partial = futures[future]
                        finish(job, _anchor_row(plan, job, future.result(), partial), [])
                finally:
                    pool.shutdown(cancel_futures=True)
                # Concurrent: the anchors' wall time is shared, report it under one name.
                wall["x264+x265 (concurrent)"] = time.perf_counter() - anchor_start
        finally:
            for partial in partials:
                partial.unlink(missing_ok=True)
    ordered = [records[j.key] for j in plan.jobs]
    return ordered, measured, wall


# --- outputs ----------------------------------------------------------------------------------


def _caption(plan: Plan, results: pd.DataFrame) -> str:
    parts = []
    anchors = plan.settings["anchors"]
    if anchors:
        crfs = ", ".join(f"{c:g}" for c in plan.settings["crfs"])
        presets = ", ".join(dict.fromkeys(a.preset for a in anchors if not a.low_delay))
        versions = []
        for name, enc in (("x264", "libx264"), ("x265", "libx265")):
            if any(a.name == name for a in anchors):
                versions.append(f"{name} ({enc} {encoder_version(enc)})")
        low = any(a.low_delay for a in anchors)
        parts.append(
            f"Anchors: {' and '.join(versions)} through ffmpeg, 8-bit, CRF {crfs}, preset {presets}, default GOP "
            f"with B-frames" + (f"; 'low-delay' = preset {LOW_DELAY_PRESET}, tune zerolatency, GOP 12, no B-frames"
                                if low else "")
            + "; solid lines 4:2:0 (yuv420p), dashed 4:4:4 (yuv444p); RGB <-> Y'CbCr BT.709 limited range, "
              "explicit; x264's version SEI and x265's info SEI not written.")
    if "enerv" in set(results["codec"]):
        e = results[results["codec"] == "enerv"]
        low, high = int(e["epochs"].min()), int(e["epochs"].max())
        parts.append(f"E-NeRV: presets {', '.join(dict.fromkeys(e['setting']))}, points labelled bits/pruned "
                     f"fraction, {low if low == high else f'{low}-{high}'} fitting epochs on {plan.device}.")
    parts.append("Rate: whole files (container included for every codec). Quality: 8-bit RGB decoded from each "
                 "codec's own file against the RGB source.")
    return " ".join(parts)


def write_outputs(plan: Plan, records: list[dict], measured_keys: set[str], wall: dict[str, float], started: str,
                  start_time: float, argv: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    measured = len(measured_keys)
    out = plan.out
    results = pd.DataFrame([r["row"] for r in records]).reindex(columns=COLUMNS)
    results = results.sort_values(["video", "codec", "setting", "bpp"], kind="stable").reset_index(drop=True)
    for column in INT_COLUMNS:  # whole numbers, empty where a codec has no such knob
        results[column] = pd.to_numeric(results[column]).round().astype("Int64")
    write_atomically(out / "results.csv", results.to_csv(index=False).encode())
    bd = report.bd_table(results, plan.args.bd_method)
    write_atomically(out / "bd_rate.csv", bd.to_csv(index=False).encode())
    caption = _caption(plan, results)
    report.plot_rd(results, out / "rd.png", out / "rd.svg", caption)

    history_rows = []
    for r in records:
        row = r["row"]
        for h in r.get("history") or []:
            history_rows.append({"video": row["video"], "setting": row["setting"], "point": row["point"],
                                 "epoch": h["epoch"], "seconds": h["seconds"], "loss": h["loss"],
                                 "psnr": h["psnr"]})
    history = pd.DataFrame(history_rows, columns=["video", "setting", "point", "epoch", "seconds", "loss", "psnr"])
    has_ttq = not history.empty
    if has_ttq:
        write_atomically(out / "time_to_quality.csv", history.to_csv(index=False).encode())
        report.plot_time_to_quality(history, results, out / "time_to_quality.png")

    anchors = plan.settings["anchors"]
    anchor_note = ("x264 (libx264) and x265 (libx265) run through ffmpeg-python with CRF rate control, 8-bit. "
                   "**4:2:0** = `-pix_fmt yuv420p` (chroma at half resolution both ways, the usual delivery "
                   "format); **4:4:4** = `-pix_fmt yuv444p` (full-resolution chroma, like E-NeRV's RGB output). "
                   "Unless marked **low-delay**, each uses its preset's default GOP with B-frames; low-delay = "
                   f"preset {LOW_DELAY_PRESET}, `-tune zerolatency`, a keyframe every 12 frames, no B-frames. "
                   "x264's SEI message carrying its version and settings (no picture data, about 700 bytes) is "
                   "removed with `-bsf:v filter_units=remove_types=6`, as x265 is run with `info=0`. The exact "
                   "commands:") if anchors else "No anchor was run."
    if plan.budget > 0:
        budget_note = (f"Time budget: {plan.budget:g} s per point for fitting and fine-tuning, estimated from two "
                       "timed epochs on a few frames (a fine-tune epoch counted as a fitting epoch); a point whose "
                       "estimate exceeded it ran all its epoch counts scaled down by one factor, as listed "
                       "(`epochs_requested` in `results.csv` has the counts before the budget).")
    else:
        budget_note = "No time budget: every point ran its preset's epoch counts" + (
            f" with {plan.args.epochs} fitting epochs." if plan.args.epochs else ".")
    if plan.jobs_at_once > 1:
        concurrency = (f"Anchor points ran {plan.jobs_at_once} at a time in worker processes, while E-NeRV fitted "
                       f"on the {'GPU' if plan.device == 'cuda' else 'CPU'} in the main process: their times are "
                       "wall times under that load.")
    else:
        concurrency = "Every point ran alone, one after the other (nothing of this benchmark ran concurrently)."
    source = "; ".join(f"{v.name}: {v.pix_fmt}, {v.fps:g} fps" for v in plan.videos)
    info = {
        "command": "enerv-bench " + shlex.join(argv),
        "started": started,
        "finished": _now(),
        "wall_seconds": time.perf_counter() - start_time,
        "measured": measured,
        "cached": len(records) - measured,
        "caption": caption,
        "bd_method": plan.args.bd_method,
        "budget_note": budget_note,
        "anchor_note": anchor_note,
        "source_note": ("; a YUV source is converted with ffmpeg's defaults for its tagged colour space, an RGB "
                        f"one is taken as it is; sources: {source}"),
        "concurrency_note": concurrency,
        "wall_by_codec": wall,
        "measured_codecs": {r["row"]["codec"] for r in records if r["row"]["key"] in measured_keys},
        "time_to_quality": has_ttq,
        "machine": report.machine_info(plan.device),
    }
    report.write_report(out / "report.md", results, bd, info)
    return results, bd


def _headline(results: pd.DataFrame, bd: pd.DataFrame) -> None:
    avg = bd[bd["video"] == "average"]
    for _, r in avg[avg["test_codec"] == "enerv"].iterrows():
        print(f"BD-rate {report.curve_label(r['test_codec'], r['test_setting'])} vs "
              f"{report.curve_label(r['anchor_codec'], r['anchor_setting'])}: "
              f"{report.fmt(r['bd_rate_psnr_rgb'], '+.1f')} % (PSNR-RGB), "
              f"BD-PSNR {report.fmt(r['bd_psnr_psnr_rgb'], '+.2f')} dB")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    started, start_time = _now(), time.perf_counter()
    plan = make_plan(argv)
    if plan.args.dry_run:
        return dry_run(plan)
    plan.out.mkdir(exist_ok=True)
    for sub in ("cache", "files"):
        (plan.out / sub).mkdir(exist_ok=True)
    records, measured_keys, wall = run_jobs(plan)
    results, bd = write_outputs(plan, records, measured_keys, wall, started, start_time, argv)
    _headline(results, bd)
    measured = len(measured_keys)
    print(f"{len(records)} points ({measured} measured, {len(records) - measured} cached) in "
          f"{time.perf_counter() - start_time:.0f} s; wrote {plan.out}/report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
