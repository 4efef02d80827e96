"""Rate control while fitting: lambda steered so that the coded size lands on a target.

For presets trained with the rate term from the first step (the latent kinds), most of a file is
per-frame latents whose coded size is set by lambda during the fit; scaling the weights' steps
afterwards cannot move it far, and a model from quality to bytes fitted on other videos misses by
up to 3x (at quality 60: 0.10 bpp on vtest, 0.31 on the bundled clip). So the size is measured
while the network learns, and lambda follows it:

* each epoch, the rate term's own estimate of the coded bytes (the mean over the epoch's steps,
  every step's latents scaled to the clip) is compared with the target, and lambda is multiplied
  by ``(estimate / target) ** (rate * epoch)``, ``epoch`` being the epoch's share of the fit: the
  correction's pace is the same whatever the number of epochs (the network needs some share of
  its fit to follow a new lambda), bounded per epoch;
* at a few points of the fit the network is really coded, and the ratio of the real bytes to the
  estimate corrects every estimate after it (the context model's integer rounding, the symbol
  tables, noise against rounding);
* lambda moves only between ``start`` and ``stop`` (fractions of the fit's steps): in the first
  third the size falls 2-3x at a fixed lambda as the network learns (enerv-latent-xs on the
  bundled clip), so it says little of the final size, and a lambda that chased it would swing
  (that cost 0.1-0.3 dB at equal bytes against fixed-quality files); near the end the learning
  rate has decayed and the state that ends the fit must be one trained at one lambda.

The state (lambda's factor, the correction) lives in the quantizer's buffers, so a checkpoint
keeps it and a resumed fit continues exactly as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FeedbackSettings:
    """How lambda follows the measured size (fractions are of the fit's optimizer steps)."""

    start: float = 0.35
    stop: float = 0.8
    rate: float = 10.0  # log-lambda moves rate x log(estimate / target) per whole fit
    max_step: float = 1.25  # lambda changes at most this factor per epoch
    # Where the network is really coded: before lambda first moves (the estimate of noisy latents
    # near zero is about twice the coded size), then as the ratio drifts.
    checks: tuple[float, ...] = (0.35, 0.5, 0.65, 0.78)
    max_factor: float = 1000.0  # lambda within [1/max_factor, max_factor] of the plan's


class RateFeedback:
    """Steers the rate term's lambda factor (``quantizer.rate_state[0]``) toward ``target_bytes``.

    ``measure()`` codes the network as it stands and returns its coded bytes (weights and latents,
    without the file's header); ``per_epoch``: optimizer steps per epoch. Call :meth:`on_step`
    before each step and :meth:`observe` with each step's estimated bits (of the whole clip).
    """

    def __init__(self, quantizer: torch.nn.Module, target_bytes: float, measure: Callable[[], int],
                 per_epoch: int, settings: FeedbackSettings = FeedbackSettings()):
        self.quantizer, self.target, self.measure = quantizer, float(target_bytes), measure
        self.per_epoch, self.settings = per_epoch, settings
        self.step, self.total = 0, 1
        self._sum, self._count = 0.0, 0
        self.log: list[dict] = []  # what the controller saw and did, epoch by epoch

    @property
    def factor(self) -> float:
        return float(self.quantizer.rate_state[0])

    def summary(self) -> str:
        """One line: where lambda ended and what the measurements said."""
        real = [e for e in self.log if "real" in e]
        line = f"rate: lambda x{self.factor:.3g} of the planned one after {len(self.log)} epochs"
        if real:
            last = real[-1]
            line += (f"; coded {last['real']:,} bytes against {self.target:,.0f} wanted at step {last['step']} "
                     f"(coded/estimated {last['correction']:.3f})")
        return line

    def on_step(self, step: int, total: int) -> bool:
        """Notes the step about to run; says whether the objective has settled (lambda no longer moves)."""
        self.step, self.total = step, max(total, 1)
        return step >= self.settings.stop * self.total

    def observe(self, bits: torch.Tensor) -> None:
        """One step's estimated bits; at an epoch's last step, lambda moves for the next epoch."""
        self._sum = self._sum + bits.detach()  # a tensor: read once an epoch, not once a step
        self._count += 1
        last = (self.step + 1) % self.per_epoch == 0 or self.step + 1 >= self.total
        if last:
            self._epoch_end()

    def _epoch_end(self) -> None:
        estimate = float(self._sum) / max(self._count, 1) / 8.0  # bytes
        self._sum, self._count = 0.0, 0
        s, state = self.settings, self.quantizer.rate_state
        done = (self.step + 1) / self.total
        before_check = (self.step + 1 - self.per_epoch) / self.total
        entry = {"step": self.step + 1, "estimate": estimate, "factor": float(state[0]), "correction": float(state[1])}
        if any(before_check < c <= done for c in s.checks) and estimate > 0:
            real = self.measure()
            state[1] = real / estimate
            entry.update(real=real, correction=float(state[1]))
        if s.start <= done < s.stop and estimate > 0:
            ratio = float(state[1]) * estimate / self.target
            change = min(max(ratio ** (s.rate * self.per_epoch / self.total), 1.0 / s.max_step), s.max_step)
            state[0] = min(max(float(state[0]) * change, 1.0 / s.max_factor), s.max_factor)
            entry["factor"] = float(state[0])
        self.log.append(entry)


def combine_on_step(*hooks):
    """One ``on_step`` of several (None for none): settled when all of them are."""
    hooks = [h for h in hooks if h is not None]
    if not hooks:
        return None

    def on_step(step: int, total: int) -> bool:
        return all([h(step, total) is not False for h in hooks])

    return on_step

