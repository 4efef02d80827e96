"""What minutes buy: E-NeRV's BD-rate against the anchors as a function of its time budget per point.

For results with several ``--budget-seconds``, each budget's E-NeRV curves (one per preset, and
the Pareto envelope over the presets at that budget) are measured against the anchors' reference
curves (and x264 medium 4:4:4, whose crossing the report states) by :func:`benchmarks.bd.bd_table`:
the Summary's BD-rate, on PSNR-RGB, averaged over the videos. The budget at which the BD-rate
crosses 0 is interpolated in log(seconds) between two measured budgets, or else extrapolated from
the last two, and then marked as such.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from benchmarks.bd import bd_table
from benchmarks.curves import ENVELOPE, curve_label, curve_order, curve_rows, preset_of_setting
from benchmarks.registry import ANCHORS
from benchmarks.tables import fmt, markdown_table, reference_curves

CROSSING_ANCHOR = ("x264", f"{ANCHORS['x264'].setting_token('medium')}-{ANCHORS['x264'].chroma['yuv444p']}")
COLUMNS = ["budget_seconds", "curve", "test_setting", "anchor_codec", "anchor_setting", "anchor", "bd_rate_psnr_rgb",
           "bd_psnr_psnr_rgb", "psnr_overlap", "videos", "points", "encode_seconds", "main", "note"]


@dataclass(frozen=True)
class Crossing:
    """Where a BD-rate against seconds per point reaches 0."""

    seconds: float  # NaN where there is no such budget
    kind: str  # 'measured', 'interpolated', 'extrapolated', 'below' (under 0 from the first budget), 'none'
    text: str  # the report's sentence


def _seconds(value: float) -> str:
    return f"{value:,.0f} s ({value / 60:.1f} min)"


def zero_crossing(seconds: Sequence[float], bd_rates: Sequence[float]) -> Crossing:
    """The budget at which the BD-rate reaches 0: interpolated linearly in log(seconds) between the
    first two neighbouring budgets on either side of 0, else extrapolated from the last two budgets
    when the BD-rate falls there (and said to be "extrapolated, not measured")."""
    pairs = sorted((float(s), float(b)) for s, b in zip(seconds, bd_rates)
                   if s > 0 and math.isfinite(s) and math.isfinite(b))
    if len(pairs) < 2:
        return Crossing(math.nan, "none", "no crossing: fewer than two budgets have a BD-rate")
    for i, (s, b) in enumerate(pairs):
        if b == 0:
            return Crossing(s, "measured", f"at {_seconds(s)} per point (measured: BD-rate 0.0 %)")
        if b < 0:
            if i == 0:
                return Crossing(math.nan, "below", f"below 0 already at the shortest budget ({s:g} s: {b:+.1f} %)")
            s0, b0 = pairs[i - 1]
            at = math.exp(math.log(s0) + b0 / (b0 - b) * (math.log(s) - math.log(s0)))
            return Crossing(at, "interpolated", f"about {_seconds(at)} per point, interpolated in log(seconds) "
                                                f"between the measured {s0:g} s ({b0:+.1f} %) and {s:g} s ({b:+.1f} %)")
    (s0, b0), (s1, b1) = pairs[-2:]
    slope = (b1 - b0) / (math.log(s1) - math.log(s0))
    if not slope < 0:
        return Crossing(math.nan, "none", f"no crossing: BD-rate is not falling ({b0:+.1f} % at {s0:g} s, "
                                          f"{b1:+.1f} % at {s1:g} s)")
    at = math.exp(math.log(s1) - b1 / slope)
    return Crossing(at, "extrapolated", f"about {_seconds(at)} per point (extrapolated, not measured: on "
                                        f"log(seconds) from the last two budgets, {b0:+.1f} % at {s0:g} s and "
                                        f"{b1:+.1f} % at {s1:g} s)")


def budgets(results: pd.DataFrame) -> list[float]:
    """The positive time budgets of the E-NeRV points, ascending."""
    e = results[results["codec"] == "enerv"]
    if e.empty or "budget_seconds" not in e:
        return []
    return sorted({float(v) for v in pd.to_numeric(e["budget_seconds"], errors="coerce").dropna() if v > 0})


def crossing_anchor(results: pd.DataFrame) -> tuple[str, str] | None:
    """x264 medium 4:4:4 where the results have it, else the first anchor's reference curve."""
    if ((results["codec"] == CROSSING_ANCHOR[0]) & (results["setting"] == CROSSING_ANCHOR[1])).any():
        return CROSSING_ANCHOR
    references = reference_curves(results)
    return references[0] if references else None


def anchor_curves(results: pd.DataFrame) -> list[tuple[str, str]]:
    """The anchors' reference curves (as the Summary's) and the crossing's anchor curve."""
    chosen = reference_curves(results)
    crossing = crossing_anchor(results)
    return sorted(chosen + ([crossing] if crossing and crossing not in chosen else []), key=curve_order)


def budget_bd(results: pd.DataFrame, method: str = "akima") -> pd.DataFrame:
    """One row per budget, E-NeRV curve and anchor curve: the average BD-rate (PSNR-RGB) and the mean
    measured encode seconds of the curve's points. ``main`` marks each budget's E-NeRV curve: the
    envelope over its presets (the preset itself when there is one)."""
    anchors = anchor_curves(results)
    rows = []
    if not anchors:
        return pd.DataFrame(rows, columns=COLUMNS)
    anchor_rows = pd.concat([curve_rows(results, *a) for a in anchors])
    spent = pd.to_numeric(results["budget_seconds"], errors="coerce")
    for budget in budgets(results):
        enerv = results[(results["codec"] == "enerv") & (spent == budget)]
        bd = bd_table(pd.concat([anchor_rows, enerv]), method)
        avg = bd[(bd["video"] == "average") & (bd["test_codec"] == "enerv")]
        main = ENVELOPE if (avg["test_setting"] == ENVELOPE).any() else None
        for _, r in avg.iterrows():
            points = curve_rows(enerv, "enerv", r["test_setting"])
            rows.append({"budget_seconds": budget, "test_setting": r["test_setting"],
                         "curve": "envelope over presets" if r["test_setting"] == ENVELOPE
                         else preset_of_setting(r["test_setting"]),
                         "anchor_codec": r["anchor_codec"], "anchor_setting": r["anchor_setting"],
                         "anchor": curve_label(r["anchor_codec"], r["anchor_setting"]),
                         **{k: r[k] for k in ("bd_rate_psnr_rgb", "bd_psnr_psnr_rgb", "psnr_overlap", "videos",
                                              "note")},
                         "points": len(points), "encode_seconds": float(points["encode_seconds"].mean()),
                         "main": main is None or r["test_setting"] == main})
    return pd.DataFrame(rows, columns=COLUMNS)


def main_curve(table: pd.DataFrame) -> pd.DataFrame:
    """Each budget's E-NeRV curve against each anchor (the plot's lines)."""
    return table[table["main"].astype(bool)]


def crossing(table: pd.DataFrame, anchor: tuple[str, str] | None) -> Crossing:
    """Where the budgets' E-NeRV curve meets ``anchor``."""
    if anchor is None:
        return Crossing(math.nan, "none", "no crossing: no anchor was run")
    rows = main_curve(table)
    rows = rows[(rows["anchor_codec"] == anchor[0]) & (rows["anchor_setting"] == anchor[1])]
    return zero_crossing(rows["budget_seconds"].astype(float), rows["bd_rate_psnr_rgb"].astype(float))


def _cell(row: pd.Series) -> str:
    rate = float(row["bd_rate_psnr_rgb"])
    shaky = not (np.isfinite(rate) and float(row["psnr_overlap"]) >= 0.5)
    return f"{fmt(rate, '+.1f')} %" + (" *" if shaky else "")


def markdown(table: pd.DataFrame, results: pd.DataFrame, plotted: bool = True) -> str:
    """The report's section: the table, the figure and the crossing with the crossing's anchor."""
    seconds = sorted(set(table["budget_seconds"]))
    curves = list(dict.fromkeys(table.sort_values("main", kind="stable")["curve"]))
    anchors = list(dict.fromkeys(sorted(zip(table["anchor_codec"], table["anchor_setting"]), key=curve_order)))
    rows = []
    for curve in curves:
        mine = table[table["curve"] == curve]
        for anchor in anchors:
            cells = mine[(mine["anchor_codec"] == anchor[0]) & (mine["anchor_setting"] == anchor[1])]
            by_budget = {float(r["budget_seconds"]): _cell(r) for _, r in cells.iterrows()}
            rows.append([curve, curve_label(*anchor)] + [by_budget.get(s, "-") for s in seconds])
        encode = mine.drop_duplicates("budget_seconds").set_index("budget_seconds")["encode_seconds"]
        rows.append([curve, "measured encode s / point (mean)"] + [fmt(encode.get(s), ".0f", "-") for s in seconds])
    header = ["E-NeRV curve", "BD-rate vs"] + [f"{s:g} s / point" for s in seconds]
    anchor = crossing_anchor(results)
    found = crossing(table, anchor)
    name = curve_label(*anchor) if anchor else "an anchor"
    figure = "![BD-rate against seconds per point](budget_curve.png)\n\n" if plotted else ""
    main = main_curve(table)["curve"]
    which = "the envelope over presets at each budget" if (main == "envelope over presets").any() else \
        f"{', '.join(dict.fromkeys(main))} at each budget"
    return (f"E-NeRV at {len(seconds)} time budgets per point ({', '.join(f'{s:g}' for s in seconds)} s): each "
            "budget's curves against the anchors' reference curves (as in the Summary) and "
            f"{curve_label(*CROSSING_ANCHOR)} where it was run. BD-rate on PSNR-RGB, averaged over the videos "
            "(`bd_table`, the same numbers as the BD-rate tables); * as there. A budget is what the epochs were "
            "scaled to, estimated before the fit; the measured encode seconds of its points are in the rows "
            "below each curve. Data in `budget_curve.csv`.\n\n"
            f"{markdown_table(header, rows, ['---', '---'] + ['---:'] * len(seconds))}\n\n{figure}"
            f"**BD-rate 0 against {name}** ({which}): {found.text}.")
