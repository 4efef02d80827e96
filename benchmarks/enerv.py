"""E-NeRV as a codec of the benchmark: a preset's curve of codec settings, encoded by compress_frames.

A point is a short label and a mapping of overrides of the preset's ``codec`` section
(the quality knob, a bit depth, pruning). Points of a curve differ only there, so they share one fit: the
first point to run fits and stores the network in the fit cache, the others take it from
there and run only their fine-tunes, quantization and coding; each still counts the fit's
time in its encode time, as shared work.

Adding a knob to the points (a rate knob, say) is one :class:`Knob` in :data:`KNOBS` and,
for its own column, one field in :class:`ENeRVDetails`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.budget import budget_factor, measure_steps, within_budget
from benchmarks.codec import Codec, Encoded, SourceClip
from benchmarks.curves import budget_setting
from compress.fit import FitInterrupted
from compress.plan import estimate_seconds
from compress.ratecontrol import RateRequest
from compress.result import ENCODER_NAME
from compress.video import compress_frames
from pipeline.config import CodecPreset, override, section_to_dict
from pipeline.epochs import EpochPlan
from pipeline.errors import InputError
from pipeline.files import write_atomically
from pipeline.presets import with_codec_settings


@dataclass(frozen=True)
class Knob:
    """One codec setting that ``--enerv-points`` sets, in the order a point writes them (6:0.2)."""

    name: str  # in the ``knob`` column and the option's help
    field: str  # the CodecConfig field it sets
    flag: str  # the enerv-compress option that sets it
    parse: Callable[[str], Any]
    label: Callable[[Any], str]  # its part of the point's label: '6b', '20%'
    token: Callable[[Any], str]  # its part of the point's file name: 'b6', 'p20'


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """'-' stands for None (no rate term, no bit depth)."""
    return lambda text: None if text.strip() == "-" else parse(text)


KNOBS = (
    Knob("quality", "quality", "--quality", _optional(float), lambda v: "" if v is None else f"q{v:g}",
         lambda v: "" if v is None else f"q{v:g}"),
    Knob("bits", "bits", "--bits", _optional(int), lambda v: "" if v is None else f"{v}b",
         lambda v: "" if v is None else f"b{v}"),
    Knob("prune", "prune_ratio", "--prune", float, lambda v: f"{v:.0%}", lambda v: f"p{round(v * 100):02d}"),
)


@dataclass(frozen=True)
class ENeRVPoint:
    """A point of an E-NeRV curve: overrides of the preset's codec section, with their label."""

    settings: tuple[tuple[str, Any], ...]  # (CodecConfig field, value) in KNOBS order
    label: str  # '6b/20%'
    token: str  # 'b6-p20'
    knob_value: str  # '6,0.2'
    target_bpp: float | None = None  # a rate target instead: rate control chooses the rest ('0.05bpp')


def make_point(values: tuple[Any, ...]) -> ENeRVPoint:
    """The point that sets each knob of KNOBS to its value.

    Its label and file token leave out what is not set, and a quality point's zero pruning
    ('q50'; '6b/20%' and 'b6-p20' without a quality, as before the quality knob existed).
    """
    shown = [(k, v) for k, v in zip(KNOBS, values)
             if not (k.field == "prune_ratio" and v == 0 and values[0] is not None)]
    return ENeRVPoint(settings=tuple((k.field, v) for k, v in zip(KNOBS, values)),
                      label="/".join(p for p in (k.label(v) for k, v in shown) if p),
                      token="-".join(p for p in (k.token(v) for k, v in shown) if p),
                      knob_value=",".join("-" if v is None else f"{v:g}" for v in values))


POINT_SPEC = ("QUALITY, BITS:PRUNE (no rate term), QUALITY:BITS:PRUNE ('-' for none) or BPPbpp (a rate target "
              "that rate control meets, e.g. 0.05bpp)")


def target_point(bpp: float) -> ENeRVPoint:
    """The point that asks rate control for ``bpp`` bits per pixel (the preset's codec settings)."""
    return ENeRVPoint(settings=(), label=f"{bpp:g}bpp", token=f"t{bpp:g}", knob_value=f"{bpp:g}bpp", target_bpp=bpp)


def parse_point(text: str) -> ENeRVPoint:
    """'50' -> quality 50 (unbounded alphabet, no pruning); '6:0.2' -> 6 bits, 20 % pruned, no rate term
    (the quantizer of earlier versions); '50:6:0.2' -> all three; '0.05bpp' -> a rate target of 0.05 bits per
    pixel. Checked as the codec config checks them."""
    if text.strip().lower().endswith("bpp"):
        try:
            bpp = float(text.strip()[:-3])
        except ValueError:
            bpp = math.nan
        if not (math.isfinite(bpp) and bpp > 0):
            raise InputError(f"--enerv-points: bad target {text!r}; expected a positive number of bits per pixel, "
                             "e.g. 0.05bpp")
        return target_point(bpp)
    parts = text.split(":")
    if len(parts) == 1:
        parts = [parts[0], "-", "0"]
    elif len(parts) == 2:
        parts = ["-", *parts]
    error = f"--enerv-points: bad point {text!r}; expected {POINT_SPEC}, e.g. 50, 6:0.2 or 50:-:0"
    if len(parts) != len(KNOBS):
        raise InputError(error)
    try:
        values = tuple(k.parse(p) for k, p in zip(KNOBS, parts))
    except ValueError:
        raise InputError(error) from None
    point = make_point(values)
    try:
        with_codec_settings(CodecPreset("check"), dict(point.settings))
    except InputError as exc:
        raise InputError(f"--enerv-points: bad point {text!r}: {exc}") from None
    return point


@dataclass(frozen=True)
class ENeRVDetails:
    """The columns of an E-NeRV row beyond the common ones."""

    preset: str
    quality: float | None
    bits: int | None
    prune_ratio: float
    epochs: int
    prune_epochs: int
    rd_epochs: int
    qat_epochs: int
    epochs_requested: str  # before the budget: 'fit+prune+rd+qat'
    budget_seconds: float | None
    estimated_seconds: float  # the budget's estimate for the epochs run (NaN without a budget)
    parameters: int
    fit_seconds: float  # the fit's own time, measured once however many points share it
    fit_reused: bool  # the fit came from the fit cache (run by an earlier point)
    fit_key: str  # equal keys, one shared fit
    resumed: bool
    device: str
    pix_fmt: str = "rgb24"


@dataclass(frozen=True)
class ENeRV(Codec):
    """One preset's curve. ``preset`` has the run's epoch settings applied (before any budget)."""

    preset: CodecPreset
    curve: tuple[ENeRVPoint, ...]
    device: str = "cpu"
    budget_seconds: float = 0.0
    budget_in_setting: bool = False  # one of several budgets: the curve's name says which ('enerv-grid-m@300s')
    fit_cache: Path | None = None
    resume: bool = True  # continue an interrupted point from its checkpoint
    progress: bool = False
    # Seconds per epoch measured for the budget, per source (the plan shares one between a preset's budgets).
    _estimates: dict = field(default_factory=dict, compare=False, repr=False)

    name = "enerv"
    extension = ".bin"
    knob = ",".join(k.name for k in KNOBS)

    def setting(self) -> str:
        return budget_setting(self.preset.name, self.budget_seconds) if self.budget_in_setting else self.preset.name

    def key_setting(self) -> str:
        return self.preset.name  # the budget is in describe()

    def points(self) -> tuple[ENeRVPoint, ...]:
        return self.curve

    def point_preset(self, point: ENeRVPoint) -> CodecPreset:
        """The preset with the point's codec settings (before any budget)."""
        preset = with_codec_settings(self.preset, dict(point.settings))
        # No pruning means no fine-tune after it: say so in the config that the row records.
        if preset.codec.prune_ratio == 0:
            preset = override(preset, codec=override(preset.codec, prune_epochs=0))
        return preset

    def describe(self, point: ENeRVPoint) -> dict:
        preset = self.point_preset(point)
        described = {"preset": preset.name, "settings": dict(point.settings),
                     "budget_seconds": self.budget_seconds or None, "device": self.device, "encoder": self.version(),
                     "config": {k: section_to_dict(getattr(preset, k)) for k in ("network", "fit", "codec")}}
        if point.target_bpp is not None:  # absent otherwise: the keys of quality points stay as they were
            described["target_bpp"] = point.target_bpp
        return described

    def version(self) -> str:
        import torch

        return f"{ENCODER_NAME} (torch {torch.__version__})"

    def _budgeted(self, preset: CodecPreset, clip: SourceClip) -> tuple[CodecPreset, float]:
        if self.budget_seconds <= 0:
            return preset, math.nan
        if clip.key not in self._estimates:
            self._estimates[clip.key] = measure_steps(self.preset, clip.frames, self.device)
        steps, parameters = self._estimates[clip.key]
        frames, batch = len(clip.frames), preset.fit.batch_size
        plans = [EpochPlan.of(self.point_preset(p)) for p in self.curve]
        factor = budget_factor(plans, steps, frames, batch, self.budget_seconds, parameters)
        plan = within_budget(EpochPlan.of(preset), factor)
        return plan.apply(preset), estimate_seconds(plan, steps, frames, batch, parameters)

    def encode(self, clip: SourceClip, point: ENeRVPoint, target_path: Path) -> Encoded:
        """compress_frames into ``target``; an interrupted point continues from its checkpoint
        with the epochs it had planned (kept beside it in ``TARGET.plan.json``)."""
        requested = self.point_preset(point)
        checkpoint = target_path.with_name(target_path.name + ".ckpt")
        plan_file = target_path.with_name(target_path.name + ".plan.json")
        plan_key = hashlib.sha256(json.dumps([clip.key, self.describe(point)], sort_keys=True).encode()).hexdigest()
        saved = None
        if self.resume and checkpoint.exists():
            with contextlib.suppress(OSError, ValueError):
                saved = json.loads(plan_file.read_text())
        if isinstance(saved, dict) and saved.get("key") == plan_key:
            preset = EpochPlan(*saved["epochs"]).apply(requested)
            estimate, resume = saved.get("estimated_seconds") or math.nan, True
        else:
            _remove(checkpoint)
            resume = False
            preset, estimate = self._budgeted(requested, clip)
            estimate_json = estimate if math.isfinite(estimate) else None
            write_atomically(plan_file, json.dumps({"key": plan_key, "epochs": EpochPlan.of(preset).as_list(),
                                                    "estimated_seconds": estimate_json}).encode())

        # A preset whose fit carries its rate term shares no fit between points: each point runs
        # under the encoder's own time budget (its pacer keeps the point within it) instead.
        paced = self.budget_seconds > 0 and requested.codec.rate_from_start != "none"
        if paced:
            preset = requested

        target = None
        if point.target_bpp is not None:
            T, H, W = clip.frames.shape[:3]
            target = RateRequest(bpp=point.target_bpp).target(W, H, T, clip.fps)

        def compress(resume: bool):
            return compress_frames(clip.frames, clip.fps, preset, device=self.device, progress=self.progress,
                                   fit_cache=self.fit_cache, checkpoint=checkpoint, resume=resume,
                                   source_id=clip.source_id, time_budget=self.budget_seconds if paced else None,
                                   target=target)

        try:
            try:
                data, result = compress(resume)
            except InputError as exc:
                if not resume or "checkpoint" not in str(exc):
                    raise
                _remove(checkpoint)  # a checkpoint this run cannot use: start the point over
                resume = False
                data, result = compress(False)
        except FitInterrupted:
            print(f"note: {target_path.name} keeps its checkpoint; the same command continues this point",
                  file=sys.stderr)
            raise KeyboardInterrupt from None
        write_atomically(target_path, data)
        _remove(checkpoint)
        plan_file.unlink(missing_ok=True)

        fit, pe, rd, qe = EpochPlan.of(preset).as_list()
        if paced and len(result.epochs) == 4:  # what the pacer ran
            fit, pe, rd, qe = result.epochs
            estimate = result.estimated_seconds
        details = ENeRVDetails(
            preset=preset.name, quality=result.quality if target is not None else preset.codec.quality,
            bits=preset.codec.bits,
            prune_ratio=preset.codec.prune_ratio, epochs=fit,
            prune_epochs=pe, rd_epochs=rd, qat_epochs=qe,
            epochs_requested=EpochPlan.of(requested).text,
            budget_seconds=self.budget_seconds or None, estimated_seconds=estimate, parameters=result.parameters,
            fit_seconds=result.fit_seconds, fit_reused=result.fit_reused, fit_key=result.fit_key, resumed=resume,
            device=result.device)
        command = self.command(clip, preset, target_path, self.budget_seconds if paced else None, point.target_bpp)
        return Encoded(command=command, details=details, shared_seconds=result.fit_seconds,
                       shared_reused=result.fit_reused, history=tuple(result.fit_history))

    def command(self, clip: SourceClip, preset: CodecPreset, target: Path, time_budget: float | None = None,
                target_bpp: float | None = None) -> str:
        """The enerv-compress command line that runs exactly this configuration (with
        ``time_budget``: the preset's epochs laid over that budget by the encoder; with
        ``target_bpp``: that rate target instead of the preset's quality)."""
        fit, pe, rd, qe = EpochPlan.of(preset).as_list()
        words = ["enerv-compress", str(clip.path), "-o", str(target), "--preset", preset.name]
        if time_budget is not None:
            words += ["--time-budget", f"{time_budget:g}"]
        else:
            words += ["--epochs", str(fit), "--prune-epochs", str(pe), "--rd-epochs", str(rd), "--qat-epochs", str(qe)]
        if target_bpp is not None:
            words += ["--target-bpp", f"{target_bpp:g}"]
        for knob in KNOBS:
            value = getattr(preset.codec, knob.field)
            if value is not None and not (target_bpp is not None and knob.field == "quality"):
                words += [knob.flag, f"{value:g}"]
        return shlex.join([*words, "--device", self.device, *clip.read_args])

    def decode(self, path: Path, width: int, height: int) -> np.ndarray:
        """decode_frames from the file's bytes: entropy decoding, the network rebuilt, every frame rendered."""
        from decompress.decode import decode_frames, read_file_bytes

        return decode_frames(read_file_bytes(path), device=self.device).frames


def _remove(checkpoint: Path) -> None:
    """Removes a point's checkpoint folder (or a checkpoint file of an earlier version)."""
    if checkpoint.is_dir():
        shutil.rmtree(checkpoint, ignore_errors=True)
    else:
        checkpoint.unlink(missing_ok=True)
