"""Where a training step's time goes, as fitting runs it: the parts of compress.fit.training_step.

:func:`fit_step_for` sets up the step of a preset's fit as :mod:`compress.encode` runs it: with
``codec.rate_from_start`` the weights go through the noisy quantizer and the rate term is added to
the loss, the quantizer trained along as a second parameter group (lr ``STEP_LR``).
:func:`measure_step_parts` runs that step in its parts, in training_step's order, with a clock
reading (and, on a GPU, a sync) between parts, alternately with training_step itself, which is
timed whole; both are medians over the repeats. training_step is not changed: the parts are a
copy of its body, and tests/test_step_parts.py checks that the copy ends in the same weights.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from compress.fit import (
    Clip,
    FrameBatch,
    StepLoss,
    WeightTransform,
    reconstruction_loss,
    training_step,
)
from compress.optimizers import OptimizerSet, build_optimizer, parameter_groups
from compress.precision import autocast_for, uses_bf16
from compress.quantize import NOISE, STEP_LR, LearnedQuantizer, quantized_weights, quantizer_for
from pipeline.config import CodecPreset, lambda_for_quality
from pipeline.kinds import network_kind
from pipeline.networks import frame_times, macs_per_pixel

PARTS = ("quantizer", "forward", "loss", "backward", "optimizer", "rest")
PART_LABELS = {
    "quantizer": "weight transform + rate estimate",
    "forward": "forward (network)",
    "loss": "loss",
    "backward": "backward",
    "optimizer": "optimizer step",
    "rest": "rest (batch, finite check, zero_grad, mse)",
}
BACKWARD_MACS = 2.0  # the backward pass counted as twice the forward's MACs (input and weight gradients)


class FitStep(NamedTuple):
    """The arguments of one fitting step (compress.fit.training_step) and the quantizer, if any."""

    model: nn.Module
    params: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer | OptimizerSet
    clip: Clip
    indices: torch.Tensor
    preset: CodecPreset
    transform: WeightTransform | None
    quantizer: LearnedQuantizer | None

    def run(self):
        return training_step(self.model, self.params, self.optimizer, self.clip, self.indices, self.preset.fit,
                             self.transform)


def fit_step_for(preset: CodecPreset, model: nn.Module, clip: Clip, indices: torch.Tensor) -> FitStep:
    """The fit's step for ``preset`` (compress.encode's ``_fit_stage`` and compress.fit.train: its
    weight transform, and its optimizer over the same groups), at the base learning rates (the
    schedule's factor 1; a rate warm-up scales the penalty, not the work), in the layout
    train() gives the model."""
    if preset.fit.channels_last:
        model.to(memory_format=torch.channels_last)
    params = dict(model.named_parameters())
    quantizer, transform = None, None
    codec = preset.codec
    if codec.rate_from_start != "none":
        quantizer = quantizer_for(model, codec)
        pixels = clip.num_frames * clip.height * clip.width
        transform = quantized_weights(quantizer, NOISE, lambda_for_quality(codec.quality), pixels,
                                      latents_only=codec.rate_from_start == "latents")
    optimizer = build_optimizer(parameter_groups(params, preset.fit.lr, preset.fit, quantizer, STEP_LR), preset.fit)
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"]
    model.train()
    return FitStep(model, params, optimizer, clip, indices, preset, transform, quantizer)


def run_in_parts(step: FitStep, sync) -> tuple[StepLoss, dict[str, float]]:
    """One training step, training_step's body in the same order: what it returns, and the seconds
    of each part (``sync`` drains the device before each clock reading). Raises on a non-finite
    loss (where training_step returns None)."""
    model, params, optimizer, clip, indices = step.model, step.params, step.optimizer, step.clip, step.indices
    fit = step.preset.fit
    seconds = dict.fromkeys(PARTS, 0.0)
    clock = [time.perf_counter()]

    def lap(part: str) -> None:
        sync()
        now = time.perf_counter()
        seconds[part] += now - clock[0]
        clock[0] = now

    sync()
    clock[0] = time.perf_counter()
    target = clip.batch(indices)
    penalty = None
    times = frame_times(indices, clip.num_frames)
    lap("rest")
    with autocast_for(clip.frames.device, fit.precision):
        if step.transform:
            weights, penalty = step.transform(params, FrameBatch(times, clip.num_frames))
        else:
            weights = params
        lap("quantizer")
        pred = functional_call(model, weights, (times,))
        lap("forward")
    pred = pred[:, :, : clip.height, : clip.width].float()
    loss = reconstruction_loss(pred, target, fit.l1_weight, fit.ssim_weight, fit.mse_weight)
    if penalty is not None:
        loss = loss + penalty
    lap("loss")
    if loss.device.type == "cpu" and not torch.isfinite(loss):
        raise RuntimeError("the loss is not finite; the timing would not be of a training step")
    optimizer.zero_grad(set_to_none=True)
    lap("rest")
    loss.backward()
    lap("backward")
    optimizer.step()
    lap("optimizer")
    with torch.no_grad():
        mse = F.mse_loss(pred, target)
    zero = loss.new_zeros(())
    result = StepLoss(loss.detach(), mse, zero if penalty is None else penalty.detach().float())
    lap("rest")
    return result, seconds


def reference_conv_gmacs(device: torch.device, precision: str, size: int = 256, batch: int = 4,
                         channels: int = 64, repeats: int = 3) -> float:
    """GMAC/s of a 3x3 convolution, ``channels`` -> ``channels`` at ``size`` x ``size``, forward and
    backward (input and weight gradients, counted 2x the forward's MACs), under the fit's autocast:
    what this machine does on a large, plain layer."""
    torch.manual_seed(0)
    conv = nn.Conv2d(channels, channels, 3, padding=1).to(device)
    x = torch.randn(batch, channels, size, size, device=device, requires_grad=True)

    def once() -> None:
        conv.zero_grad(set_to_none=True)
        x.grad = None
        with autocast_for(device, precision):
            out = conv(x)
        out.float().sum().backward()

    seconds = _median(once, device, repeats)
    macs = batch * size * size * channels * channels * 9 * (1.0 + BACKWARD_MACS)
    return macs / seconds / 1e9


def _sync_for(device: torch.device):
    return torch.cuda.synchronize if device.type == "cuda" else (lambda: None)


def _median(fn, device: torch.device, repeats: int, warmup: int = 1) -> float:
    sync = _sync_for(device)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@dataclass(frozen=True)
class StepParts:
    """Medians of a fitting step's parts and of the whole step (ms), and its arithmetic rate."""

    preset: str
    device: str
    bf16_autocast: bool
    optimizer: str  # fit.optimizer
    rate_term: bool  # the step runs the noisy quantizer and the rate term (codec.rate_from_start)
    frames_per_step: int
    repeats: int
    part_ms: dict[str, float]
    whole_step_ms: float  # training_step, timed whole (no syncs inside)
    macs_per_pixel: float
    forward_gmac_per_step: float
    fwd_bwd_gmac_per_second: float  # 3x forward MACs (backward counted 2x) / (forward + backward time)
    reference_gmac_per_second: float  # reference_conv_gmacs, same run, same autocast
    reference: str
    latent_frame_updates_per_second: float | None  # frames per step / step seconds (latent kinds)

    @property
    def parts_sum_ms(self) -> float:
        return sum(self.part_ms.values())

    def as_dict(self) -> dict:
        return asdict(self) | {"parts_sum_ms": self.parts_sum_ms,
                               "part_share": {k: v / self.whole_step_ms for k, v in self.part_ms.items()},
                               "backward_macs_factor": BACKWARD_MACS}


def measure_step_parts(step: FitStep, repeats: int, *, warmup: int = 2, reference_size: int = 256) -> StepParts:
    """Times ``step`` in parts and whole, alternately (each repeat runs both, in alternating order,
    so that both see the same machine), and measures the reference convolution after."""
    device = step.clip.frames.device
    sync = _sync_for(device)

    def whole() -> float:
        sync()
        start = time.perf_counter()
        if step.run() is None:
            raise RuntimeError("the loss is not finite; the timing would not be of a training step")
        sync()
        return time.perf_counter() - start

    for _ in range(warmup):
        whole()
        run_in_parts(step, sync)
    wholes, parts = [], []
    for i in range(max(1, repeats)):
        if i % 2:
            parts.append(run_in_parts(step, sync)[1])
            wholes.append(whole())
        else:
            wholes.append(whole())
            parts.append(run_in_parts(step, sync)[1])
    part_s = {p: statistics.median(r[p] for r in parts) for p in PARTS}
    whole_s = statistics.median(wholes)

    mac_pixel = macs_per_pixel(step.model)
    with torch.no_grad():
        out = step.model(frame_times(step.indices[:1], step.clip.num_frames))
    frames = len(step.indices)
    forward_macs = mac_pixel * out.shape[-1] * out.shape[-2] * frames
    fwd_bwd_s = part_s["forward"] + part_s["backward"]
    reference = reference_conv_gmacs(device, step.preset.fit.precision, size=reference_size)
    latent = network_kind(step.model.config.kind).latent_prefix is not None
    return StepParts(
        preset=step.preset.name, device=device.type, bf16_autocast=uses_bf16(device, step.preset.fit.precision),
        optimizer=step.preset.fit.optimizer, rate_term=step.transform is not None, frames_per_step=frames,
        repeats=max(1, repeats),
        part_ms={p: s * 1e3 for p, s in part_s.items()}, whole_step_ms=whole_s * 1e3,
        macs_per_pixel=mac_pixel, forward_gmac_per_step=forward_macs / 1e9,
        fwd_bwd_gmac_per_second=forward_macs * (1.0 + BACKWARD_MACS) / fwd_bwd_s / 1e9,
        reference_gmac_per_second=reference,
        reference=f"conv3x3 64->64 at {reference_size}x{reference_size}, batch 4, forward+backward",
        latent_frame_updates_per_second=frames / whole_s if latent else None)


def step_parts_table(r: StepParts) -> str:
    """``r`` as a table for people (ms per step, share of the whole step)."""
    precision = "bf16 autocast" if r.bf16_autocast else "float32"
    rate = "noisy quantizer + rate term" if r.rate_term else "no weight transform"
    lines = [f"training step of {r.preset} on {r.device} ({precision}, {rate}, {r.optimizer}), "
             f"{r.frames_per_step} frames, medians of {r.repeats}",
             f"  {'part':<44}{'ms/step':>10}{'share':>8}"]
    for part in PARTS:
        ms = r.part_ms[part]
        lines.append(f"  {PART_LABELS[part]:<44}{ms:>10.3f}{ms / r.whole_step_ms:>8.1%}")
    lines.append(f"  {'sum of the parts (timed apart)':<44}{r.parts_sum_ms:>10.3f}"
                 f"{r.parts_sum_ms / r.whole_step_ms:>8.1%}")
    lines.append(f"  {'whole step (training_step)':<44}{r.whole_step_ms:>10.3f}{1:>8.1%}")
    lines.append(f"  network: {r.macs_per_pixel:,.0f} MAC/pixel, {r.forward_gmac_per_step:.3f} GMAC per step forward")
    share = r.fwd_bwd_gmac_per_second / r.reference_gmac_per_second
    lines.append(f"  forward+backward (backward counted {BACKWARD_MACS:g}x forward): "
                 f"{r.fwd_bwd_gmac_per_second:.2f} GMAC/s, {share:.1%} of {r.reference_gmac_per_second:.2f} GMAC/s "
                 f"({r.reference})")
    if r.latent_frame_updates_per_second is not None:
        lines.append(f"  latent-frame updates: {r.latent_frame_updates_per_second:.1f} per second")
    return "\n".join(lines)
