"""The markdown tables of the benchmark's report, each from the table of measured points."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from benchmarks.bd import gain_column
from benchmarks.curves import ENVELOPE, curve_label, curve_order, curve_rows, curves
from benchmarks.registry import ANCHOR_CODECS, ANCHORS


def fmt(value, spec: str = ".2f", missing: str = "n/a") -> str:
    try:
        if value is None or (isinstance(value, float) and not math.isfinite(value)) or value is pd.NA:
            return missing
        return format(value, spec)
    except (TypeError, ValueError):
        return str(value)


def markdown_table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    align = align or ["---"] * len(header)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def bd_matrix(bd: pd.DataFrame, metric: str = "psnr_rgb") -> str:
    """The averaged BD-rates as a table: one row per tested curve, one column per anchor."""
    avg = bd[bd["video"] == "average"]
    if avg.empty:
        return "(no anchor was run, so there is no BD-rate)"
    anchors = sorted(set(zip(avg["anchor_codec"], avg["anchor_setting"])), key=curve_order)
    # E-NeRV first (the question the benchmark asks), then the anchors against each other.
    tests = sorted(set(zip(avg["test_codec"], avg["test_setting"])),
                   key=lambda k: (k[0] != "enerv", k[1] == ENVELOPE, curve_order(k)))
    rows = []
    for test in tests:
        row = [curve_label(*test)]
        for anchor in anchors:
            cell = avg[(avg["test_codec"] == test[0]) & (avg["test_setting"] == test[1])
                       & (avg["anchor_codec"] == anchor[0]) & (avg["anchor_setting"] == anchor[1])]
            if cell.empty:
                row.append("-")
                continue
            c = cell.iloc[0]
            rate, gain = c[f"bd_rate_{metric}"], c[gain_column(metric)]
            text = f"{fmt(rate, '+.1f')} % / {fmt(gain, '+.2f')}" + (" VMAF" if metric == "vmaf" else " dB")
            shaky = [c["psnr_overlap"], c["rate_overlap"]]
            if not (np.isfinite(rate) and np.isfinite(gain)) or any(not v >= 0.5 for v in shaky):
                text += " *"
            row.append(text)
        rows.append(row)
    header = ["tested \\ anchor"] + [curve_label(*a) for a in anchors]
    return markdown_table(header, rows, ["---"] + ["---:"] * len(anchors))


def curve_summary(results: pd.DataFrame) -> str:
    rows = []
    for codec, setting in curves(results):
        if setting == ENVELOPE:
            continue
        c = curve_rows(results, codec, setting)
        best = c.loc[c["psnr_rgb"].idxmax()]
        rows.append([curve_label(codec, setting), str(len(c)), f"{c['bpp'].min():.4f} - {c['bpp'].max():.4f}",
                     f"{c['psnr_rgb'].min():.2f} - {c['psnr_rgb'].max():.2f}",
                     f"{best['psnr_rgb']:.2f} dB at {best['bpp']:.4f} bpp ({best['point']})",
                     f"{c['encode_seconds'].sum():.1f}", f"{c['decode_seconds'].sum():.1f}"])
    return markdown_table(["curve", "points", "bpp", "PSNR-RGB (dB)", "best point", "encode s (sum)",
                           "decode s (sum)"], rows, ["---", "---:", "---:", "---:", "---", "---:", "---:"])


def flag_column(series: pd.Series) -> pd.Series:
    """A boolean column as read back from CSV (True/False/empty) or held in memory."""
    return series.map(lambda v: v is True or str(v).strip().lower() == "true")


def enerv_points_table(results: pd.DataFrame) -> str:
    e = results[results["codec"] == "enerv"]
    if e.empty:
        return "(E-NeRV was not run)"
    resumed, reused = flag_column(e["resumed"]), flag_column(e["fit_reused"])
    rows = []
    for _, p in e.sort_values(["video", "setting", "bpp"]).iterrows():
        rd = p["rd_epochs"] if "rd_epochs" in p and pd.notna(p["rd_epochs"]) else 0  # results of earlier versions
        epochs = f"{int(p['epochs'])} + {int(p['prune_epochs'])} + {int(rd)} + {int(p['qat_epochs'])}"
        rows.append([p["video"], p["setting"], p["point"], epochs, f"{int(p['parameters']):,}", f"{int(p['bytes']):,}",
                     f"{p['bpp']:.4f}", f"{p['psnr_rgb']:.2f}", f"{p['psnr_yuv']:.2f}", fmt(p["ms_ssim"], ".4f"),
                     fmt(p["fit_seconds"], ".1f") + (" (shared)" if reused[p.name] else ""),
                     fmt(p["own_encode_seconds"], ".1f"),
                     f"{p['encode_seconds']:.1f}" + (" (resumed)" if resumed[p.name] else ""),
                     f"{p['decode_seconds']:.2f}", p["device"]])
    table = markdown_table(["video", "preset", "point", "epochs (fit + prune + RD + rounding)", "parameters",
                            "bytes", "bpp", "PSNR-RGB", "PSNR-YUV", "MS-SSIM", "fit s", "own s", "encode s",
                            "decode s", "device"], rows,
                           ["---", "---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:",
                            "---:", "---:", "---:", "---"])
    if resumed.any():
        table += ("\n\n(resumed): the point was interrupted and continued from its checkpoint; its encode and fit "
                  "times cover only the part after the resume.")
    return table


def shared_fits_table(results: pd.DataFrame) -> str:
    """One row per fit: the points that share it, its time (measured once) and the points' own times."""
    e = results[results["codec"] == "enerv"]
    if e.empty or e["fit_key"].isna().all():
        return "(no E-NeRV fit)"
    rows = []
    for (video, setting, key), group in e.groupby(["video", "setting", "fit_key"], sort=True):
        fitted_here = group[~flag_column(group["fit_reused"])]
        rows.append([video, setting, str(key), ", ".join(group.sort_values("bpp")["point"]), str(len(group)),
                     f"{group['fit_seconds'].iloc[0]:.1f}", f"{group['own_encode_seconds'].sum():.1f}",
                     f"{group['encode_seconds'].sum():.1f}",
                     f"{group['fit_seconds'].iloc[0] + group['own_encode_seconds'].sum():.1f}",
                     "yes" if len(fitted_here) else "no (an earlier run's fit)"])
    return markdown_table(["video", "preset", "fit", "points", "n", "fit s (once)", "own s (sum)",
                           "encode s (sum, fit counted per point)", "work s (fit once + own)",
                           "fitted by a point of this table"], rows,
                          ["---", "---", "---", "---", "---:", "---:", "---:", "---:", "---:", "---"])


def anchor_flags(results: pd.DataFrame) -> str:
    """Each anchor setting's exact ffmpeg command, its rate value replaced by {CRF} or {QP} and paths shortened."""
    lines = []
    anchors = results[results["codec"].isin(ANCHOR_CODECS)]
    groups = sorted(anchors.groupby(["codec", "setting"]), key=lambda item: curve_order(item[0]))
    for (codec, setting), group in groups:
        spec = ANCHORS[codec]
        first = group.iloc[0]
        words = str(first["command"]).split(" ")
        words[0] = "ffmpeg"
        for i, w in enumerate(words[:-1]):
            if w == f"-{spec.knob}":
                words[i + 1] = "{" + spec.knob.upper() + "}"
        words = [f"OUT{spec.extension}" if w.endswith(spec.extension) else w for w in words]
        values = ", ".join(fmt(v, "g") for v in sorted(set(group["knob_value"].astype(float))))
        knob = f"{spec.knob.upper()} {values}"
        lines.append(f"- **{curve_label(codec, setting)}** ({knob}, {first['encoder_version']}):\n"
                     f"  `{' '.join(words)}`")
    return "\n".join(lines) if lines else "(no anchor was run)"


def reference_curves(results: pd.DataFrame) -> list[tuple[str, str]]:
    """Per anchor codec, the curve the summary compares with: its first --quick preset in 4:2:0 when
    the results have it, else its first 4:2:0 curve, else its first curve."""
    chosen = []
    for codec in ANCHOR_CODECS:
        settings = sorted(set(results.loc[results["codec"] == codec, "setting"]))
        if not settings:
            continue
        spec = ANCHORS[codec]
        preferred = f"{spec.setting_token(spec.default_presets['quick'][0])}-{spec.chroma['yuv420p']}"
        four_two_zero = [s for s in settings if s.split("-")[1:] == [spec.chroma["yuv420p"]]]
        chosen.append((codec, preferred if preferred in settings else (four_two_zero or settings)[0]))
    return chosen


def summary_table(results: pd.DataFrame, bd: pd.DataFrame, metric: str = "psnr_rgb") -> str:
    """One row per curve: its average BD-rate against each anchor codec's reference curve, and its
    encode and decode seconds per point (means over its points on every video)."""
    avg = bd[bd["video"] == "average"]
    references = reference_curves(results)
    rows = []
    for codec, setting in curves(results):
        c = curve_rows(results, codec, setting)
        row = [curve_label(codec, setting)]
        for anchor in references:
            cell = avg[(avg["test_codec"] == codec) & (avg["test_setting"] == setting)
                       & (avg["anchor_codec"] == anchor[0]) & (avg["anchor_setting"] == anchor[1])]
            if (codec, setting) == anchor:
                row.append("(reference)")
            elif cell.empty:
                row.append("-")
            else:
                rate = cell.iloc[0][f"bd_rate_{metric}"]
                shaky = not (cell.iloc[0]["psnr_overlap"] >= 0.5 and np.isfinite(rate))
                row.append(f"{fmt(rate, '+.1f')} %" + (" *" if shaky else ""))
        row += [f"{c['encode_seconds'].mean():.2f}", f"{c['decode_seconds'].mean():.2f}", str(len(c))]
        rows.append(row)
    header = (["curve"] + [f"vs {curve_label(*a)}" for a in references]
              + ["encode s / point", "decode s / point", "points (all clips)"])
    return markdown_table(header, rows, ["---"] + ["---:"] * (len(header) - 1))


def timing_table(results: pd.DataFrame, wall: dict[str, float] | None, measured: set[str] = frozenset()) -> str:
    """Time per codec: sums over points (from whichever run measured them) and, when the run's
    summary is known, this run's wall time."""
    rows = []
    for codec in dict.fromkeys(results["codec"]):
        c = results[results["codec"] == codec]
        row = [codec, str(len(c)), f"{c['encode_seconds'].sum():.1f}", f"{c['own_encode_seconds'].sum():.1f}",
               f"{c['decode_seconds'].sum():.1f}"]
        if wall is not None:
            if codec in wall:
                row.append(f"{wall[codec]:.1f}")
            else:
                row.append("see the concurrent row" if codec in measured else "0 (all cached)")
        rows.append(row)
    header = ["codec", "points", "encode s (sum over points)", "own encode s (sum)", "decode s (sum)"]
    if wall is None:
        return markdown_table(header, rows, ["---", "---:", "---:", "---:", "---:"])
    for name, seconds in wall.items():
        if name not in set(results["codec"]):
            rows.append([name, "", "", "", "", f"{seconds:.1f}"])
    return markdown_table(header + ["wall s in this run (encode + decode + metrics)"], rows,
                          ["---", "---:", "---:", "---:", "---:", "---:"])
