"""Fits a network to a clip: the training loop shared by fitting and the fine-tunes.

Frames stay uint8 on the training device; only the batch being trained is turned
into floats.  The loop is seeded (the frame order of epoch ``e`` depends only on the
seed and ``e``), survives a non-finite loss by going back to its best state with a
lower learning rate, and can checkpoint and resume.
"""

from __future__ import annotations

import copy
import io
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import nn
from torch.func import functional_call

from compress.optimizers import build_optimizer, parameter_groups
from compress.precision import autocast_for
from compress.progress import StageProgress
from pipeline.config import FitConfig
from pipeline.files import write_atomically
from pipeline.metrics import psnr_from_mse
from pipeline.networks import frame_times


class FrameBatch(NamedTuple):
    """The frames a training step renders: their normalized times, and the clip's frame count."""

    times: torch.Tensor
    num_frames: int


# Maps the parameters to the weights of the forward pass (a pruning mask, quantization), and
# gives a penalty to add to the loss (the rate term), or None; the batch lets a penalty on
# per-frame parameters (latents) be estimated from the frames of the step.
WeightTransform = Callable[[dict[str, torch.Tensor], FrameBatch],
                           tuple[dict[str, torch.Tensor], torch.Tensor | None]]
MAX_RECOVERIES = 8
EXPLODED = 4.0  # an epoch loss this many times the best one is a divergence, like a NaN


class FitInterrupted(Exception):
    """Fitting was interrupted (Ctrl-C or SIGTERM) after saving a checkpoint."""

    def __init__(self, checkpoint: Path | None):
        self.checkpoint = checkpoint
        where = f"; checkpoint saved to {checkpoint}, rerun with --resume" if checkpoint else ""
        super().__init__(f"interrupted{where}")


@dataclass
class Clip:
    """A clip ready for training: uint8 frames [T,H,W,3] on the training device."""

    frames: torch.Tensor

    @property
    def num_frames(self) -> int:
        return self.frames.shape[0]

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @classmethod
    def from_numpy(cls, frames: np.ndarray, device: torch.device) -> Clip:
        return cls(torch.from_numpy(np.ascontiguousarray(frames)).to(device))

    def batch(self, indices: torch.Tensor) -> torch.Tensor:
        """Float [B,3,H,W] targets in [0,1] for some frame indices."""
        return self.frames[indices].permute(0, 3, 1, 2).float().div_(255.0)


@dataclass
class TrainResult:
    epochs: int
    seconds: float
    final_loss: float
    train_psnr: float  # on float outputs during the last epoch, an estimate
    recoveries: int = 0
    history: list[dict] = field(default_factory=list)
    steps: int = 0  # optimizer steps run


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, l1_weight: float, ssim_weight: float,
                        mse_weight: float = 0.0):
    """``l1_weight * L1 + ssim_weight * (1 - SSIM) + mse_weight * MSE``.

    The papers use 0.7 L1 + 0.3 (1 - SSIM); the CPU presets fit with MSE, which measured
    better for PSNR (the README has the figures).
    """
    loss = pred.new_zeros(())
    if l1_weight:
        loss = loss + l1_weight * (pred - target).abs().mean()
    if mse_weight:
        loss = loss + mse_weight * F.mse_loss(pred, target)
    if ssim_weight:
        win = min(11, (min(pred.shape[-2:]) - 1) // 2 * 2 + 1)
        loss = loss + ssim_weight * (1 - ssim(pred, target, data_range=1.0, size_average=True, win_size=win))
    return loss


def lr_factor(step: int, total: int, warmup: float) -> float:
    """Linear warm-up from 0.1 over the first ``warmup`` of the steps, then cosine to 0."""
    warm = total * warmup
    if step < warm:
        return 0.1 + 0.9 * step / warm
    return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))


class StepLoss(NamedTuple):
    """What one training step measured, as 0-dim tensors on the training device (reading them
    waits for the device, so the loop reads them once per epoch): the loss it minimised, the
    MSE of its float outputs, and the penalty it included (0 without one)."""

    loss: torch.Tensor
    mse: torch.Tensor
    penalty: torch.Tensor


def training_step(
    model: nn.Module,
    params: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    clip: Clip,
    indices: torch.Tensor,
    fit: FitConfig,
    transform: WeightTransform | None = None,
) -> StepLoss | None:
    """One optimisation step on the frames ``indices``: forward, loss, backward, optimizer step.

    ``params`` are the model's named parameters; ``transform`` maps them to the weights of the
    forward pass and may add a penalty to the loss. The learning rate is the caller's (it sets
    the schedule on ``optimizer``). On a CPU a non-finite loss returns None, having changed
    nothing; on a GPU the step does not wait for the device to find out (a host sync per step
    costs time there), and the caller finds a non-finite loss at the end of the epoch and goes
    back to its best state. Fitting, every fine-tune and ``benchmarks/speed.py`` run this step.
    """
    target = clip.batch(indices)
    penalty = None
    times = frame_times(indices, clip.num_frames)
    with autocast_for(clip.frames.device, fit.precision):
        weights, penalty = transform(params, FrameBatch(times, clip.num_frames)) if transform else (params, None)
        pred = functional_call(model, weights, (times,))
    pred = pred[:, :, : clip.height, : clip.width].float()
    loss = reconstruction_loss(pred, target, fit.l1_weight, fit.ssim_weight, fit.mse_weight)
    if penalty is not None:
        loss = loss + penalty
    if loss.device.type == "cpu" and not torch.isfinite(loss):
        return None
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        mse = F.mse_loss(pred, target)
    zero = loss.new_zeros(())
    return StepLoss(loss.detach(), mse, zero if penalty is None else penalty.detach().float())


def _epoch_order(num_frames: int, seed: int, epoch: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(num_frames, generator=generator)


class _StopRequest:
    """Turns SIGINT/SIGTERM into a flag that the loop reads between steps.

    An exception raised wherever the signal lands could split the bookkeeping at an
    epoch's end; with the flag, a checkpoint always holds a whole epoch boundary.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous = {}
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


def save_checkpoint(path: Path, state: dict) -> None:
    """Writes a training checkpoint atomically (a crash leaves the previous one)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    write_atomically(path, buffer.getvalue())


class Pacer(Protocol):
    """Re-plans a stage's length from its measured pace (:class:`compress.plan.BudgetPacer`)."""

    def total_steps(self, stage: str, done: int, planned: int, seconds: float, timed: int) -> int:
        """The stage's new total of steps, ``done`` of ``planned`` being done; the last ``timed``
        of them took ``seconds`` (wall time)."""


def train(
    model: nn.Module,
    clip: Clip,
    fit: FitConfig,
    *,
    epochs: float,
    lr: float,
    steps: int | None = None,
    transform: WeightTransform | None = None,
    companion: nn.Module | None = None,
    companion_lr: float = 0.0,
    desc: str = "fit",
    progress: bool = True,
    checkpoint: Path | None = None,
    checkpoint_tag: dict | None = None,
    resume_state: dict | None = None,
    checkpoint_seconds: float = 60.0,
    deadline: float | None = None,
    pacer: Pacer | None = None,
    stage: str = "fit",
    on_step: Callable[[int, int], bool | None] | None = None,
) -> TrainResult:
    """Trains ``model`` in place for ``epochs`` epochs (or ``steps`` optimizer steps) and returns
    what happened.

    ``transform`` maps the parameters to the weights used in the forward pass (a pruning
    mask, quantization) and may add a penalty (the rate term) to the loss; gradients reach
    the parameters through it. ``companion`` is a module trained along (the quantizer's
    steps), with its own learning rate, whose state is kept and restored with the model's.
    ``deadline`` (a ``time.perf_counter()`` value) ends training at the last epoch boundary
    that the measured epoch time says will be reached before it. ``pacer`` re-plans the number
    of steps of ``stage`` from the measured pace as training goes (a time budget); the learning
    rate schedule follows the new length. The last epoch may then be a part of one.

    An epoch whose loss is not finite, or is ``EXPLODED`` times the best one, sends the
    model back to its best state with half the learning rate. The model ends in its best
    state (lowest epoch loss).
    """
    device = clip.frames.device
    if fit.channels_last:  # kernels and grids in channels-last layout while training (faster convolutions)
        model.to(memory_format=torch.channels_last)
    params = dict(model.named_parameters())
    optimizer = build_optimizer(parameter_groups(params, lr, fit, companion, companion_lr), fit)
    modules = {"model": model} if companion is None else {"model": model, "companion": companion}
    steps_per_epoch = math.ceil(clip.num_frames / fit.batch_size)
    total_steps = steps if steps is not None else round(epochs * steps_per_epoch)

    start_epoch, lr_scale, recoveries, history = 0, 1.0, 0, []
    best_loss, best_state = math.inf, None

    def load_state(state: dict) -> None:
        for key, module in modules.items():
            module.load_state_dict(state[key])
        optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))  # steps mutate it in place

    if resume_state is not None:
        load_state(resume_state)
        if "rng" in resume_state:  # checkpoints written before the random state was kept have none
            torch.set_rng_state(resume_state["rng"])
            if "cuda_rng" in resume_state and device.type == "cuda":
                torch.cuda.set_rng_state(resume_state["cuda_rng"], device)
        start_epoch, lr_scale = resume_state["epoch"], resume_state["lr_scale"]
        recoveries, history = resume_state["recoveries"], resume_state["history"]
        best_loss, best_state = resume_state["best_loss"], resume_state["best_state"]
        total_steps = resume_state.get("total_steps", total_steps)

    def copy_state() -> dict:
        state = {key: copy.deepcopy(module.state_dict()) for key, module in modules.items()}
        state["optimizer"] = copy.deepcopy(optimizer.state_dict())
        # The random state too: a transform may draw noise (the quantizer's), and a resumed
        # run must draw what the uninterrupted one would have.
        state["rng"] = torch.get_rng_state()
        if device.type == "cuda":
            state["cuda_rng"] = torch.cuda.get_rng_state(device)
        return state

    # The state at the last epoch boundary: what a checkpoint saves, so that a resumed
    # run repeats exactly the epochs an uninterrupted one would have run.
    boundary = copy_state()
    if best_state is None:
        best_state = boundary  # a non-finite first epoch falls back to the initial weights

    def snapshot(epoch_done: int) -> dict:
        state = {"tag": checkpoint_tag, "epoch": epoch_done, "lr_scale": lr_scale, "recoveries": recoveries,
                 "history": history, "best_loss": best_loss, "best_state": best_state, "total_steps": total_steps}
        state.update(boundary)
        return state

    model.train()
    started = time.perf_counter()
    last_save = started
    planned_epochs = math.ceil(total_steps / steps_per_epoch)
    bar = StageProgress(desc, planned_epochs, start_epoch, enabled=progress)  # a bar, or in a log a line a 30 s
    epoch = start_epoch
    mean_loss, mean_mse = math.nan, math.nan
    stop = _StopRequest()
    steps_timed = 0  # this call's steps, for the pacer
    settled = True  # False while on_step still changes the objective (its losses are not comparable)
    try:
        while epoch * steps_per_epoch < total_steps:
            epoch_started = time.perf_counter()
            order = _epoch_order(clip.num_frames, fit.seed, epoch).to(device)
            sums = torch.zeros(3, device=device)  # loss, mse, penalty: read once per epoch
            i = 0
            while i < min(steps_per_epoch, total_steps - epoch * steps_per_epoch):
                if stop.requested:
                    raise KeyboardInterrupt
                step = epoch * steps_per_epoch + i
                factor = lr_scale * lr_factor(step, total_steps, fit.warmup)
                for group in optimizer.param_groups:
                    group["lr"] = group["base_lr"] * factor
                if on_step is not None:
                    settled = on_step(step, total_steps) is not False
                idx = order[i * fit.batch_size : (i + 1) * fit.batch_size]
                step_loss = training_step(model, params, optimizer, clip, idx, fit, transform)
                if step_loss is None:
                    sums[0] = math.nan
                    break
                sums += torch.stack(step_loss)
                i += 1
                if pacer is not None:
                    steps_timed += 1
                    total_steps = max(step + 1, pacer.total_steps(stage, step + 1, total_steps,
                                                                  time.perf_counter() - started, steps_timed))
            done = max(i, 1)
            loss_sum, mse_sum, penalty_sum = (float(v) for v in sums.cpu())
            mean_loss = loss_sum / done
            if not math.isfinite(mean_loss) or (math.isfinite(best_loss) and mean_loss > EXPLODED * best_loss):
                recoveries += 1
                if recoveries > MAX_RECOVERIES:
                    raise RuntimeError(f"{desc}: the loss keeps diverging and there is no good state to go back to")
                load_state(best_state)
                boundary = best_state
                lr_scale *= 0.5
                what = "non-finite" if not math.isfinite(mean_loss) else "exploding"
                bar.write(f"{desc}: {what} loss in epoch {epoch + 1}; back to the best state, lr x{lr_scale:g}")
                continue
            mean_mse = mse_sum / done
            epoch += 1
            history.append({"epoch": epoch, "seconds": time.perf_counter() - started, "loss": mean_loss,
                            "psnr": psnr_from_mse(mean_mse), "penalty": penalty_sum / done})
            if done < steps_per_epoch:
                history[-1]["steps"] = done  # a part of an epoch, the last one
            boundary = copy_state()
            if not settled:  # the objective still moves: the latest state stands, compared with none
                best_loss, best_state = math.inf, boundary
            elif mean_loss <= best_loss:
                best_loss, best_state = mean_loss, boundary
            bar.update(epoch, max(epoch, math.ceil(total_steps / steps_per_epoch)), mean_loss, psnr_from_mse(mean_mse))
            if checkpoint is not None and time.perf_counter() - last_save > checkpoint_seconds:
                save_checkpoint(checkpoint, snapshot(epoch))
                last_save = time.perf_counter()
            now = time.perf_counter()
            if (deadline is not None and epoch * steps_per_epoch < total_steps
                    and now + (now - epoch_started) > deadline):
                bar.write(f"{desc}: time budget reached after {epoch} of {planned_epochs} epochs")
                break
    except KeyboardInterrupt:
        bar.close()
        if checkpoint is not None:
            save_checkpoint(checkpoint, snapshot(epoch))
        raise FitInterrupted(checkpoint) from None
    finally:
        stop.restore()
    bar.close()
    if history:
        for key, module in modules.items():
            module.load_state_dict(best_state[key])
    model.to(memory_format=torch.contiguous_format)  # the layout the decoder renders with
    model.eval()
    return TrainResult(
        epochs=epoch,
        seconds=time.perf_counter() - started,
        final_loss=best_loss,
        train_psnr=psnr_from_mse(mean_mse) if not math.isnan(mean_mse) else math.nan,
        recoveries=recoveries,
        history=history,
        steps=min(total_steps, epoch * steps_per_epoch),
    )


def fit_network(model: nn.Module, clip: Clip, fit: FitConfig, **kwargs) -> TrainResult:
    """Fits the representation with the preset's recipe (Adam, warm-up + cosine); ``epochs``
    (or ``steps``) in ``kwargs`` override the preset's epochs."""
    kwargs.setdefault("epochs", fit.epochs)
    return train(model, clip, fit, lr=fit.lr, desc="fit", **kwargs)
