"""What an encode will do and how long it will take, from a few real steps on this device.

:func:`measure_step_seconds` times fitting and fine-tuning steps of the actual network on the
actual frames (on a copy of the network, with the random state restored afterwards, so that a
measured run gives the same bytes as one that was not measured). :func:`lay_over_budget` turns a
time budget into epoch counts: the learning-rate schedules are then laid over those epochs.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass

import torch
from torch import nn

from compress.fit import Clip, training_step
from compress.quantize import NOISE, LearnedQuantizer, quantized_weights
from pipeline.config import CodecPreset, override

# Seconds of work besides the epochs (rendering and measuring the frames twice, quantizing and
# coding), as a number of fitting epochs: measured at 1.5-2.5 on the CPU presets.
OVERHEAD_EPOCHS = 3.0
SAFETY = 0.92  # the epochs are planned to use this share of the time left


@dataclass(frozen=True)
class StepSeconds:
    """Seconds per training step (one batch) on this device: fitting, and fine-tuning with the
    quantizer and the rate term (also the cost of a pruning fine-tune's step, a little more)."""

    fit: float
    finetune: float

    def epoch_seconds(self, preset: CodecPreset, num_frames: int) -> tuple[float, float]:
        steps = math.ceil(num_frames / preset.fit.batch_size)
        return self.fit * steps, self.finetune * steps


def _median_step(step, repeats: int) -> float:
    step()  # warm-up: allocations, kernel choice
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def measure_step_seconds(model: nn.Module, clip: Clip, preset: CodecPreset, repeats: int = 3) -> StepSeconds:
    """Times fitting and fine-tuning steps of a copy of ``model`` (which is left untouched)."""
    devices = [clip.frames.device] if clip.frames.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        probe = copy.deepcopy(model).train()
        params = dict(probe.named_parameters())
        indices = torch.arange(min(preset.fit.batch_size, clip.num_frames), device=clip.frames.device)
        optimizer = torch.optim.Adam(params.values(), lr=1e-6)
        fit = _median_step(lambda: training_step(probe, params, optimizer, clip, indices, preset.fit), repeats)
        quantizer = LearnedQuantizer(params).to(clip.frames.device)
        transform = quantized_weights(quantizer, NOISE, 0.01, clip.num_frames * clip.height * clip.width)
        optimizer = torch.optim.Adam(list(params.values()) + list(quantizer.parameters()), lr=1e-6)
        finetune = _median_step(
            lambda: training_step(probe, params, optimizer, clip, indices, preset.fit, transform), repeats)
    return StepSeconds(fit, finetune)


def finetune_epochs(preset: CodecPreset) -> int:
    """Epochs of the fine-tunes that this preset runs."""
    codec = preset.codec
    rd = codec.rd_epochs if codec.quality is not None else 0
    return (codec.prune_epochs if codec.prune_ratio > 0 else 0) + rd + codec.qat_epochs


def estimate_seconds(preset: CodecPreset, steps: StepSeconds, num_frames: int) -> float:
    """The encode's estimated duration: its epochs and the work around them."""
    fit_epoch, finetune_epoch = steps.epoch_seconds(preset, num_frames)
    return fit_epoch * (preset.fit.epochs + OVERHEAD_EPOCHS) + finetune_epoch * finetune_epochs(preset)


def lay_over_budget(preset: CodecPreset, steps: StepSeconds, num_frames: int, budget: float) -> CodecPreset:
    """The preset with every epoch count scaled by one factor so that the encode fits ``budget``
    seconds (more epochs than the preset's when the budget allows). At least one fitting epoch."""
    fit_epoch, finetune_epoch = steps.epoch_seconds(preset, num_frames)
    available = SAFETY * budget - fit_epoch * OVERHEAD_EPOCHS
    work = fit_epoch * preset.fit.epochs + finetune_epoch * finetune_epochs(preset)
    factor = max(available, 0.0) / work if work > 0 else 1.0

    def scaled(epochs: int) -> int:
        return max(1, math.floor(epochs * factor)) if epochs else 0

    codec = preset.codec
    return override(preset, fit=override(preset.fit, epochs=max(1, math.floor(preset.fit.epochs * factor))),
                    codec=override(codec, prune_epochs=scaled(codec.prune_epochs), rd_epochs=scaled(codec.rd_epochs),
                                   qat_epochs=scaled(codec.qat_epochs)))


LONG_CPU_RUN = 30 * 60.0  # seconds: beyond this a CPU run without a budget says so


def duration_text(seconds: float) -> str:
    """A duration for people: seconds, minutes or hours."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def plan_lines(preset: CodecPreset, parameters: int, frames: int, width: int, height: int, device: torch.device,
               steps: StepSeconds, estimate: float, time_budget: float | None) -> list[str]:
    """The plan printed before fitting: network, rate, epochs, device and the estimated time."""
    from compress.fit import uses_bf16
    from compress.ratecontrol import bits_per_parameter
    from pipeline.config import lambda_for_quality

    codec = preset.codec
    pixels = frames * width * height
    if codec.quality is not None:
        lam = lambda_for_quality(codec.quality)
        rate = (f"quality {codec.quality:g} (lambda {lam:.3g}): about "
                f"{parameters * bits_per_parameter(codec.quality) / pixels:.3g} bpp")
    else:
        rate = f"{codec.bits}-bit alphabet, no rate term"
    precision = "bf16" if uses_bf16(device, preset.fit.precision) else "float32"
    fit_epoch, finetune_epoch = steps.epoch_seconds(preset, frames)
    lines = [
        f"plan: {preset.network.kind} '{preset.name}', {parameters:,} parameters, {frames} frames of {width}x{height}",
        f"plan: {rate}",
        f"plan: {preset.fit.epochs} fitting epochs ({fit_epoch:.2f} s each) + {finetune_epochs(preset)} fine-tuning "
        f"({finetune_epoch:.2f} s each) on {device.type} ({precision}); estimated {duration_text(estimate)}"
        + (f" within a budget of {duration_text(time_budget)}" if time_budget is not None else ""),
    ]
    if time_budget is None and device.type == "cpu" and estimate > LONG_CPU_RUN:
        lines.append(f"plan: note: about {duration_text(estimate)} on this CPU; "
                     "--time-budget SECONDS fits the run into "
                     "a budget, a smaller preset or target is faster, and a GPU is many times faster")
    return lines
