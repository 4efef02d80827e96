"""Rate-distortion benchmark: E-NeRV against x264 and x265, measured the same way.

    enerv-bench INPUT [INPUT ...] -o reports/NAME [--codecs enerv,x264,x265] [--quick]

Each point is a real file on disk, decoded and measured on 8-bit RGB against the RGB
source. Results are cached per (video, codec, setting, point) under ``OUT/cache`` so an
interrupted run resumes; ``--force`` recomputes, ``--dry-run`` lists the work.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from benchmarks.anchors import FFmpegAnchor, RDPoint, X264Anchor, X265Anchor
from compress.encode import compress_video
from decompress.decode import decode_frames, read_file_bytes
from pipeline.config import CodecPreset, load_preset, override
from pipeline.errors import InputError
from pipeline.files import write_atomically
from pipeline.render import resolve_device
from pipeline.metrics import ms_ssim_mean, psnr, psnr_yuv
from pipeline.video_io import Video, parse_frame_range, read_video

CODECS = ("enerv", "x264", "x265")
ANCHOR_CLASSES = {"x264": X264Anchor, "x265": X265Anchor}


@dataclass(frozen=True)
class EnervPoint:
    """One neural-codec point: a preset with codec settings; points sharing (preset,
    epochs) share one fit (the encoder resumes from the fitted checkpoint)."""

    preset: str
    epochs: int
    bits: int
    prune: float

    @property
    def setting(self) -> str:
        return f"{self.preset}-{self.epochs}ep"

    @property
    def label(self) -> str:
        return f"{self.bits}bit-prune{self.prune:g}"


@dataclass(frozen=True)
class AnchorPoint:
    anchor: FFmpegAnchor
    crf: int

    @property
    def setting(self) -> str:
        return self.anchor.setting()

    @property
    def label(self) -> str:
        return f"crf{self.crf}"


@dataclass
class Plan:
    """What the benchmark will run for one video."""

    video: Path
    points: list = field(default_factory=list)


def sweep(quick: bool, codecs: list[str], presets: list[str] | None, epochs: int | None,
          crfs: list[int] | None = None) -> list:
    """The points of the sweep, in run order."""
    points: list = []
    if "enerv" in codecs:
        if presets is None:
            presets = ["enerv-cpu-s"] if quick else ["enerv-cpu-s", "enerv-cpu-m"]
        settings = ([(6, 0.2), (5, 0.2), (8, 0.0)] if quick
                    else [(4, 0.3), (5, 0.2), (6, 0.2), (6, 0.0), (8, 0.0)])
        for name in presets:
            n_epochs = epochs if epochs is not None else load_preset(name).fit.epochs
            points += [EnervPoint(name, n_epochs, bits, prune) for bits, prune in settings]
    crfs = crfs or ([24, 30, 36, 42] if quick else [18, 23, 28, 33, 38, 43])
    anchor_settings = [("medium", False)] if quick else [("medium", False), ("veryslow", False), ("medium", True)]
    for codec in ("x264", "x265"):
        if codec not in codecs:
            continue
        for preset, low_delay in anchor_settings:
            for pix_fmt in ("yuv420p", "yuv444p"):
                anchor = ANCHOR_CLASSES[codec](preset=preset, pix_fmt=pix_fmt, low_delay=low_delay)
                points += [AnchorPoint(anchor, crf) for crf in crfs]
    return points


def _video_key(path: Path, frames: tuple[int, int | None] | None) -> str:
    stat = path.stat()
    ident = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{frames}"
    return hashlib.sha256(ident.encode()).hexdigest()[:16]


def _point_key(video_key: str, codec: str, point) -> str:
    if isinstance(point, EnervPoint):
        spec = f"{point.preset}|{point.epochs}|{point.bits}|{point.prune}"
    else:
        spec = f"{point.anchor.setting()}|{point.crf}"
    return hashlib.sha256(f"{video_key}|{codec}|{spec}".encode()).hexdigest()[:20]


def _codec_of(point) -> str:
    return "enerv" if isinstance(point, EnervPoint) else point.anchor.name


def _run_enerv(point: EnervPoint, video_path: Path, video: Video, frame_range, out_file: Path, fit_cache: Path,
               device, budget: float | None) -> tuple[RDPoint, list[dict]]:
    preset: CodecPreset = load_preset(point.preset)
    scale = point.epochs / preset.fit.epochs if preset.fit.epochs else 1.0
    preset = override(
        preset,
        fit=override(preset.fit, epochs=point.epochs),
        codec=override(preset.codec, bits=point.bits, prune_ratio=point.prune,
                       prune_epochs=round(preset.codec.prune_epochs * scale),
                       qat_epochs=round(preset.codec.qat_epochs * scale)),
    )
    checkpoint = out_file.with_name(out_file.name + ".ckpt")
    shared_fit_seconds = 0.0
    resume = fit_cache.exists()
    if resume:  # the fit of this (preset, epochs) was done for another point: reuse it
        shutil.copy(fit_cache, checkpoint)
        shared_fit_seconds = json.loads(fit_cache.with_suffix(".json").read_text())["seconds"]
    result = compress_video(video_path, out_file, preset, frame_range=frame_range, device=device, resume=resume,
                            progress=False, keep_checkpoint=True)
    if not resume:
        shutil.copy(checkpoint, fit_cache)
        write_atomically(fit_cache.with_suffix(".json"),
                         json.dumps({"seconds": result.stage_seconds.get("fit", 0.0)}).encode())
    checkpoint.unlink(missing_ok=True)
    size = out_file.stat().st_size
    start = time.perf_counter()
    decoded = decode_frames(read_file_bytes(out_file), device=device)
    decode_seconds = time.perf_counter() - start
    frames = video.frames
    T, H, W = frames.shape[:3]
    fps = video.info.fps
    row = RDPoint(
        codec="enerv", setting=point.setting, knob="bits", knob_value=float(point.bits),
        bytes=size, bpp=8.0 * size / (W * H * T), kbps=8.0 * size / (T / fps) / 1000.0,
        psnr_rgb=psnr(decoded.frames, frames), psnr_yuv=psnr_yuv(decoded.frames, frames),
        ms_ssim=ms_ssim_mean(decoded.frames, frames),
        encode_seconds=result.seconds + shared_fit_seconds, decode_seconds=decode_seconds,
        frames=T, width=W, height=H,
        command=(f"enerv-compress {video_path} -o {out_file.name} --preset {point.preset} --epochs {point.epochs} "
                 f"--bits {point.bits} --prune {point.prune:g}"),
    )
    if budget is not None and row.encode_seconds > budget:
        print(f"note: {point.setting} {point.label} took {row.encode_seconds:.0f} s, over the "
              f"{budget:.0f} s budget", file=sys.stderr)
    return row, result.fit_history


def row_time(row: dict) -> float:
    return row["encode_seconds"] + row["decode_seconds"]


def run_benchmark(args: argparse.Namespace) -> int:
    out = Path(args.output)
    codecs = [c.strip() for c in args.codecs.split(",") if c.strip()]
    unknown = sorted(set(codecs) - set(CODECS))
    if unknown or not codecs:
        raise InputError(f"unknown codec(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(CODECS)}")
    videos = [Path(v) for v in args.inputs]
    for v in videos:
        if not v.exists():
            raise InputError(f"{v}: no such file")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"output folder {parent} does not exist")
    if out.exists() and not out.is_dir():
        raise InputError(f"output {out} exists and is not a folder")
    frame_range = parse_frame_range(args.frames) if args.frames else None
    device = resolve_device(args.device)
    presets = args.enerv_presets.split(",") if args.enerv_presets else None
    for name in presets or []:
        load_preset(name)  # refuse an unknown preset before any work
    try:
        crfs = [int(c) for c in args.crfs.split(",")] if args.crfs else None
    except ValueError:
        raise InputError(f"--crfs expects integers separated by commas, got {args.crfs!r}") from None
    if crfs and any(not 0 <= c <= 51 for c in crfs):
        raise InputError("CRF values must be in 0..51")
    points = sweep(args.quick, codecs, presets, args.epochs, crfs)
    for point in points:
        if isinstance(point, AnchorPoint):
            point.anchor.check_available()

    if args.dry_run:
        for video in videos:
            for point in points:
                print(f"{video.name}: {_codec_of(point)} {point.setting} {point.label}")
        print(f"{len(videos) * len(points)} points")
        return 0

    from benchmarks.rd_report import write_reports

    cache = out / "cache"
    files = out / "files"
    cache.mkdir(parents=True, exist_ok=True)
    rows, histories = [], {}
    for video_path in videos:
        video = read_video(video_path, frame_range=frame_range)
        vkey = _video_key(video_path, frame_range)
        vfiles = files / video_path.stem
        vfiles.mkdir(parents=True, exist_ok=True)
        for i, point in enumerate(points):
            codec = _codec_of(point)
            key = _point_key(vkey, codec, point)
            cached = cache / f"{key}.json"
            target = vfiles / f"{codec}-{point.setting}-{point.label}{'.bin' if codec == 'enerv' else '.mp4'}"
            if cached.exists() and target.exists() and not args.force:
                entry = json.loads(cached.read_text())
            else:
                print(f"[{i + 1}/{len(points)}] {video_path.name}: {codec} {point.setting} {point.label}",
                      file=sys.stderr)
                history: list[dict] = []
                started = time.perf_counter()
                if isinstance(point, EnervPoint):
                    fit_cache = cache / f"fit-{vkey}-{point.setting}.ckpt"
                    if args.force and i == 0:
                        fit_cache.unlink(missing_ok=True)
                    row, history = _run_enerv(point, video_path, video, frame_range, target, fit_cache,
                                              device, args.budget_seconds)
                else:
                    row = point.anchor.run(video.frames, point.crf, video.info.fps, keep=target)
                entry = {"row": row.to_row(), "history": history, "seconds_spent": time.perf_counter() - started}
                write_atomically(cached, json.dumps(entry).encode())
            preset = point.preset if isinstance(point, EnervPoint) else point.anchor.preset
            row = dict(entry["row"], video=video_path.stem, preset=preset, point=point.label,
                       file=str(target.relative_to(out)),
                       seconds_spent=entry.get("seconds_spent", row_time(entry["row"])))
            rows.append(row)
            if entry["history"]:
                histories[(video_path.stem, row["setting"])] = entry["history"]
    write_reports(out, rows, histories, points)
    print(f"wrote {out}/results.csv, bd_rate.csv, rd.png, rd.svg, time_to_quality.png, report.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    from cli import OneLineErrorParser

    p = OneLineErrorParser(prog="enerv-bench", description="Rate-distortion benchmark against x264 and x265.")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="videos to benchmark")
    p.add_argument("-o", "--output", required=True, help="report folder (created)")
    p.add_argument("--codecs", default="enerv,x264,x265", help="comma-separated: enerv, x264, x265")
    p.add_argument("--quick", action="store_true", help="a small sweep (about 10 minutes on 2 CPU cores)")
    p.add_argument("--force", action="store_true", help="recompute cached points")
    p.add_argument("--dry-run", action="store_true", help="list the points and exit")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--frames", help="benchmark frames A:B of each input")
    p.add_argument("--enerv-presets", help="comma-separated presets for the neural codec")
    p.add_argument("--epochs", type=int, help="fitting epochs of the neural codec's points")
    p.add_argument("--crfs", help="comma-separated CRF values of the anchors' sweep")
    p.add_argument("--budget-seconds", type=float, help="warn when a neural point's encoding exceeds this")
    args = p.parse_args(argv)
    return run_benchmark(args)
