"""How long an encode will take, from a few real steps on this device, and keeping it inside a budget.

One time model serves the plan printed before fitting, ``--dry-run``, ``--time-budget`` and the
benchmark's budget: :func:`measure_step_seconds` times a fitting step, a fine-tuning step and the
rendering of a frame of the actual network on the actual frames (on a copy of the network, with
the random state restored afterwards, so that a measured run gives the same bytes as one that
was not measured); :func:`estimate_seconds` turns an :class:`~pipeline.epochs.EpochPlan` into
seconds; :func:`plan_for_budget` scales a plan to a budget, in optimizer steps (a fraction of an
epoch where the budget affords less than one). While the encode runs, a :class:`BudgetPacer`
re-plans the steps left from the measured pace, so that a slow or busy start neither overruns
the budget nor wastes it.
"""

from __future__ import annotations

import copy
import math
import os
import time
from dataclasses import dataclass

import torch
from torch import nn

from compress.fit import Clip, training_step
from compress.precision import uses_bf16
from compress.quantize import NOISE, quantized_weights, quantizer_for
from pipeline.config import CodecPreset, lambda_for_quality
from pipeline.epochs import STAGES, EpochPlan
from pipeline.kinds import network_kind
from pipeline.metrics import ms_ssim_mean
from pipeline.render import render_frames
from pipeline.stages import median_seconds

SAFETY = 0.92  # a budget is planned to this share; the rest absorbs what the model misses
CODING_SECONDS = 0.5  # quantizing, rate control's bisection, entropy coding and the self-check
# Measured: the quantize stage of two 2.06 M-parameter segments at 1280x720 took 77 s on a
# 2-core AMD EPYC (float32), of which about 20 s were fine-tuning steps.
CODING_SECONDS_PER_PARAMETER = 1.5e-5
# A context-coded symbol (a latent) costs about this share of a weight's coding time: an
# enerv-latent-xs file at 320x180 (864,000 latents, 40,991 weights) took 0.6 s to entropy-code
# on a 2-core AMD EPYC with AVX-512 BF16, where the per-weight figure would say 13 s.
CONTEXT_CODED_SHARE = 0.05
MIN_USEFUL_EPOCHS = 5.0  # fewer passes over the frames than this make a poor file: the plan says so
LONG_CPU_RUN = 30 * 60.0  # seconds: beyond this a CPU run without a budget says so


@dataclass(frozen=True)
class StepSeconds:
    """Measured seconds on this device: a training step (one batch) of fitting and of
    fine-tuning with the quantizer and the rate term (also the cost of a pruning fine-tune's
    step, a little more), and rendering plus measuring one frame."""

    fit: float
    finetune: float
    frame: float = 0.0

    def of(self, stage: str) -> float:
        return self.fit if stage == "fit" else self.finetune

    def epoch_seconds(self, batch_size: int, num_frames: int) -> tuple[float, float]:
        steps = math.ceil(num_frames / batch_size)
        return self.fit * steps, self.finetune * steps


def coding_load(model: nn.Module) -> int:
    """The parameters of ``model`` as the coding time sees them: weights count one each, the
    context-coded latents :data:`CONTEXT_CODED_SHARE` each (what the planner passes as ``parameters``)."""
    kind = network_kind(model.config.kind)
    return round(sum(p.numel() * (CONTEXT_CODED_SHARE if kind.is_latent(name) else 1.0)
                     for name, p in model.named_parameters()))


def steps_per_epoch(num_frames: int, batch_size: int) -> int:
    return math.ceil(num_frames / batch_size)


def measure_step_seconds(model: nn.Module, clip: Clip, preset: CodecPreset, repeats: int = 3) -> StepSeconds:
    """Times fitting and fine-tuning steps and the rendering of a frame of a copy of ``model``
    (which is left untouched, as is the random state)."""
    device = clip.frames.device
    sync = torch.cuda.synchronize if device.type == "cuda" else None
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        probe = copy.deepcopy(model).train()
        if preset.fit.channels_last:  # the layout compress.fit.train trains in
            probe.to(memory_format=torch.channels_last)
        params = dict(probe.named_parameters())
        indices = torch.arange(min(preset.fit.batch_size, clip.num_frames), device=device)
        optimizer = torch.optim.Adam(params.values(), lr=1e-6)
        started = time.perf_counter()
        training_step(probe, params, optimizer, clip, indices, preset.fit)  # warm-up, and a first reading
        if time.perf_counter() - started > 1.0:
            repeats = 1  # slow steps (large frames on a CPU): one timed step each is enough
        fit = median_seconds(lambda: training_step(probe, params, optimizer, clip, indices, preset.fit),
                             repeats=repeats, warmup=0, sync=sync)
        quantizer = quantizer_for(probe, preset.codec).to(device)
        transform = quantized_weights(quantizer, NOISE, 0.01, clip.num_frames * clip.height * clip.width)
        optimizer = torch.optim.Adam(list(params.values()) + list(quantizer.parameters()), lr=1e-6)
        finetune = median_seconds(
            lambda: training_step(probe, params, optimizer, clip, indices, preset.fit, transform),
            repeats=repeats, sync=sync)
        if preset.codec.rate_from_start != "none":  # the fit steps are (nearly) fine-tuning steps
            fit = finetune
        frame = _frame_seconds(probe.eval(), clip)
    return StepSeconds(fit, finetune, frame)


def _frame_seconds(model: nn.Module, clip: Clip) -> float:
    """Rendering a frame as the final measurement does, with its PSNR and MS-SSIM."""
    count = min(2, clip.num_frames)
    source = clip.frames[:count].cpu().numpy()
    started = time.perf_counter()
    rendered = render_frames(model, range(count), clip.num_frames, clip.height, clip.width)
    ms_ssim_mean(rendered, source)
    return (time.perf_counter() - started) / count


def overhead_seconds(steps: StepSeconds, num_frames: int, parameters: int, after: str = "fit",
                     fit_measured: bool = True) -> float:
    """The work of an encode besides its training steps that is left after stage ``after``
    finishes: measuring the fit (after the fit only, unless a time budget skips it), the
    final measurement and the coding."""
    coding = CODING_SECONDS + CODING_SECONDS_PER_PARAMETER * parameters
    measuring = steps.frame * num_frames
    return coding + measuring * (2 if after == "fit" and fit_measured else 1)


def estimate_seconds(plan: EpochPlan, steps: StepSeconds, num_frames: int, batch_size: int,
                     parameters: int = 0, fit_measured: bool = True) -> float:
    """The encode's estimated duration: its training steps and the work around them."""
    per_epoch = steps_per_epoch(num_frames, batch_size)
    training = sum(plan.steps(stage, per_epoch) * steps.of(stage) for stage in STAGES)
    return training + overhead_seconds(steps, num_frames, parameters, fit_measured=fit_measured)


def plan_for_budget(plan: EpochPlan, steps: StepSeconds, num_frames: int, batch_size: int, budget: float,
                    parameters: int = 0) -> EpochPlan:
    """``plan`` with every stage scaled by one factor so that the encode fits ``budget`` seconds
    (more epochs than the plan's where the budget allows; fractions of an epoch where it affords
    less than one). The fit keeps at least one step. Under a budget the fit is not measured
    on rendered frames (its PSNR is the training estimate): rendering every frame twice would
    take most of a short budget on a CPU at 1280x720."""
    per_epoch = steps_per_epoch(num_frames, batch_size)
    available = SAFETY * budget - overhead_seconds(steps, num_frames, parameters, fit_measured=False)
    work = sum(plan.get(stage) * per_epoch * steps.of(stage) for stage in STAGES)
    factor = max(available, 0.0) / work if work > 0 else 1.0
    scaled = plan.scaled(factor, whole=False)
    return EpochPlan(max(scaled.fit, 1.0 / per_epoch), scaled.prune, scaled.rd, scaled.qat)


class BudgetPacer:
    """Keeps the training stages of one encode inside a deadline, re-planned from the measured pace.

    The stages start from the planned steps; as a stage runs, its pace (wall seconds per step,
    averaged over the stage so far) says how much slower or faster this device is than the plan
    measured, and the steps left of this stage and of the later ones are scaled by one factor
    so that the work left ends at the deadline, minus the work after training scaled alike.
    """

    MIN_TIMED_STEPS = 3
    MIN_TIMED_SECONDS = 1.0
    MAX_GROWTH = 4.0  # at most this factor more steps per re-plan

    def __init__(self, deadline: float, plan: EpochPlan, steps: StepSeconds, num_frames: int, batch_size: int,
                 parameters: int = 0):
        self.deadline = deadline
        self.step_seconds = steps
        self.num_frames, self.parameters = num_frames, parameters
        per_epoch = steps_per_epoch(num_frames, batch_size)
        self.left = {stage: float(plan.steps(stage, per_epoch)) for stage in STAGES}
        self.replans = 0

    def stage_steps(self, stage: str) -> int:
        """The steps ``stage`` starts with, as earlier re-plans left them (0: skip it)."""
        planned = self.left[stage]
        return 0 if planned <= 0 else max(1, math.floor(planned))

    def total_steps(self, stage: str, done: int, planned: int, seconds: float, timed: int) -> int:
        if timed < self.MIN_TIMED_STEPS or seconds < self.MIN_TIMED_SECONDS:
            return planned
        pace = seconds / timed
        slowness = pace / max(self.step_seconds.of(stage), 1e-9)
        later = STAGES[STAGES.index(stage) + 1 :]
        work_now = (planned - done) * pace
        work_later = sum(self.left[s] * self.step_seconds.of(s) * slowness for s in later)
        after = overhead_seconds(self.step_seconds, self.num_frames, self.parameters, stage,
                                 fit_measured=False) * slowness
        seconds_left = self.deadline - time.perf_counter() - after
        if work_now + work_later <= 0:
            return planned
        factor = min(self.MAX_GROWTH, max(seconds_left, 0.0) / (work_now + work_later))
        for s in later:
            self.left[s] *= factor
        self.replans += 1
        return done + math.floor((planned - done) * factor)


def duration_text(seconds: float) -> str:
    """A duration for people: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _epochs_text(epochs: float) -> str:
    return f"{epochs:g}" if float(epochs).is_integer() else f"{epochs:.2f}"


def _busy_load() -> float | None:
    """The 1-minute load average when other work held the CPU while steps were timed (more than
    this process's own threads can explain), else None."""
    try:
        load = os.getloadavg()[0]
    except OSError:
        return None
    cores = os.cpu_count() or 1
    return load if load > cores + 0.75 else None


def plan_lines(preset: CodecPreset, plan: EpochPlan, parameters: int, frames: int, width: int, height: int,
               device: torch.device, steps: StepSeconds, estimate: float, time_budget: float | None) -> list[str]:
    """The plan printed before fitting: network, rate, epochs, device and the estimated time."""
    from compress.ratecontrol import bits_per_parameter

    codec = preset.codec
    pixels = frames * width * height
    if codec.quality is not None:
        lam = lambda_for_quality(codec.quality)
        rate = f"quality {codec.quality:g} (lambda {lam:.3g})"
        if network_kind(preset.network.kind).latent_prefix is None:  # latents' bits follow no rule per parameter
            rate += f": about {parameters * bits_per_parameter(codec.quality) / pixels:.3g} bpp"
    else:
        rate = f"{codec.bits}-bit alphabet, no rate term"
    precision = "bf16" if uses_bf16(device, preset.fit.precision) else "float32"
    fit_epoch, finetune_epoch = steps.epoch_seconds(preset.fit.batch_size, frames)
    lines = [
        f"plan: {preset.network.kind} '{preset.name}', {parameters:,} parameters, {frames} frames of {width}x{height}",
        f"plan: {rate}",
        f"plan: {_epochs_text(plan.fit)} fitting epochs ({fit_epoch:.2f} s each) + {_epochs_text(plan.finetune)} "
        f"fine-tuning ({finetune_epoch:.2f} s each) on {device.type} ({precision}); estimated "
        f"{duration_text(estimate)}" + (f" within a budget of {duration_text(time_budget)}"
                                         if time_budget is not None else ""),
    ]
    busy = _busy_load()
    if busy:
        lines.append(f"plan: note: the CPU was busy while the steps were timed (load average {busy:.1f} on "
                     f"{os.cpu_count()} cores); on an idle machine the run is shorter than estimated")
    if time_budget is not None and plan.fit < MIN_USEFUL_EPOCHS:
        lines.append(f"plan: note: the budget allows only {_epochs_text(plan.fit)} passes over the frames, too few "
                     "for a useful file; a smaller --size, a shorter clip (--frames), a longer budget or a GPU "
                     "would help")
    if time_budget is None and device.type == "cpu" and estimate > LONG_CPU_RUN:
        lines.append(f"plan: note: about {duration_text(estimate)} on this CPU; "
                     "--time-budget SECONDS fits the run into a budget, a smaller preset or target is faster, "
                     "and a GPU is many times faster")
    return lines
