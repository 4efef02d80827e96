"""The fit's optimizers: one registry, built from ``fit.optimizer``.

``adam``: Adam over every parameter (the papers' recipe). ``soap``: SOAP (Adam in the
eigenbasis of a Shampoo preconditioner, refreshed every few steps) for the network's matrices
and convolution kernels, and Adam for everything else: biases, per-frame latents, the
quantizer's steps and context parameters. The per-frame latents are one row per frame, each
updated once an epoch, where a preconditioner shared across rows means nothing.

Every optimizer here keeps the ``torch.optim.Optimizer`` surface the training loop uses
(``param_groups`` with a ``base_lr`` each, ``zero_grad``, ``step``, ``state_dict``,
``load_state_dict``), so that the learning-rate schedule and checkpoints work unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pipeline.config import FitConfig
from pipeline.latent_enerv import LATENT_PREFIX

Groups = list[dict]  # {"params": [...], "base_lr": float, "matrix": bool}: "matrix" groups may be preconditioned


class OptimizerSet:
    """Several optimizers stepped as one (each owns some parameter groups)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer]):
        self.optimizers = optimizers

    @property
    def param_groups(self) -> list[dict]:
        return [g for opt in self.optimizers for g in opt.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for opt in self.optimizers:
            opt.step()

    def state_dict(self) -> dict:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state: dict) -> None:
        parts = state["optimizers"]
        if len(parts) != len(self.optimizers):
            raise ValueError("the checkpoint's optimizer state is another optimizer's")
        for opt, part in zip(self.optimizers, parts):
            opt.load_state_dict(part)


def _adam(groups: Groups, fit: FitConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam([_plain(g) for g in groups], lr=groups[0]["base_lr"], betas=fit.betas)


def _soap(groups: Groups, fit: FitConfig) -> OptimizerSet:
    from pytorch_optimizer import SOAP  # imported here: only this recipe needs it

    matrices, rest = [], []
    for g in groups:
        big = [p for p in g["params"] if g.get("matrix") and p.dim() >= 2]
        small = [p for p in g["params"] if not (g.get("matrix") and p.dim() >= 2)]
        if big:
            matrices.append({**_plain(g), "params": big})
        if small:
            rest.append({**_plain(g), "params": small})
    optimizers = []
    if matrices:
        # Adam's betas, no weight decay (a codec's weights are paid for by the rate term),
        # preconditioners refreshed every 10 steps, one per dimension of a kernel.
        optimizers.append(SOAP(matrices, lr=matrices[0]["base_lr"], betas=fit.betas, weight_decay=0.0,
                               precondition_frequency=10, max_precondition_dim=2048))
    if rest:
        optimizers.append(torch.optim.Adam(rest, lr=rest[0]["base_lr"], betas=fit.betas))
    return OptimizerSet(optimizers)


def _plain(group: dict) -> dict:
    return {k: v for k, v in group.items() if k != "matrix"}


OPTIMIZERS: dict[str, Callable[[Groups, FitConfig], torch.optim.Optimizer | OptimizerSet]] = {
    "adam": _adam,
    "soap": _soap,
}


def parameter_groups(params: dict[str, torch.Tensor], lr: float, fit: FitConfig, companion: nn.Module | None = None,
                     companion_lr: float = 0.0) -> list[dict]:
    """The optimizer's groups: the network's weights (``lr``; matrices and kernels may be
    preconditioned), its per-frame latents (``lr * fit.latent_lr``) and the companion's
    parameters (``companion_lr``)."""
    latents = [p for name, p in params.items() if name.startswith(LATENT_PREFIX)]
    weights = [p for name, p in params.items() if not name.startswith(LATENT_PREFIX)]
    groups = [{"params": weights, "base_lr": lr, "matrix": True},
              {"params": latents, "base_lr": lr * fit.latent_lr, "matrix": False}]
    if companion is not None:
        groups.append({"params": [p for p in companion.parameters() if p.requires_grad], "base_lr": companion_lr,
                       "matrix": False})
    return groups


def build_optimizer(groups: Groups, fit: FitConfig) -> torch.optim.Optimizer | OptimizerSet:
    """The optimizer ``fit.optimizer`` names, over ``groups`` (empty groups left out)."""
    groups = [g for g in groups if g["params"]]
    return OPTIMIZERS[fit.optimizer](groups, fit)
