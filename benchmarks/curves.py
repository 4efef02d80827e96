"""The curves of a results table: which there are, their rows, and their names."""

from __future__ import annotations

import pandas as pd

ANCHOR_CODECS = ("x264", "x265")
ENVELOPE = "envelope"  # the setting name of the E-NeRV curve made of all its settings' points


def curves(results: pd.DataFrame) -> list[tuple[str, str]]:
    """(codec, setting) of every curve, anchors first, plus the E-NeRV envelope when it has several settings."""
    keys = sorted({(c, s) for c, s in zip(results["codec"], results["setting"])},
                  key=lambda k: (k[0] not in ANCHOR_CODECS, k))
    enerv_settings = [k for k in keys if k[0] == "enerv"]
    if len(enerv_settings) > 1:
        keys.append(("enerv", ENVELOPE))
    return keys


def curve_rows(results: pd.DataFrame, codec: str, setting: str) -> pd.DataFrame:
    if codec == "enerv" and setting == ENVELOPE:
        return results[results["codec"] == "enerv"]
    return results[(results["codec"] == codec) & (results["setting"] == setting)]


def curve_label(codec: str, setting: str) -> str:
    """'x264 medium 4:2:0 low-delay', 'E-NeRV enerv-cpu-s'..."""
    if codec == "enerv":
        return "E-NeRV, all settings (Pareto envelope)" if setting == ENVELOPE else f"E-NeRV {setting}"
    parts = setting.split("-")
    words = [codec]
    for part in parts:
        words.append({"yuv420p": "4:2:0", "yuv444p": "4:4:4", "lowdelay": "low-delay"}.get(part, part))
    return " ".join(words)
