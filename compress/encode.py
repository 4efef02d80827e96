"""One segment's stages: fit -> prune -> quantize for rate and distortion, into coded tensors.

:func:`encode_segment` runs them on the frames of one segment and returns a
:class:`SegmentEncoding`; making the file of the segments is :mod:`compress.assemble`'s job,
driving the segments :mod:`compress.video`'s.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from compress.fit import Clip, FitInterrupted, fit_network, save_checkpoint, train
from compress.persist import FitCache, fit_fingerprint, load_fit_checkpoint, planned_in
from compress.plan import (
    BudgetPacer,
    StepSeconds,
    coding_load,
    estimate_seconds,
    measure_step_seconds,
    plan_for_budget,
    plan_lines,
)
from compress.prune import apply_masks, masked_weights, prune_by_magnitude
from compress.quantize import (
    NOISE,
    ROUND,
    STEP_LR,
    LearnedQuantizer,
    QuantizedNetwork,
    quantized_weights,
    quantizer_for,
)
from compress.rate_feedback import FeedbackSettings, RateFeedback, combine_on_step
from compress.ratecontrol import steered, step_multiplier
from pipeline.bitstream import CodedTensor, SegmentSpan
from pipeline.config import CodecPreset, NetworkConfig, lambda_for_quality
from pipeline.epochs import STAGE_NAMES, STAGES, EpochPlan
from pipeline.metrics import psnr
from pipeline.networks import build_network, count_parameters
from pipeline.render import render_frames
from pipeline.stages import StageTimer


@dataclass
class SegmentEncoding:
    """One segment encoded: its network's coded tensors and what happened on the way."""

    span: SegmentSpan
    coded: list[CodedTensor]
    parameters: int
    fit_psnr: float
    fit_history: list[dict]
    fit_seconds: float
    fit_reused: bool
    fit_key: str
    rate_lambda: float
    estimated_bits: float
    epochs: EpochPlan
    estimated_seconds: float
    stage_seconds: dict[str, float]
    # What a rate controller needs to move every step by one factor after training.
    quantized: QuantizedNetwork | None = None
    replans: int = 0  # how often a time budget re-planned the steps left
    steered: bool = False  # lambda followed a rate target while fitting (compress.rate_feedback)

    def coded_at(self, multiplier: float) -> list[CodedTensor]:
        """The tensors quantized with every step times ``multiplier`` (1: as trained)."""
        return self.coded if self.quantized is None else self.quantized.at(multiplier)


@dataclass(frozen=True)
class SegmentRate:
    """A segment's share of a rate target. ``size_of``: coded tensors -> bytes of a file holding
    this segment alone, of which ``overhead_bytes`` are header and side information;
    ``target_bytes``: what that file should come to. ``calibrate_steps``: scale the weights'
    steps onto the target before the rounding phase (a one-segment file; a file of several
    segments is calibrated as a whole when assembled)."""

    size_of: Callable[[list[CodedTensor]], int]
    target_bytes: int
    overhead_bytes: int
    calibrate_steps: bool = True


def segment_seed(seed: int, index: int) -> int:
    """The seed of segment ``index``: the preset's own for the first (so that a one-segment file is
    what it always was), and a different one for each other, whatever process encodes it."""
    return seed if index == 0 else seed + 1_000_003 * index


@dataclass(frozen=True)
class StagePlan:
    """What one segment will run, decided before fitting: the epochs and their time estimate."""

    epochs: EpochPlan
    steps: StepSeconds
    estimate: float
    parameters: int
    coding_load: int  # the parameters as the coding time sees them (compress.plan.coding_load)


def plan_segment(model: torch.nn.Module, clip: Clip, preset: CodecPreset, *, time_budget: float | None,
                 resumed: EpochPlan | None = None, reserved_frames: int = 0) -> StagePlan:
    """The epochs of a segment (the preset's; laid over ``time_budget`` seconds when given; those a
    resumed run planned) and their estimated time, from steps timed on this device."""
    steps = measure_step_seconds(model, clip, preset)
    parameters, load = count_parameters(model), coding_load(model)
    epochs = EpochPlan.of(preset)
    if resumed is not None:
        epochs = resumed
    elif time_budget is not None:
        budget = time_budget - steps.frame * reserved_frames
        epochs = plan_for_budget(epochs, steps, clip.num_frames, preset.fit.batch_size, budget, load)
    estimate = estimate_seconds(epochs, steps, clip.num_frames, preset.fit.batch_size, load,
                                fit_measured=time_budget is None)
    return StagePlan(epochs, steps, estimate, parameters, load)


@contextlib.contextmanager
def _resumable_from(checkpoint: Path | None):
    """An interruption after fitting can resume from the fitted network's checkpoint."""
    try:
        yield
    except FitInterrupted:
        raise FitInterrupted(checkpoint) from None


class _Stages:
    """The stage lengths of one segment: fixed, or re-planned by a pacer under a time budget."""

    def __init__(self, epochs: EpochPlan, steps_per_epoch: int, pacer: BudgetPacer | None):
        self.epochs, self.per_epoch, self.pacer = epochs, steps_per_epoch, pacer
        self.ran: dict[str, int] = {}  # optimizer steps each stage ran

    def as_run(self) -> EpochPlan:
        """The epochs that ran: the plan, or under a pacer what it made of the plan."""
        if self.pacer is None:
            return self.epochs
        return EpochPlan(*(round(self.ran.get(stage, 0) / self.per_epoch, 3) for stage in STAGES))

    def steps(self, stage: str) -> int:
        if self.pacer is not None:
            return self.pacer.stage_steps(stage)
        return self.epochs.steps(stage, self.per_epoch)

    def run(self, model, clip: Clip, preset: CodecPreset, stage: str, *, progress: bool, **kwargs):
        steps = self.steps(stage)
        if not steps:
            return None
        result = train(model, clip, preset.fit, epochs=steps / self.per_epoch, steps=steps,
                       lr=preset.codec.finetune_lr, desc=STAGE_NAMES[stage], progress=progress, pacer=self.pacer,
                       stage=stage, **kwargs)
        self.ran[stage] = result.steps
        return result


def _fit_stage(model: torch.nn.Module, clip: Clip, preset: CodecPreset, stages: _Stages, *, state: dict | None,
               cache: FitCache | None, fingerprint: str, tag: dict, checkpoint: Path | None,
               progress: bool, quantizer: LearnedQuantizer | None = None,
               rate: SegmentRate | None = None) -> tuple[list[dict], float, bool]:
    """Fits ``model`` (or takes the fit from a checkpoint or the fit cache): (history, seconds, reused).

    With ``quantizer`` the fit trains on the quantizer's noisy weights with the rate term (the
    quantizer trained along), and no fit cache is used: such a fit belongs to its rate. With
    ``rate`` too, lambda follows the measured size onto the target while fitting
    (:mod:`compress.rate_feedback`).
    """
    dev = clip.frames.device
    with_rate, feedback = {}, None
    if quantizer is not None:
        pixels = clip.num_frames * clip.height * clip.width
        latents_only = preset.codec.rate_from_start == "latents"
        transform = quantized_weights(quantizer, NOISE, lambda_for_quality(preset.codec.quality), pixels,
                                      latents_only=latents_only)
        if rate is not None:
            def measure() -> int:
                return rate.size_of(QuantizedNetwork.of(model, quantizer).coded) - rate.overhead_bytes

            feedback = RateFeedback(quantizer, rate.target_bytes - rate.overhead_bytes, measure, stages.per_epoch,
                                    FeedbackSettings())
            transform.feedback = feedback
        with_rate = {"transform": transform, "companion": quantizer, "companion_lr": STEP_LR,
                     "on_step": combine_on_step(transform.warm_up(preset.codec.rate_warmup),
                                                feedback.on_step if feedback is not None else None)}
        cache = None
    if state is not None and state.get("stage") == "fitted":
        model.load_state_dict(state["model"])
        if quantizer is not None:
            quantizer.load_state_dict(state["companion"])
        return state["history"], float(state.get("fit_seconds", 0.0)), bool(state.get("fit_reused", False))
    if cache is not None and (cached := cache.load(fingerprint, dev, model)) is not None:
        history, seconds, reused = cached["history"], cached["seconds"], True
        if progress:
            print(f"fitted network taken from {cache.describe(fingerprint, dev)} (the fit took {seconds:.1f} s)",
                  file=sys.stderr)
    else:
        started = time.perf_counter()
        steps = stages.steps("fit")
        result = fit_network(model, clip, preset.fit, epochs=steps / stages.per_epoch, steps=steps, progress=progress,
                             checkpoint=checkpoint, checkpoint_tag=tag, resume_state=state, pacer=stages.pacer,
                             **with_rate)
        history, seconds, reused = result.history, time.perf_counter() - started, False
        stages.ran["fit"] = result.steps
        if feedback is not None and progress:
            print(feedback.summary(), file=sys.stderr)
        if cache is not None and stages.pacer is None:  # a fit paced by a budget is no one else's fit
            cache.store(fingerprint, dev, model, history, seconds)
    if checkpoint is not None:
        fitted = {"tag": tag, "stage": "fitted", "model": model.state_dict(), "history": history,
                  "fit_seconds": seconds, "fit_reused": reused}
        if quantizer is not None:
            fitted["companion"] = quantizer.state_dict()
        save_checkpoint(checkpoint, fitted)
    return history, seconds, reused


def _quantize_stage(model: torch.nn.Module, clip: Clip, preset: CodecPreset, masks: dict, stages: _Stages, *,
                    progress: bool, size_of=None, target_bytes: int | None = None,
                    quantizer: LearnedQuantizer | None = None) -> tuple[LearnedQuantizer, float]:
    """Fine-tunes ``model`` on the file's grid with the rate term; returns the quantizer and lambda.

    With ``target_bytes`` (and ``size_of``: coded tensors -> file bytes), every step is scaled by
    one factor after the rate-distortion phase so that the file lands on the target, and the
    steps stay fixed through the rounding phase, which then adapts the weights to that grid.
    ``quantizer``: the one the fit trained with (rate from the start), continued.
    """
    codec = preset.codec
    pixels = clip.num_frames * clip.height * clip.width
    if quantizer is None:
        quantizer = quantizer_for(model, codec, masks)
    elif codec.rate_from_start == "latents":  # the weights' steps start from the fitted weights
        quantizer.restart_weights(dict(model.named_parameters()), bits=codec.bits)
    lam = lambda_for_quality(codec.quality) if codec.quality is not None else 0.0
    lam *= float(quantizer.rate_state[0])  # where rate control moved it while fitting
    for mode, stage in ((NOISE, "rd"), (ROUND, "qat")):
        if mode == ROUND and target_bytes is not None:
            trained = QuantizedNetwork.of(model, quantizer)
            bounds = trained.multiplier_bounds(steered=steered(preset))
            multiplier = step_multiplier(lambda m, q=trained: size_of(q.at(m)), target_bytes, bounds=bounds)
            with torch.no_grad():
                quantizer.log_steps += math.log(multiplier) * quantizer.weight_mask()
            quantizer.log_steps.requires_grad_(False)
        if mode == NOISE and not lam:
            continue
        stages.run(model, clip, preset, stage, progress=progress, transform=quantized_weights(quantizer, mode, lam,
                   pixels), companion=quantizer, companion_lr=STEP_LR)
    return quantizer, lam


def encode_segment(
    frames: np.ndarray,
    preset: CodecPreset,
    network: NetworkConfig,
    span: SegmentSpan,
    *,
    index: int = 0,
    device: torch.device,
    progress: bool = True,
    fit_cache: FitCache | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    source_id: str = "",
    time_budget: float | None = None,
    rate: SegmentRate | None = None,
    measured_after: int = 0,
) -> SegmentEncoding:
    """Fits, prunes and quantizes one network to ``frames`` (the segment ``span`` of a video).

    ``network`` is resolved for the video's size and the nominal segment length, the same for
    every segment. ``checkpoint``: this segment's fitting checkpoint (``resume`` continues from
    it). ``time_budget``: seconds for this segment, held by a :class:`~compress.plan.BudgetPacer`.
    ``rate``: this segment's share of a rate target: lambda follows the measured size while fitting
    (presets with the rate term from the start), and with ``rate.calibrate_steps`` the steps are
    scaled onto the target before the rounding phase. ``measured_after``: frames of other segments that this
    process will measure after training, within the budget.
    """
    started = time.perf_counter()
    T, H, W = frames.shape[:3]
    timer = StageTimer()
    torch.manual_seed(segment_seed(preset.fit.seed, index))
    model = build_network(network).to(device)
    clip = Clip.from_numpy(frames, device)

    with timer.stage("plan"):
        resumed = planned_in(checkpoint) if resume and time_budget is not None else None
        plan = plan_segment(model, clip, preset, time_budget=time_budget, resumed=resumed,
                            reserved_frames=measured_after)
    if progress:
        for line in plan_lines(preset, plan.epochs, plan.parameters, T, W, H, device, plan.steps, plan.estimate,
                               time_budget):
            print(line, file=sys.stderr)
    pacer = None
    if time_budget is not None:
        pacer = BudgetPacer(started + time_budget - plan.steps.frame * measured_after, plan.epochs, plan.steps, T,
                            preset.fit.batch_size, plan.coding_load)
    stages = _Stages(plan.epochs, math.ceil(T / preset.fit.batch_size), pacer)

    fingerprint = fit_fingerprint(preset, plan.epochs, source_id, frames)
    tag = {"fingerprint": fingerprint, "plan": plan.epochs.as_list()}
    state = load_fit_checkpoint(checkpoint, fingerprint) if resume else None
    codec = preset.codec
    early = quantizer_for(model, codec) if codec.rate_from_start != "none" else None
    with timer.stage("fit"):
        fit_history, fit_seconds, fit_reused = _fit_stage(
            model, clip, preset, stages, state=state, cache=fit_cache, fingerprint=fingerprint, tag=tag,
            checkpoint=checkpoint, progress=progress, quantizer=early, rate=rate)
    if time_budget is None:
        with timer.stage("evaluate-fit"):
            fit_psnr = psnr(render_frames(model, range(T), T, H, W), frames)
    else:  # under a budget, the training estimate (float outputs, last epoch) instead of a render
        fit_psnr = float(fit_history[-1]["psnr"]) if fit_history else float("nan")

    with timer.stage("prune"), _resumable_from(checkpoint):
        # No pruning under a quantizer that trained with the fit.
        masks = {} if early is not None else prune_by_magnitude(model, codec.prune_ratio)
        if masks:
            apply_masks(model, masks)
            stages.run(model, clip, preset, "prune", progress=progress, transform=masked_weights(masks))
            apply_masks(model, masks)

    with timer.stage("quantize"), _resumable_from(checkpoint):
        calibrate = rate is not None and rate.calibrate_steps
        quantizer, lam = _quantize_stage(model, clip, preset, masks, stages, progress=progress,
                                         size_of=rate.size_of if calibrate else None,
                                         target_bytes=rate.target_bytes if calibrate else None, quantizer=early)
        quantized = QuantizedNetwork.of(model, quantizer)
        estimated_bits = quantizer.estimated_bits(dict(model.named_parameters()))
    return SegmentEncoding(span, quantized.coded, plan.parameters, fit_psnr, fit_history, fit_seconds, fit_reused,
                           fingerprint[:16], lam, estimated_bits, stages.as_run(), plan.estimate, dict(timer.seconds),
                           quantized, pacer.replans if pacer is not None else 0,
                           steered=early is not None and rate is not None)
