"""Changes to a preset that several commands make, written once.

``enerv-compress --epochs`` and ``enerv-bench --epochs`` scale the fine-tunes along with
the fitting epochs; a benchmark point applies its codec settings over a preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from pipeline.config import CodecConfig, CodecPreset, NetworkConfig, override
from pipeline.epochs import EpochPlan
from pipeline.errors import InputError
from pipeline.kinds import network_kind


def with_fit_epochs(preset: CodecPreset, epochs: int | None) -> CodecPreset:
    """The preset fitted for ``epochs`` epochs, its fine-tune epochs scaled by the same ratio.

    ``None`` keeps the preset as it is.
    """
    if epochs is None:
        return preset
    return EpochPlan.of(preset, as_run=False).with_fit(epochs).apply(preset)


def with_codec_settings(preset: CodecPreset, settings: Mapping[str, Any]) -> CodecPreset:
    """The preset with some fields of its ``codec`` section replaced (validated by CodecConfig).

    Unlike :func:`pipeline.config.override`, a value of None is set (no rate term, no bit depth).
    """
    known = {f.name for f in fields(CodecConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InputError(f"unknown codec setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return override(preset, codec=replace(preset.codec, **settings))


def scales_width(network: NetworkConfig) -> bool:
    """Whether rate control may scale this network's channels (the kind registry says)."""
    return network_kind(network.kind).scales_width


def with_width(preset: CodecPreset, factor: float) -> CodecPreset:
    """The preset's network with its channel counts times ``factor`` (rounded, at least 1), for the
    kinds whose width scales (:mod:`pipeline.kinds`; ``enerv-grid``: the stem width, the lower
    bound of the stage widths, the temporal modulation and the grids' channels; the parameter
    count grows about as the square of ``factor``). Other kinds are returned as they are."""
    if factor == 1.0 or not scales_width(preset.network):
        return preset
    return replace(preset, network=network_kind(preset.network.kind).with_width(preset.network, factor))
