"""The curves of a results table: which there are, their rows, and their names."""

from __future__ import annotations

import pandas as pd

from benchmarks.registry import ANCHOR_CODECS, anchor, chroma_label

ENVELOPE = "envelope"  # the setting name of the E-NeRV curve made of all its settings' points


def curve_order(key: tuple[str, str]) -> tuple:
    """Anchors first in registry order, each codec's presets fast to slow, then E-NeRV."""
    codec, setting = key
    spec = anchor(codec)
    if spec is None:
        return (1, 0, 0, key)
    preset = spec.preset_of_token(setting.split("-")[0])
    return (0, ANCHOR_CODECS.index(codec), spec.presets.index(preset) if preset in spec.presets else 0, key)


def curves(results: pd.DataFrame) -> list[tuple[str, str]]:
    """(codec, setting) of every curve in :func:`curve_order`, plus the E-NeRV envelope when it has
    several settings."""
    keys = sorted({(c, s) for c, s in zip(results["codec"], results["setting"])}, key=curve_order)
    enerv_settings = [k for k in keys if k[0] == "enerv"]
    if len(enerv_settings) > 1:
        keys.append(("enerv", ENVELOPE))
    return keys


def curve_rows(results: pd.DataFrame, codec: str, setting: str) -> pd.DataFrame:
    if codec == "enerv" and setting == ENVELOPE:
        return results[results["codec"] == "enerv"]
    return results[(results["codec"] == codec) & (results["setting"] == setting)]


def curve_label(codec: str, setting: str) -> str:
    """'x264 medium 4:2:0 low-delay', 'SVT-AV1 preset 6 4:2:0', 'VVenC medium 4:2:0 10-bit', 'E-NeRV enerv-grid-m'..."""
    if codec == "enerv":
        return "E-NeRV, all settings (Pareto envelope)" if setting == ENVELOPE else f"E-NeRV {setting}"
    spec = anchor(codec)
    parts = setting.split("-")
    words = [spec.title if spec else codec]
    if spec is not None and parts:
        words.append(spec.preset_label(spec.preset_of_token(parts.pop(0))))
    words += ["low-delay" if part == "lowdelay" else chroma_label(part) for part in parts]
    return " ".join(words)
