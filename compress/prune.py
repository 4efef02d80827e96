"""Global unstructured magnitude pruning of the weights of linear and conv layers."""

from __future__ import annotations

import torch
from torch import nn


def prunable_names(model: nn.Module) -> list[str]:
    """Weights of linear and convolution layers: what pruning selects from."""
    names = []
    for module_name, module in model.named_modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            names.append(f"{module_name}.weight" if module_name else "weight")
    return names


def prune_by_magnitude(model: nn.Module, ratio: float) -> dict[str, torch.Tensor]:
    """Masks (True = kept) that drop the ``ratio`` smallest-magnitude prunable weights.

    The threshold is global: one magnitude over all prunable tensors, so layers with
    many small weights lose more of them.  The model is not changed.
    """
    if not 0 <= ratio < 1:
        raise ValueError(f"prune ratio must be in [0, 1), got {ratio}")
    params = dict(model.named_parameters())
    names = prunable_names(model)
    if ratio == 0 or not names:
        return {}
    magnitudes = torch.cat([params[n].detach().abs().flatten().float().cpu() for n in names])
    k = int(round(ratio * magnitudes.numel()))
    if k == 0:
        return {}
    threshold = torch.kthvalue(magnitudes, k).values
    masks = {}
    for n in names:
        mask = params[n].detach().abs() > threshold.to(params[n].device)
        if not bool(mask.all()):
            masks[n] = mask
    return masks


def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Sets the pruned weights to exactly zero, in place."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, mask in masks.items():
            params[name].mul_(mask)


def masked_weights(masks: dict[str, torch.Tensor]):
    """A weight transform for :func:`compress.fit.train` that holds the masks fixed."""

    def transform(params: dict[str, torch.Tensor], batch=None) -> tuple[dict[str, torch.Tensor], None]:
        return {n: p * masks[n] if n in masks else p for n, p in params.items()}, None

    return transform
