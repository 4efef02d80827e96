"""Encode time as an axis: each curve's quality at fixed rates against its encode seconds there.

For every curve (each codec, preset and chroma format; E-NeRV per preset and time budget, and
its envelope) the Pareto front of (bpp, PSNR-RGB) is interpolated linearly in log-rate at each
target rate: PSNR-RGB, and at the same place PSNR-YUV, VMAF and the encode and decode seconds
of a point. Nothing is extrapolated: a curve that does not span a rate has no value there.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmarks.curves import BUDGET_MARK, curve_label, curve_rows, curves

TARGET_BPP = (0.05, 0.1)
VALUES = ("psnr_rgb", "psnr_yuv", "vmaf", "encode_seconds", "decode_seconds")
COLUMNS = ["video", "codec", "setting", "budget_seconds", "label", "target_bpp", *VALUES, "videos"]


def _front(rows: pd.DataFrame) -> pd.DataFrame:
    """The points no cheaper point beats on PSNR-RGB, by rate."""
    rows = rows[np.isfinite(rows["bpp"]) & np.isfinite(rows["psnr_rgb"]) & (rows["bpp"] > 0)]
    kept, best = [], -math.inf
    for index, row in rows.sort_values(["bpp", "psnr_rgb"], ascending=[True, False]).iterrows():
        if row["psnr_rgb"] > best:
            kept.append(index)
            best = row["psnr_rgb"]
    return rows.loc[kept]


def _at(front: pd.DataFrame, column: str, target: float) -> float:
    if column not in front or len(front) < 2:
        return math.nan
    x = np.log10(front["bpp"].to_numpy(float))
    y = pd.to_numeric(front[column], errors="coerce").to_numpy(float)
    if not x[0] <= math.log10(target) <= x[-1]:
        return math.nan
    i = int(np.clip(np.searchsorted(x, math.log10(target)), 1, len(x) - 1))
    share = (math.log10(target) - x[i - 1]) / (x[i] - x[i - 1])
    return float(y[i - 1] + share * (y[i] - y[i - 1]))


def _groups(results: pd.DataFrame) -> list[tuple[str, str, float, pd.DataFrame]]:
    """(codec, setting, budget, rows): E-NeRV's curves split by time budget (NaN: none)."""
    out = []
    for codec, setting in curves(results):
        rows = curve_rows(results, codec, setting)
        if codec != "enerv":
            out.append((codec, setting, math.nan, rows))
            continue
        budgets = pd.to_numeric(rows.get("budget_seconds", pd.Series(dtype=float)), errors="coerce").fillna(0)
        for budget in sorted(set(budgets)):
            out.append((codec, setting, float(budget) if budget else math.nan, rows[budgets == budget]))
    return out


def label(codec: str, setting: str, budget: float) -> str:
    text = curve_label(codec, setting)
    named = BUDGET_MARK in setting  # 'E-NeRV enerv-grid-m @300s' says it already
    return text + (f", budget {budget:g} s" if codec == "enerv" and math.isfinite(budget) and not named else "")


def time_axis(results: pd.DataFrame, rates: tuple[float, ...] = TARGET_BPP) -> pd.DataFrame:
    """One row per video, curve and target rate, then the average over the videos (where every
    video has a value)."""
    rows = []
    videos = list(dict.fromkeys(results["video"]))
    for video in videos:
        for codec, setting, budget, group in _groups(results[results["video"] == video]):
            front = _front(group)
            for target in rates:
                row = {"video": video, "codec": codec, "setting": setting, "budget_seconds": budget,
                       "label": label(codec, setting, budget), "target_bpp": target, "videos": "1"}
                row.update({column: _at(front, column, target) for column in VALUES})
                rows.append(row)
    table = pd.DataFrame(rows, columns=COLUMNS)
    if len(videos) > 1 and not table.empty:
        averages = []
        for _, group in table.groupby(["codec", "setting", "budget_seconds", "target_bpp"], sort=False,
                                        dropna=False):
            first = group.iloc[0]
            row = {"video": "average", **{k: first[k] for k in ("codec", "setting", "budget_seconds", "label",
                                                                  "target_bpp")}}
            defined = group[np.isfinite(group["psnr_rgb"].astype(float))]
            row["videos"] = f"{len(defined)}/{len(group)}"
            for column in VALUES:
                row[column] = float(group[column].mean()) if len(defined) == len(group) else math.nan
            averages.append(row)
        table = pd.concat([table, pd.DataFrame(averages, columns=COLUMNS)], ignore_index=True)
    return table


def summary_rows(table: pd.DataFrame) -> pd.DataFrame:
    """The rows a report shows: the average (or the only video), curves with a value at some rate."""
    if table.empty:
        return table
    video = "average" if (table["video"] == "average").any() else table["video"].iloc[0]
    shown = table[table["video"] == video]
    has_value = shown.groupby("label")["psnr_rgb"].transform(lambda s: np.isfinite(s.astype(float)).any())
    return shown[has_value.astype(bool)]


def has_values(table: pd.DataFrame) -> bool:
    return not table.empty and bool(np.isfinite(table["psnr_rgb"].astype(float)).any())


def _seconds_key(group: pd.DataFrame) -> float:
    finite = group["encode_seconds"].astype(float).dropna()
    return float(finite.iloc[0]) if len(finite) else math.inf


def markdown(table: pd.DataFrame, rates: tuple[float, ...] = TARGET_BPP) -> str:
    """Per curve: PSNR-RGB, VMAF and encode seconds per point at each target rate; per codec
    the fastest curve first."""
    from benchmarks.tables import fmt, markdown_table

    shown = summary_rows(table)
    if shown.empty:
        return f"(no curve spans {' or '.join(f'{r:g}' for r in rates)} bpp, so there is no time axis)"
    order = list(dict.fromkeys(shown["codec"]))
    groups = sorted(shown.groupby("label", sort=False),
                    key=lambda item: (order.index(item[1]["codec"].iloc[0]), _seconds_key(item[1]), item[0]))
    rows = []
    for name, group in groups:
        row = [name]
        for rate in rates:
            at = group[group["target_bpp"] == rate]
            cells = at.iloc[0] if len(at) else pd.Series(math.nan, index=list(VALUES))
            row += [fmt(cells["psnr_rgb"], ".2f"), fmt(cells["vmaf"], ".1f"), fmt(cells["encode_seconds"], ".2f")]
        rows.append(row)
    header = ["curve"]
    for rate in rates:
        header += [f"PSNR-RGB @ {rate:g} bpp", f"VMAF @ {rate:g}", f"encode s @ {rate:g}"]
    return markdown_table(header, rows, ["---"] + ["---:"] * (len(header) - 1))
