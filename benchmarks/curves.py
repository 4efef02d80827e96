"""The curves of a results table: which there are, their rows, and their names."""

from __future__ import annotations

import pandas as pd

from benchmarks.registry import ANCHOR_CODECS, anchor, chroma_label

ENVELOPE = "envelope"  # the setting name of the E-NeRV curve made of all its settings' points
BUDGET_MARK = "@"  # an E-NeRV setting of a run with several budgets: 'enerv-grid-m@300s'


def budget_setting(preset: str, budget_seconds: float) -> str:
    """The setting of a preset's curve at one of several time budgets: 'enerv-grid-m@300s'."""
    return f"{preset}{BUDGET_MARK}{budget_seconds:g}s"


def preset_of_setting(setting: str) -> str:
    """An E-NeRV setting without its budget: 'enerv-grid-m@300s' -> 'enerv-grid-m'."""
    return setting.split(BUDGET_MARK, 1)[0]


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
    """'x264 medium 4:2:0 low-delay', 'SVT-AV1 preset 6 4:2:0', 'VVenC medium 4:2:0 10-bit', 'E-NeRV enerv-grid-m',
    'E-NeRV enerv-grid-m @300s'..."""
    if codec == "enerv":
        if setting == ENVELOPE:
            return "E-NeRV, all settings (Pareto envelope)"
        return "E-NeRV " + setting.replace(BUDGET_MARK, " " + BUDGET_MARK, 1)
    spec = anchor(codec)
    parts = setting.split("-")
    words = [spec.title if spec else codec]
    if spec is not None and parts:
        words.append(spec.preset_label(spec.preset_of_token(parts.pop(0))))
    words += ["low-delay" if part == "lowdelay" else chroma_label(part) for part in parts]
    return " ".join(words)
