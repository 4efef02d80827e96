"""BD-rate and BD-PSNR of every curve against every anchor curve, from a table of measured points.

The numbers come from the ``bjontegaard`` package; this module only chooses the points that
enter them (each curve's Pareto front) and says how far two curves overlap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable

import bjontegaard
import numpy as np
import pandas as pd

from benchmarks.curves import curve_rows, curves
from benchmarks.registry import ANCHOR_CODECS

METRICS = {"psnr_rgb": "PSNR-RGB", "psnr_yuv": "PSNR-YUV", "vmaf": "VMAF"}
BD_METHODS = ("akima", "pchip")


def gain_column(metric: str) -> str:
    """The column of the quality difference at equal rate: BD-PSNR (dB), or BD-VMAF (VMAF points)."""
    return "bd_vmaf" if metric == "vmaf" else f"bd_psnr_{metric}"


def metrics_of(results: pd.DataFrame) -> list[str]:
    """The metrics that the results hold: both PSNRs, and VMAF where any point has it."""
    measured = "vmaf" in results and pd.to_numeric(results["vmaf"], errors="coerce").notna().any()
    return [m for m in METRICS if m != "vmaf" or measured]


def pareto_front(rates: Iterable[float], dists: Iterable[float]) -> tuple[np.ndarray, np.ndarray]:
    """The points no other point beats (less or equal rate and more or equal quality), by rate.

    Interpolation needs a curve whose quality rises strictly with the rate; a point that costs
    more bits for no better quality is not on the codec's operational curve.
    """
    pts = sorted((float(r), float(d)) for r, d in zip(rates, dists) if np.isfinite(r) and np.isfinite(d) and r > 0)
    kept: list[tuple[float, float]] = []
    for r, d in pts:
        if kept and r == kept[-1][0]:
            if d > kept[-1][1]:
                kept[-1] = (r, d)
                while len(kept) > 1 and kept[-2][1] >= kept[-1][1]:
                    kept.pop(-2)
            continue
        if not kept or d > kept[-1][1]:
            kept.append((r, d))
    return np.array([p[0] for p in kept]), np.array([p[1] for p in kept])


def _overlap(a: np.ndarray, b: np.ndarray) -> float:
    """The share of the narrower of two ranges that the other covers (0..1): 1 when one curve
    lies wholly within the other's range, so the average is taken over all of the narrower one."""
    low, high = max(a.min(), b.min()), min(a.max(), b.max())
    narrower = min(a.max() - a.min(), b.max() - b.min())
    return max(high - low, 0.0) / narrower if narrower > 0 else 0.0


def bd_metrics(rate_anchor, dist_anchor, rate_test, dist_test, method: str = "akima") -> dict:
    """BD-rate (%) and BD-PSNR (dB) of a test curve against an anchor curve.

    Both curves are reduced to their Pareto fronts first. Negative BD-rate: the test needs
    fewer bits than the anchor for the same quality. BD-rate averages over the quality range
    the two curves share, BD-PSNR over the (log) rate range they share (never extrapolating);
    ``psnr_overlap`` and ``rate_overlap`` give the share of the narrower curve's range that
    the shared range covers (0 leaves the number undefined).
    """
    if method not in BD_METHODS:
        raise ValueError(f"unknown BD interpolation {method!r}; one of {BD_METHODS}")
    ra, da = pareto_front(rate_anchor, dist_anchor)
    rt, dt = pareto_front(rate_test, dist_test)
    out = {"bd_rate": math.nan, "bd_psnr": math.nan, "points_anchor": len(ra), "points_test": len(rt),
           "psnr_overlap": math.nan, "rate_overlap": math.nan, "note": ""}
    if len(ra) < 2 or len(rt) < 2:
        out["note"] = "fewer than 2 points on a Pareto front"
        return out
    out["psnr_overlap"] = _overlap(da, dt)
    out["rate_overlap"] = _overlap(np.log10(ra), np.log10(rt))
    notes = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if out["psnr_overlap"] > 0:
            out["bd_rate"] = float(bjontegaard.bd_rate(ra, da, rt, dt, method=method, require_matching_points=False,
                                                       min_overlap=0))
        else:
            notes.append("no common PSNR range (BD-rate undefined)")
        if out["rate_overlap"] > 0:
            out["bd_psnr"] = float(bjontegaard.bd_psnr(ra, da, rt, dt, method=method, require_matching_points=False,
                                                       min_overlap=0))
        else:
            notes.append("no common rate range (BD-PSNR undefined)")
    for name, what in (("psnr_overlap", "PSNR"), ("rate_overlap", "rate")):
        if 0 < out[name] < 0.5:
            notes.append(f"the {what} ranges share {out[name]:.0%} of the narrower one only")
    out["note"] = "; ".join(notes)
    return out


def bd_table(results: pd.DataFrame, method: str = "akima", include_self: bool = False) -> pd.DataFrame:
    """BD-rate/BD-PSNR of every curve against every anchor curve, per video and averaged.

    One row per (video, test curve, anchor curve); the rows with ``video == "average"`` hold
    the mean over the videos where the value is defined (``videos`` says over how many). VMAF
    columns are there when the results hold VMAF.
    """
    metrics = metrics_of(results) if not results.empty else list(METRICS)[:2]
    columns = ["video", "test_codec", "test_setting", "anchor_codec", "anchor_setting", "method"]
    for metric in metrics:
        columns += [f"bd_rate_{metric}", gain_column(metric)]
    columns += ["points_test", "points_anchor", "psnr_overlap", "rate_overlap", "videos", "note"]
    if results.empty:
        return pd.DataFrame(columns=columns)
    keys = curves(results)
    anchors = [k for k in keys if k[0] in ANCHOR_CODECS]
    rows = []
    videos = list(dict.fromkeys(results["video"]))
    for video in videos:
        per_video = results[results["video"] == video]
        for test in keys:
            t = curve_rows(per_video, *test)
            for anchor in anchors:
                if test == anchor and not include_self:
                    continue
                a = curve_rows(per_video, *anchor)
                if t.empty or a.empty:
                    continue
                row = {"video": video, "test_codec": test[0], "test_setting": test[1], "anchor_codec": anchor[0],
                       "anchor_setting": anchor[1], "method": method, "videos": "1"}
                notes = []
                for metric in metrics:
                    m = bd_metrics(a["bpp"], pd.to_numeric(a[metric]), t["bpp"], pd.to_numeric(t[metric]), method)
                    row[f"bd_rate_{metric}"], row[gain_column(metric)] = m["bd_rate"], m["bd_psnr"]
                    if metric == "psnr_rgb":
                        row.update({k: m[k] for k in ("points_test", "points_anchor", "psnr_overlap", "rate_overlap")})
                    if m["note"]:
                        notes.append(f"{METRICS[metric]}: {m['note']}")
                row["note"] = "; ".join(notes)
                rows.append(row)
    table = pd.DataFrame(rows, columns=columns)
    if table.empty:
        return table
    averages = []
    group_keys = ["test_codec", "test_setting", "anchor_codec", "anchor_setting"]
    for key, group in table.groupby(group_keys, sort=False):
        row = dict(zip(group_keys, key))
        row.update({"video": "average", "method": method, "note": ""})
        for metric in metrics:
            for column in (f"bd_rate_{metric}", gain_column(metric)):
                values = group[column].astype(float)
                finite = values[np.isfinite(values)]
                row[column] = float(finite.mean()) if len(finite) else math.nan
        defined = int(np.isfinite(group["bd_rate_psnr_rgb"].astype(float)).sum())
        row["videos"] = f"{defined}/{len(group)}"
        for name in ("psnr_overlap", "rate_overlap"):
            row[name] = float(group[name].astype(float).mean())
        row["points_test"] = int(group["points_test"].min())
        row["points_anchor"] = int(group["points_anchor"].min())
        if defined < len(group):
            row["note"] = f"BD-rate (PSNR-RGB) defined for {defined} of {len(group)} videos"
        averages.append(row)
    return pd.concat([table, pd.DataFrame(averages, columns=columns)], ignore_index=True)
