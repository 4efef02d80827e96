"""Fits a network to a clip: the training loop shared by fitting and the fine-tunes.

Frames stay uint8 on the training device; only the batch being trained is turned
into floats.  The loop is seeded (the frame order of epoch ``e`` depends only on the
seed and ``e``), survives a non-finite loss by going back to its best state with a
lower learning rate, and can checkpoint and resume.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pytorch_msssim import ssim
from torch import nn
from torch.func import functional_call
from tqdm import tqdm

from pipeline.config import FitConfig
from pipeline.metrics import psnr_from_mse
from pipeline.networks import frame_times

WeightTransform = Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]
MAX_RECOVERIES = 8


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


def reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, l1_weight: float, ssim_weight: float):
    """``l1_weight * L1 + ssim_weight * (1 - SSIM)``: the papers' 0.7/0.3 mix."""
    loss = l1_weight * (pred - target).abs().mean()
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
    """What one training step measured: the loss it minimised and the MSE of its float outputs."""

    loss: float
    mse: float


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; full precision elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else contextlib.nullcontext()


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

    ``params`` are the model's named parameters (those ``optimizer`` updates); ``transform``
    maps them to the weights of the forward pass. The learning rate is the caller's (it
    sets the schedule on ``optimizer``). Returns None, having changed nothing, when the
    loss is not finite. Fitting, every fine-tune and ``benchmarks/speed.py`` run this step.
    """
    target = clip.batch(indices)
    with _autocast(clip.frames.device):
        weights = transform(params) if transform else params
        pred = functional_call(model, weights, (frame_times(indices, clip.num_frames),))
    pred = pred[:, :, : clip.height, : clip.width].float()
    loss = reconstruction_loss(pred, target, fit.l1_weight, fit.ssim_weight)
    if not torch.isfinite(loss):
        return None
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return StepLoss(loss.item(), float(F.mse_loss(pred.detach(), target)))


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
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(
    model: nn.Module,
    clip: Clip,
    fit: FitConfig,
    *,
    epochs: int,
    lr: float,
    transform: WeightTransform | None = None,
    desc: str = "fit",
    progress: bool = True,
    checkpoint: Path | None = None,
    checkpoint_tag: dict | None = None,
    resume_state: dict | None = None,
    checkpoint_seconds: float = 60.0,
) -> TrainResult:
    """Trains ``model`` in place for ``epochs`` epochs and returns what happened.

    ``transform`` maps the parameters to the weights used in the forward pass (a
    pruning mask, fake quantization); gradients reach the parameters through it.
    The model ends in its best state (lowest epoch loss).
    """
    device = clip.frames.device
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=lr, betas=fit.betas)
    steps_per_epoch = math.ceil(clip.num_frames / fit.batch_size)
    total_steps = max(epochs * steps_per_epoch, 1)

    start_epoch, lr_scale, recoveries, history = 0, 1.0, 0, []
    best_loss, best_state = math.inf, None
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        start_epoch, lr_scale = resume_state["epoch"], resume_state["lr_scale"]
        recoveries, history = resume_state["recoveries"], resume_state["history"]
        best_loss, best_state = resume_state["best_loss"], resume_state["best_state"]

    def copy_state() -> dict:
        return {"model": copy.deepcopy(model.state_dict()), "optimizer": copy.deepcopy(optimizer.state_dict())}

    # The state at the last epoch boundary: what a checkpoint saves, so that a resumed
    # run repeats exactly the epochs an uninterrupted one would have run.
    boundary = copy_state()
    if best_state is None:
        best_state = boundary  # a non-finite first epoch falls back to the initial weights

    def snapshot(epoch_done: int) -> dict:
        return {
            "tag": checkpoint_tag,
            "epoch": epoch_done,
            "model": boundary["model"],
            "optimizer": boundary["optimizer"],
            "lr_scale": lr_scale,
            "recoveries": recoveries,
            "history": history,
            "best_loss": best_loss,
            "best_state": best_state,
        }

    model.train()
    started = time.perf_counter()
    last_save = started
    bar = tqdm(total=epochs, initial=start_epoch, desc=desc, disable=not progress, unit="ep", leave=False,
               dynamic_ncols=True, mininterval=0.5 if sys.stderr.isatty() else 30.0)  # logs get few lines
    epoch = start_epoch
    mean_loss, mean_mse = math.nan, math.nan
    stop = _StopRequest()
    try:
        while epoch < epochs:
            order = _epoch_order(clip.num_frames, fit.seed, epoch).to(device)
            loss_sum, mse_sum, diverged = 0.0, 0.0, False
            for i in range(steps_per_epoch):
                if stop.requested:
                    raise KeyboardInterrupt
                step = epoch * steps_per_epoch + i
                for group in optimizer.param_groups:
                    group["lr"] = lr * lr_scale * lr_factor(step, total_steps, fit.warmup)
                idx = order[i * fit.batch_size : (i + 1) * fit.batch_size]
                step_loss = training_step(model, params, optimizer, clip, idx, fit, transform)
                if step_loss is None:
                    diverged = True
                    break
                loss_sum += step_loss.loss
                mse_sum += step_loss.mse
            if diverged:
                recoveries += 1
                if recoveries > MAX_RECOVERIES:
                    raise RuntimeError(f"{desc}: the loss is not finite and there is no good state to go back to")
                model.load_state_dict(best_state["model"])
                optimizer.load_state_dict(copy.deepcopy(best_state["optimizer"]))  # steps mutate it in place
                boundary = best_state
                lr_scale *= 0.5
                bar.write(f"{desc}: non-finite loss in epoch {epoch + 1}; back to the best state, lr x{lr_scale:g}")
                continue
            mean_loss, mean_mse = loss_sum / steps_per_epoch, mse_sum / steps_per_epoch
            epoch += 1
            history.append({"epoch": epoch, "seconds": time.perf_counter() - started, "loss": mean_loss,
                            "psnr": psnr_from_mse(mean_mse)})
            boundary = copy_state()
            if mean_loss <= best_loss:
                best_loss, best_state = mean_loss, boundary
            bar.set_postfix(loss=f"{mean_loss:.4f}", psnr=f"{psnr_from_mse(mean_mse):.2f}")
            bar.update(1)
            if checkpoint is not None and time.perf_counter() - last_save > checkpoint_seconds:
                save_checkpoint(checkpoint, snapshot(epoch))
                last_save = time.perf_counter()
    except KeyboardInterrupt:
        bar.close()
        if checkpoint is not None:
            save_checkpoint(checkpoint, snapshot(epoch))
        raise FitInterrupted(checkpoint) from None
    finally:
        stop.restore()
    bar.close()
    if history:
        model.load_state_dict(best_state["model"])
    model.eval()
    return TrainResult(
        epochs=epoch,
        seconds=time.perf_counter() - started,
        final_loss=best_loss,
        train_psnr=psnr_from_mse(mean_mse) if not math.isnan(mean_mse) else math.nan,
        recoveries=recoveries,
        history=history,
    )


def fit_network(model: nn.Module, clip: Clip, fit: FitConfig, **kwargs) -> TrainResult:
    """Fits the representation with the preset's recipe (Adam, warm-up + cosine)."""
    return train(model, clip, fit, epochs=fit.epochs, lr=fit.lr, desc="fit", **kwargs)
