"""Quantization of a fitted network: steps chosen for rate and distortion, and its symbols.

One quantizer serves training and the file. Every transmitted tensor has one step, a float16
value; the network is fine-tuned on exactly the grid the file stores
(:func:`pipeline.quantization.quantize_dequantize`), first with uniform noise of one step in
place of rounding, then with rounding itself (straight-through). The steps are learned with the
weights: a Laplace estimate of each tensor's coded size (:mod:`compress.rate`), weighted by
lambda, pulls them up; the distortion pulls them down. With a bit depth (``bits``) the symbols are
bounded by +-(2^(bits-1) - 1) instead and the steps start from the tensor's peak.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from compress.rate import LatentRate, laplace_bits, laplace_scale_init
from pipeline.bitstream import CodedTensor
from pipeline.kinds import network_kind
from pipeline.latent_coding import LATENT_BOUND, RESIDUAL_BOUND, LatentContext
from pipeline.latent_enerv import LATENT_PREFIX, latent_index
from pipeline.quantization import (
    FLOAT16_MAX,
    FLOAT16_MIN,
    MAX_SYMBOL,
    QuantParams,
    peak_steps,
    qmax,
    quantize,
    quantize_dequantize,
    steps_as_tensor,
)

NOISE, ROUND = "noise", "round"
STEP_LR = 1e-2  # learning rate of the log-steps and log-scales (unitless, so one value fits all)
LATENT_STEP = 1.0 / 16  # the first step of a latent tensor (latents start at zero)


def _float16_ste(x: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to the nearest float16, with the identity as gradient."""
    return x + (x.half().float() - x).detach()


def _like(x: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """``x`` in ``param``'s memory layout (channels-last kernels stay channels-last)."""
    if param.dim() == 4 and not param.is_contiguous() and param.is_contiguous(memory_format=torch.channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class LearnedQuantizer(nn.Module):
    """A step and a Laplace scale (both as logs) per transmitted tensor, trained with the network.

    ``names`` are the network's parameter names in file order; ``masks`` hold the pruned
    tensors' masks (pruned weights are zero, not coded, and cost nothing here). The tensors named
    in ``latents`` are context-coded grids: their symbols are bounded by ``LATENT_BOUND`` and their
    cost is a context model's (:class:`compress.rate.LatentRate`), trained with the steps; a step's
    cost is estimated on the batch's frames for per-frame latents, on the whole tensor for others.
    """

    def __init__(self, params: dict[str, torch.Tensor], masks: dict[str, torch.Tensor] | None = None,
                 bits: int | None = None, init_bits: int = 8, learn_steps: bool = True,
                 latents: tuple[str, ...] = (), weight_bound: int | None = None):
        super().__init__()
        self.names = list(params)
        self.masks = masks or {}
        self.max_symbol = qmax(bits) if bits is not None else MAX_SYMBOL
        if weight_bound is not None:  # the weights' symbols within a bound (a bank table's alphabet)
            self.max_symbol = min(self.max_symbol, weight_bound)
        self.learn_steps = learn_steps
        self.latent_slot = {name: i for i, name in enumerate(n for n in self.names if n in latents)}
        self.latent_rates = nn.ModuleList(LatentRate() for _ in self.latent_slot)
        self.bounds = [LATENT_BOUND if name in self.latent_slot else self.max_symbol for name in self.names]
        steps, scales = [], []
        for name in self.names:
            w = self.masked(name, params[name]).detach().float().cpu()
            if name in self.latent_slot:
                steps.append(LATENT_STEP)
                scales.append(1.0)
                if not name.startswith(LATENT_PREFIX):  # a grid coded as latents: its scale from its values
                    self.latent_rates[self.latent_slot[name]].start_at(float(w.abs().mean()) / LATENT_STEP)
                continue
            steps.append(float(peak_steps(w.numpy(), bits if bits is not None else init_bits)[0]))
            kept = w[self.masks[name].cpu()] if name in self.masks else w
            scales.append(laplace_scale_init(kept) if kept.numel() else 1.0)
        device = next(iter(params.values())).device
        self.log_steps = nn.Parameter(torch.tensor(steps, device=device).log(), requires_grad=learn_steps)
        self.log_scales = nn.Parameter(torch.tensor(scales, device=device).log())
        # Rate control while fitting (compress.rate_feedback): lambda's factor and the measured ratio
        # of coded to estimated bytes, kept here so that checkpoints keep them.
        self.register_buffer("rate_state", torch.ones(2, dtype=torch.float64, device=device))

    def masked(self, name: str, p: torch.Tensor) -> torch.Tensor:
        """Parameter ``p`` (named ``name``) with its pruning mask applied, if it has one."""
        return p * self.masks[name] if name in self.masks else p

    def steps(self) -> torch.Tensor:
        """The steps as the file stores them: float16 values (straight-through when learned)."""
        return _float16_ste(self.log_steps.exp().clamp(min=2.0**-24, max=65504.0))

    def forward(self, params: dict[str, torch.Tensor], mode: str, batch=None,
                latents_only: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """The weights the network uses, and the estimated bits of coding them.

        ``mode`` NOISE adds uniform noise of one step (a differentiable stand-in for rounding);
        ROUND rounds onto the file's grid, straight-through for the weights and, as in learned
        step-size quantization, with the rounding residual as the step's gradient. With
        ``batch`` (a :class:`compress.fit.FrameBatch`), the latents' bits are estimated from the
        latent frames of the batch, scaled to the clip. ``latents_only``: the weights pass
        unquantized and cost nothing (a fit with the rate term on the latents alone).
        """
        steps, scales = self.steps(), self.log_scales.exp()
        weights, bits = {}, steps.new_zeros(())
        plain = [i for i, name in enumerate(self.names) if name not in self.latent_slot]
        if latents_only:
            weights.update({self.names[i]: params[self.names[i]] for i in plain})
            plain = []
        if plain:  # the weights, all at once: one flat vector, each value with its tensor's step
            flat = torch.cat([self.masked(self.names[i], params[self.names[i]]).reshape(-1) for i in plain])
            keep = self._flat_keep(params, plain, flat.device)
            sizes = [params[self.names[i]].numel() for i in plain]
            # Expanded views, not a gather: their gradients sum in a fixed order (a gather's
            # backward accumulates in parallel, in an order that varies from run to run).
            step = torch.cat([steps[i].expand(n) for i, n in zip(plain, sizes)])
            scale = torch.cat([scales[i].expand(n) for i, n in zip(plain, sizes)])
            if mode == NOISE:
                bound = self.max_symbol * step
                v = torch.maximum(torch.minimum(flat, bound), -bound) + (torch.rand_like(flat) - 0.5) * step
            elif mode == ROUND:
                v = torch.clamp(_round_ste(flat / step), -self.max_symbol, self.max_symbol) * step
            else:
                raise ValueError(f"unknown quantization mode {mode!r}")
            cost = laplace_bits(v, step, scale)
            if keep is not None:
                v, cost = v * keep, cost * keep
            bits = bits + cost.sum()
            for i, part in zip(plain, v.split(sizes)):
                weights[self.names[i]] = _like(part.view(params[self.names[i]].shape), params[self.names[i]])
        for i, name in enumerate(self.names):
            if name not in self.latent_slot:
                continue
            p = params[name]
            step = steps_as_tensor(steps[i : i + 1], p.dim())
            if batch is not None and name.startswith(LATENT_PREFIX):
                v, cost = self._latent_batch(p, step, i, mode, batch)
            else:
                bound = self.bounds[i]
                if mode == NOISE:
                    v = p.clamp(-bound * step, bound * step) + (torch.rand_like(p) - 0.5) * step
                elif mode == ROUND:
                    v = torch.clamp(_round_ste(p / step), -bound, bound) * step
                else:
                    raise ValueError(f"unknown quantization mode {mode!r}")
                cost = self.latent_rates[self.latent_slot[name]](v / step).sum()
            weights[name] = v
            bits = bits + cost
        return {name: weights[name] for name in self.names}, bits

    def _flat_keep(self, params: dict[str, torch.Tensor], plain: list[int], device: torch.device):
        """The pruning masks of the weights laid end to end (None without any), built once."""
        if not self.masks:
            return None
        key = (str(device), tuple(params[self.names[i]].numel() for i in plain))
        if getattr(self, "_keep_key", None) != key:
            self._keep = torch.cat([self.masks[self.names[i]].reshape(-1).float() if self.names[i] in self.masks
                                    else torch.ones(params[self.names[i]].numel(), device=device) for i in plain])
            self._keep_key = key
        return self._keep

    def _latent_batch(self, p: torch.Tensor, step: torch.Tensor, i: int, mode: str, batch):
        """A latent tensor with only the batch's latent frames (and those before them, their
        context) quantized, and the bits of the batch's frames scaled to the clip: the other
        latent frames are not rendered by this step."""
        frames = latent_index(batch.times, p.shape[0])
        rows = torch.unique(torch.cat([frames, (frames - 1).clamp(min=0)]))
        bound = self.bounds[i]
        x = p[rows] / step
        if mode == NOISE:
            u = x.clamp(-bound, bound) + (torch.rand_like(x) - 0.5)
        else:
            u = torch.clamp(_round_ste(x), -bound, bound)
        # Costs of the batch's frames, their previous frames taken from the quantized rows.
        position = torch.searchsorted(rows, frames)
        previous = torch.searchsorted(rows, (frames - 1).clamp(min=0))
        cost = self.latent_rates[self.latent_slot[self.names[i]]].batch_bits(u[position], u[previous], frames > 0)
        v = p.index_put((rows,), u * step)
        return v, cost.sum() * (batch.num_frames / frames.numel())

    def quant_params(self) -> list[QuantParams]:
        """The file's quantization parameters (one float16 step per tensor), in file order."""
        steps = self.steps().detach().cpu().numpy().astype(np.float16)
        return [QuantParams(np.array([s], np.float16)) for s in steps]

    @torch.no_grad()
    def restart_weights(self, params: dict[str, torch.Tensor], bits: int | None = None, init_bits: int = 8) -> None:
        """The weights' steps and scales set again from ``params`` as the constructor sets them
        (the latents' are kept): after a fit that quantized the latents alone."""
        for i, name in enumerate(self.names):
            if name in self.latent_slot:
                continue
            w = self.masked(name, params[name]).detach().float().cpu()
            self.log_steps[i] = math.log(float(peak_steps(w.numpy(), bits if bits is not None else init_bits)[0]))
            self.log_scales[i] = math.log(laplace_scale_init(w) if w.numel() else 1.0)

    def weight_mask(self) -> torch.Tensor:
        """1 for each weight's step, 0 for each latent grid's (rate control moves only the former)."""
        return torch.tensor([0.0 if n in self.latent_slot else 1.0 for n in self.names], device=self.log_steps.device)

    def contexts(self) -> list[LatentContext | None]:
        """Per tensor in file order, the integer context model of a latent tensor (None: a weight)."""
        return [self.latent_rates[self.latent_slot[n]].context() if n in self.latent_slot else None
                for n in self.names]

    @torch.no_grad()
    def estimated_bits(self, params: dict[str, torch.Tensor]) -> float:
        """The Laplace estimate of the rounded weights' coded size (bits)."""
        return float(self(params, ROUND)[1])


def quantizer_for(model: nn.Module, codec, masks: dict[str, torch.Tensor] | None = None) -> LearnedQuantizer:
    """The quantizer of every tensor ``model`` transmits (``codec``: a CodecConfig), on its
    device; the latent grids of its kind get context models."""
    kind = network_kind(model.config.kind)
    params = dict(model.named_parameters())
    return LearnedQuantizer(params, masks, bits=codec.bits, learn_steps=codec.learn_steps,
                            latents=tuple(n for n in params if kind.is_latent(n)),
                            weight_bound=RESIDUAL_BOUND if codec.table_symbols else None,
                            ).to(next(model.parameters()).device)


class RateTransform:
    """A weight transform for :func:`compress.fit.train`: the quantizer's weights, and the rate
    term ``scale * lam * estimated bits / pixels`` (bits per pixel) as the penalty (none when
    lam is 0). ``scale`` (1 unless a schedule sets it) lets the rate term's weight grow in."""

    def __init__(self, quantizer: LearnedQuantizer, mode: str, lam: float, pixels: int, latents_only: bool = False):
        self.quantizer, self.mode, self.lam, self.pixels = quantizer, mode, lam, pixels
        self.latents_only = latents_only
        self.scale = 1.0
        self.feedback = None  # a compress.rate_feedback.RateFeedback that sees every step's bits

    @property
    def effective_lambda(self) -> float:
        """lambda as the loss weighs it now: the plan's, times rate control's factor."""
        return self.lam * float(self.quantizer.rate_state[0])

    def __call__(self, params: dict[str, torch.Tensor], batch=None) -> tuple[dict[str, torch.Tensor],
                                                                            torch.Tensor | None]:
        weights, bits = self.quantizer(params, self.mode, batch, self.latents_only)
        if self.feedback is not None:
            self.feedback.observe(bits)
        return weights, (bits * (self.scale * self.effective_lambda / self.pixels) if self.lam else None)

    def warm_up(self, fraction: float):
        """An ``on_step`` schedule for :func:`compress.fit.train`: ``scale`` grows linearly from 0
        to 1 over the first ``fraction`` of the steps, and says whether it has (None for 0: no schedule)."""
        if fraction <= 0:
            return None

        def on_step(step: int, total: int) -> bool:
            self.scale = min(1.0, step / max(fraction * total, 1.0))
            return self.scale >= 1.0

        return on_step


def quantized_weights(quantizer: LearnedQuantizer, mode: str, lam: float, pixels: int,
                      latents_only: bool = False) -> RateTransform:
    """The quantizer's weights and the rate term ``lam * estimated bits / pixels`` as a weight
    transform for :func:`compress.fit.train` (see :class:`RateTransform`)."""
    return RateTransform(quantizer, mode, lam, pixels, latents_only)


def code_tensor(weight: np.ndarray, step: np.float16, max_symbol: int, mask: np.ndarray | None,
                context: LatentContext | None = None) -> CodedTensor:
    """One tensor as symbols on the grid of ``step`` (float16), bounded by ``max_symbol``
    (``context``: a latent tensor's context model, which codes it)."""
    qp = QuantParams(np.array([step], np.float16))
    symbols = np.clip(quantize(weight, qp), -max_symbol, max_symbol).astype(np.int32)
    if mask is not None:
        symbols = symbols * mask
    return CodedTensor(qp, symbols, mask, context)


def scaled_steps(steps: np.ndarray, multiplier: float) -> np.ndarray:
    """float16 steps times ``multiplier``, rounded to float16 within its positive range."""
    scaled = np.clip(steps.astype(np.float64) * multiplier, FLOAT16_MIN, FLOAT16_MAX)
    return scaled.astype(np.float16)


def quantize_network(model: nn.Module, quantizer: LearnedQuantizer) -> list[CodedTensor]:
    """Every transmitted tensor, in the network's parameter order, as symbols on the file's grid."""
    return QuantizedNetwork.of(model, quantizer).coded


@dataclass
class QuantizedNetwork:
    """A network's tensors on the file's grid, and what it takes to move every step by one factor
    afterwards (rate control): the masked float32 weights, the float16 steps, the symbol bounds."""

    coded: list[CodedTensor]
    weights: list[np.ndarray]
    steps: np.ndarray
    bounds: list[int]

    @classmethod
    def of(cls, model: nn.Module, quantizer: LearnedQuantizer) -> QuantizedNetwork:
        params = dict(model.named_parameters())
        weights = [quantizer.masked(name, params[name]).detach().float().cpu().numpy() for name in quantizer.names]
        steps = np.array([qp.scales[0] for qp in quantizer.quant_params()], np.float16)
        coded = [code_tensor(w, s, bound, quantizer.masks[name].cpu().numpy() if name in quantizer.masks else None,
                             context)
                 for name, w, s, bound, context in zip(quantizer.names, weights, steps, quantizer.bounds,
                                                       quantizer.contexts())]
        return cls(coded, weights, steps, quantizer.bounds)

    def multiplier_bounds(self, steered: bool = False) -> tuple[float, float]:
        """The range rate control may scale the weights' steps in: never so small that a weight's
        symbol would pass its bound (clipped weights are wrong weights), and for a network whose
        lambda was steered while fitting (``steered``) within 1/2..2, the last few percent: a
        larger factor spends bytes on weights that the fit did not ask for."""
        low = 1 / 64
        for w, step, bound, c in zip(self.weights, self.steps, self.bounds, self.coded):
            if c.context is None and w.size and float(step) > 0:
                low = max(low, float(np.abs(w).max()) / (float(step) * (bound - 0.5)))
        low, high = (max(low, 0.5), 2.0) if steered else (low, 64.0)
        return min(low, 1.0), max(high, 1.0)

    def at(self, multiplier: float) -> list[CodedTensor]:
        """The tensors quantized with every weight's step times ``multiplier`` (1: as trained).
        Latent grids keep their trained steps: their context models were learned on that scale,
        and their symbols are bounded."""
        if multiplier == 1.0:
            return self.coded
        steps = scaled_steps(self.steps, multiplier)
        return [c if c.context is not None else code_tensor(w, s, bound, c.mask)
                for w, s, bound, c in zip(self.weights, steps, self.bounds, self.coded)]


def load_quantized(model: nn.Module, quantizer: LearnedQuantizer) -> None:
    """Puts the weights the decoder will see into ``model``, in place (torch, same arithmetic)."""
    with torch.no_grad():
        steps = quantizer.steps()
        for i, (name, p) in enumerate(model.named_parameters()):
            p.copy_(quantize_dequantize(quantizer.masked(name, p), steps[i : i + 1], quantizer.bounds[i]))


