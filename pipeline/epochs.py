"""The epoch plan: how long each training stage of an encode runs, as one typed value.

An encode trains in up to four stages: the **fit**, a fine-tune after **pruning** (with the
mask held fixed), the **rate-distortion** fine-tune (quantization noise and the rate term)
and the fine-tune on the **rounded** grid (straight-through). A preset gives each stage a
number of epochs; ``--epochs``, a ``--time-budget`` and the benchmark's budget change them,
always through this object, and the encoder, the plan it prints, ``--dry-run`` and the
benchmark all read them from here.

Epochs may be fractional (a time budget on a long clip can afford less than a pass over its
frames); a stage runs ``round(epochs * steps_per_epoch)`` optimizer steps, at least one when
its epochs are not 0. A plan made of whole epochs runs exactly ``epochs * steps_per_epoch``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from pipeline.config import CodecPreset, override

STAGES = ("fit", "prune", "rd", "qat")
STAGE_NAMES = {"fit": "fit", "prune": "prune fine-tune", "rd": "rate-distortion fine-tune",
               "qat": "quantization fine-tune"}


@dataclass(frozen=True)
class EpochPlan:
    """Epochs of each training stage, as the encode runs them (a stage that does not run: 0)."""

    fit: float
    prune: float = 0.0
    rd: float = 0.0
    qat: float = 0.0

    def __post_init__(self) -> None:
        for stage in STAGES:
            value = getattr(self, stage)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"epochs of {stage} must be a non-negative number, got {value!r}")

    @classmethod
    def of(cls, preset: CodecPreset, *, as_run: bool = True) -> EpochPlan:
        """The epochs of a preset. ``as_run``: those it runs (no pruning fine-tune without
        pruning, no rate-distortion fine-tune without a rate term); else as its fields say."""
        codec = preset.codec
        if not as_run:
            return cls(preset.fit.epochs, codec.prune_epochs, codec.rd_epochs, codec.qat_epochs)
        return cls(preset.fit.epochs, codec.prune_epochs if codec.prune_ratio > 0 else 0,
                   codec.rd_epochs if codec.quality is not None else 0, codec.qat_epochs)

    def get(self, stage: str) -> float:
        return getattr(self, stage)

    @property
    def finetune(self) -> float:
        """Epochs of the three fine-tunes together."""
        return self.prune + self.rd + self.qat

    @property
    def total(self) -> float:
        """Epochs of all the stages together."""
        return self.fit + self.finetune

    @property
    def is_whole(self) -> bool:
        return all(float(self.get(s)).is_integer() for s in STAGES)

    def steps(self, stage: str, steps_per_epoch: int) -> int:
        """Optimizer steps of ``stage``: at least one when it runs at all."""
        epochs = self.get(stage)
        return 0 if epochs <= 0 else max(1, round(epochs * steps_per_epoch))

    def with_fit(self, epochs: int | None) -> EpochPlan:
        """``epochs`` of fitting, the fine-tunes scaled by the same ratio (``--epochs``); None: as is."""
        if epochs is None:
            return self
        if not self.fit:
            return replace(self, fit=epochs)
        ratio = epochs / self.fit
        return EpochPlan(epochs, round(self.prune * ratio), round(self.rd * ratio), round(self.qat * ratio))

    def scaled(self, factor: float, *, whole: bool = True) -> EpochPlan:
        """Every stage times ``factor``; ``whole`` rounds down to whole epochs, keeping at least
        one epoch of every stage that runs (fractions of an epoch otherwise)."""
        def one(epochs: float) -> float:
            if not epochs:
                return 0
            return max(1, math.floor(epochs * factor)) if whole else epochs * factor
        return EpochPlan(*(one(self.get(s)) for s in STAGES))

    def apply(self, preset: CodecPreset) -> CodecPreset:
        """The preset with these epochs written into it (whole plans only: presets count whole epochs)."""
        if not self.is_whole:
            raise ValueError("a preset holds whole epochs; this plan has fractions")
        return override(preset, fit=replace(preset.fit, epochs=int(self.fit)),
                        codec=replace(preset.codec, prune_epochs=int(self.prune), rd_epochs=int(self.rd),
                                      qat_epochs=int(self.qat)))

    def as_list(self) -> list[float]:
        return [int(e) if float(e).is_integer() else round(e, 3) for e in (self.fit, self.prune, self.rd, self.qat)]

    @property
    def text(self) -> str:
        """'fit+prune+rd+rounding' epochs, e.g. '120+0+40+10'."""
        return "+".join(f"{e:g}" for e in self.as_list())
