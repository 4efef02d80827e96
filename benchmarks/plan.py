"""The plan of a benchmark run: its videos, its codecs (one per curve) and every point to measure.

Making the plan checks what remains to check before anything is written: every encoder is
looked up and every input is decoded once, so that a problem is one ``error:`` line.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from benchmarks.anchors import FFmpegCodec, encoder_version
from benchmarks.codec import Codec, Point
from benchmarks.enerv import ENeRV
from benchmarks.registry import ANCHORS, AnchorSpec
from benchmarks.settings import LOW_DELAY_PRESET, BenchSettings
from benchmarks.sources import FrameStore, ReadOptions, VideoSource, fingerprint
from pipeline.errors import InputError
from pipeline.ffmpeg import encoder_pix_fmts, ffmpeg_binary, ffmpeg_version, has_encoder

SCHEMA = 2  # part of every cache key: a change of what a point means invalidates the cache


@dataclass(frozen=True)
class Job:
    """One point of one curve on one video."""

    video: VideoSource
    codec: Codec
    point: Point
    file: str  # relative to the output folder
    key: str  # the point cache's key: video, codec, setting and the point's exact description


@dataclass(frozen=True)
class Plan:
    settings: BenchSettings
    videos: tuple[VideoSource, ...]
    codecs: tuple[Codec, ...]
    jobs: tuple[Job, ...]
    device: str  # where E-NeRV runs: cpu or cuda
    jobs_at_once: int  # anchor encodes at once
    skipped: tuple[tuple[str, str], ...] = ()  # (anchor, why): in the default set, but not runnable here
    vmaf_note: str = ""  # why VMAF is not measured ('' when it is)

    @property
    def out(self) -> Path:
        return self.settings.output

    @property
    def vmaf(self) -> bool:
        return not self.vmaf_note


def job_key(video: VideoSource, codec: Codec, point: Point) -> str:
    blob = json.dumps({"schema": SCHEMA, "video": video.fingerprint, "codec": codec.name,
                       "setting": codec.key_setting(), "point": codec.describe(point)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def _auto_jobs(device: str, runs_enerv: bool) -> int:
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count() or 1
    # On a CPU, anchors next to a fit would slow it down and skew both timings.
    if runs_enerv and device == "cuda" and cores >= 4:
        return min(4, cores // 2)
    return 1


def _pix_fmts(spec: AnchorSpec, asked: tuple[str, ...]) -> tuple[list[str], list[str], str]:
    """The encoder pixel formats of the asked chroma formats that this ffmpeg's encoder takes, the
    chroma formats left out, and why."""
    takes = encoder_pix_fmts(spec.encoder)
    usable, left_out = [], []
    for chroma in asked:
        pix_fmt = spec.chroma.get(chroma)
        if pix_fmt is not None and (not takes or pix_fmt in takes):
            usable.append(pix_fmt)
        else:
            left_out.append(chroma)
    return usable, left_out, f"its {spec.encoder} takes {', '.join(takes or spec.chroma.values())}"


def _anchors(settings: BenchSettings) -> tuple[list[FFmpegCodec], list[tuple[str, str]]]:
    """The anchor curves, and the anchors of the default set that this ffmpeg cannot run (an
    anchor named by --codecs that it cannot run is an InputError)."""
    ffmpeg = ffmpeg_version()  # another ffmpeg build makes other anchor points
    anchors: list[FFmpegCodec] = []
    skipped: list[tuple[str, str]] = []
    for name in (c for c in settings.codecs if c in ANCHORS):
        spec = ANCHORS[name]
        why = "" if has_encoder(spec.encoder) else f"this ffmpeg ({ffmpeg_binary()}) has no {spec.encoder} encoder"
        pix_fmts: list[str] = []
        if not why:
            pix_fmts, left_out, takes = _pix_fmts(spec, settings.pix_fmts)
            if not pix_fmts:
                why = f"{takes}, none of --pix-fmts {','.join(settings.pix_fmts)}"
            elif left_out:
                skipped.append((f"{name} {','.join(left_out)}", takes))
        if why:
            if settings.explicit_codecs:
                raise InputError(f"{name}: {why}")
            skipped.append((name, why))
            continue
        curves = [(p, f, False) for p in settings.anchor_presets[name] for f in pix_fmts]
        if settings.low_delay and spec.low_delay_flags is not None:
            curves += [(LOW_DELAY_PRESET, f, True) for f in pix_fmts]
        version = encoder_version(spec.encoder)
        anchors += [FFmpegCodec(anchor=name, preset=p, pix_fmt=f, low_delay=ld, rates=settings.rates[name],
                                library_version=version, ffmpeg=ffmpeg) for p, f, ld in curves]
    return anchors, skipped


def _videos(settings: BenchSettings, store: FrameStore, codecs: list[Codec]) -> list[VideoSource]:
    """Each input decoded once, to know it decodes and that every codec can serve its size."""
    from pipeline.geometry import resolve_network

    read: list[tuple[Path, object]] = []
    seen: set[str] = set()
    for path in settings.inputs:
        resolved = str(path.resolve())
        if resolved in seen:
            raise InputError(f"input {path} is given twice")
        seen.add(resolved)
        video = store.read(path)
        T, H, W = video.frames.shape[:3]
        if any(isinstance(c, FFmpegCodec) and c.pix_fmt.startswith("yuv420p") for c in codecs) and (W % 2 or H % 2):
            raise InputError(f"{path}: {W}x{H} has an odd side, which yuv420p cannot hold; pass --size or "
                             "--pix-fmts yuv444p")
        for preset in settings.enerv_presets:
            resolve_network(preset.network, W, H)
        read.append((path, video.info))
    names = [p.name for p, _ in read]
    stems = [p.stem for p, _ in read]
    videos = []
    options = ReadOptions(settings.frame_range, settings.size)
    for path, info in read:
        name = path.name if names.count(path.name) == 1 else str(path)
        suffix = "" if stems.count(path.stem) == 1 else "-" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:6]
        slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in path.stem) + suffix
        videos.append(VideoSource(path=path, name=name, slug=slug, fingerprint=fingerprint(path, options),
                                  frames=info.frames, width=info.width, height=info.height, fps=info.fps,
                                  pix_fmt=info.pix_fmt))
    return videos


def make_plan(settings: BenchSettings, store: FrameStore) -> Plan:
    """Builds the codecs and the points; raises InputError before anything is written."""
    device = "cpu"
    codecs: list[Codec] = []
    if settings.enerv_presets:
        from pipeline.render import resolve_device

        device = resolve_device(settings.device).type
        progress = not settings.quiet and sys.stderr.isatty()
        several = len(settings.budget_seconds) > 1  # each budget its own curves, named by it
        timings: dict[str, dict] = {}  # a preset's step timings, measured once for all its budgets
        for budget in settings.budget_seconds:
            for preset in settings.enerv_presets:
                codecs.append(ENeRV(preset=preset, curve=settings.enerv_points, device=device, budget_seconds=budget,
                                    budget_in_setting=several, fit_cache=settings.output / "fits",
                                    resume=not settings.force, progress=progress,
                                    _estimates=timings.setdefault(preset.name, {})))
    # Anchors first in the table, as before; the inputs last, their checks cost the most.
    anchors, skipped = _anchors(settings)
    codecs = anchors + codecs
    vmaf_note = "not measured (--no-vmaf)"
    if settings.vmaf:
        from benchmarks.vmaf import vmaf_unavailable

        why = vmaf_unavailable()
        vmaf_note = f"not measured: {why}" if why else ""
    videos = _videos(settings, store, codecs)
    jobs = [Job(video, codec, point, f"files/{video.slug}/{codec.file_name(point)}", job_key(video, codec, point))
            for video in videos for codec in codecs for point in codec.points()]
    if len({j.key for j in jobs}) != len(jobs):
        raise InputError("the sweep names the same point twice (check --enerv-points and --crfs)")
    if not jobs:
        raise InputError("nothing to run: " + "; ".join(f"{name}: {why}" for name, why in skipped))
    jobs_at_once = settings.jobs or _auto_jobs(device, bool(settings.enerv_presets))
    return Plan(settings, tuple(videos), tuple(codecs), tuple(jobs), device, jobs_at_once, tuple(skipped), vmaf_note)
