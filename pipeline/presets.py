"""Changes to a preset that several commands make, written once.

``enerv-compress --epochs`` and ``enerv-bench --epochs`` scale the fine-tunes along with
the fitting epochs; a benchmark point applies its codec settings over a preset.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, replace
from typing import Any

from pipeline.config import CodecConfig, CodecPreset, override
from pipeline.errors import InputError


def with_fit_epochs(preset: CodecPreset, epochs: int | None) -> CodecPreset:
    """The preset fitted for ``epochs`` epochs, its fine-tune epochs scaled by the same ratio.

    ``None`` keeps the preset as it is.
    """
    if epochs is None:
        return preset
    codec = preset.codec
    if preset.fit.epochs:
        scale = epochs / preset.fit.epochs
        codec = override(codec, prune_epochs=round(codec.prune_epochs * scale),
                         rd_epochs=round(codec.rd_epochs * scale), qat_epochs=round(codec.qat_epochs * scale))
    return override(preset, fit=override(preset.fit, epochs=epochs), codec=codec)


def with_codec_settings(preset: CodecPreset, settings: Mapping[str, Any]) -> CodecPreset:
    """The preset with some fields of its ``codec`` section replaced (validated by CodecConfig).

    Unlike :func:`pipeline.config.override`, a value of None is set (no rate term, no bit depth).
    """
    known = {f.name for f in fields(CodecConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise InputError(f"unknown codec setting(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return override(preset, codec=replace(preset.codec, **settings))


def with_width(preset: CodecPreset, factor: float) -> CodecPreset:
    """The preset's network with its channel counts times ``factor`` (rounded, at least 1).

    For ``enerv-grid`` networks: the stem width, the lower bound of the stage widths, the
    temporal modulation and the grids' channels; the parameter count grows about as the
    square of ``factor``. Other kinds are returned as they are (their structure is the paper's).
    """
    if factor == 1.0 or preset.network.kind != "enerv-grid":
        return preset
    net = preset.network

    def scaled(value: int) -> int:
        return max(1, round(value * factor))

    network = replace(net, fc_dim=scaled(net.fc_dim), lower_width=scaled(net.lower_width), mod_dim=scaled(net.mod_dim),
                      time_grid_channels=tuple(scaled(c) for c in net.time_grid_channels),
                      space_grid_channels=tuple(scaled(c) for c in net.space_grid_channels))
    return replace(preset, network=network)
