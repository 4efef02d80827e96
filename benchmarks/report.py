"""BD-rate, figures and the markdown report of the rate-distortion benchmark.

Everything here works from the table of measured points (``results.csv``), so a report can
be rebuilt from a finished benchmark without encoding anything. BD-rate and BD-PSNR come
from the ``bjontegaard`` package; this module only chooses the points that enter them
(each curve's Pareto front) and says how far two curves overlap.
"""

from __future__ import annotations

import io
import math
import os
import platform
import sys
import textwrap
import warnings
from collections.abc import Iterable
from pathlib import Path

import bjontegaard
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from pipeline.files import write_atomically

ANCHOR_CODECS = ("x264", "x265")
ENVELOPE = "envelope"  # the setting name of the E-NeRV curve made of all its settings' points
METRICS = {"psnr_rgb": "PSNR-RGB", "psnr_yuv": "PSNR-YUV"}
BD_METHODS = ("akima", "pchip")

# --- BD-rate ----------------------------------------------------------------------------------


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


def bd_table(results: pd.DataFrame, method: str = "akima", include_self: bool = False) -> pd.DataFrame:
    """BD-rate/BD-PSNR of every curve against every anchor curve, per video and averaged.

    One row per (video, test curve, anchor curve); the rows with ``video == "average"`` hold
    the mean over the videos where the value is defined (``videos`` says over how many).
    """
    columns = ["video", "test_codec", "test_setting", "anchor_codec", "anchor_setting", "method"]
    for metric in METRICS:
        columns += [f"bd_rate_{metric}", f"bd_psnr_{metric}"]
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
                for metric in METRICS:
                    m = bd_metrics(a["bpp"], a[metric], t["bpp"], t[metric], method)
                    row[f"bd_rate_{metric}"], row[f"bd_psnr_{metric}"] = m["bd_rate"], m["bd_psnr"]
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
        for metric in METRICS:
            for kind in ("bd_rate", "bd_psnr"):
                values = group[f"{kind}_{metric}"].astype(float)
                finite = values[np.isfinite(values)]
                row[f"{kind}_{metric}"] = float(finite.mean()) if len(finite) else math.nan
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


# --- labels and styles --------------------------------------------------------------------------


def curve_label(codec: str, setting: str) -> str:
    """'x264 medium 4:2:0 low-delay', 'E-NeRV enerv-cpu-s'..."""
    if codec == "enerv":
        return "E-NeRV, all settings (Pareto envelope)" if setting == ENVELOPE else f"E-NeRV {setting}"
    parts = setting.split("-")
    words = [codec]
    for part in parts:
        words.append({"yuv420p": "4:2:0", "yuv444p": "4:4:4", "lowdelay": "low-delay"}.get(part, part))
    return " ".join(words)


_CODEC_COLOURS = {"x264": ("#1f77b4", "#6baed6", "#08519c"), "x265": ("#2ca02c", "#74c476", "#006d2c")}
_ENERV_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")


def _style(codec: str, setting: str, enerv_index: int) -> dict:
    if codec == "enerv":
        return {"color": _ENERV_COLOURS[enerv_index % len(_ENERV_COLOURS)], "marker": "D", "linestyle": "-",
                "linewidth": 2.0, "markersize": 5}
    palette = _CODEC_COLOURS.get(codec, ("#7f7f7f",) * 3)
    colour = palette[2] if "veryslow" in setting else palette[1] if "lowdelay" in setting else palette[0]
    return {"color": colour, "marker": "s" if "veryslow" in setting else "^" if "lowdelay" in setting else "o",
            "linestyle": "--" if "yuv444p" in setting else "-", "linewidth": 1.2, "markersize": 4}


# --- figures ----------------------------------------------------------------------------------


def _save(fig: Figure, path: Path, fmt: str) -> None:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=150, metadata={"Date": None} if fmt == "svg" else None)
    write_atomically(path, buffer.getvalue())


def average_points(results: pd.DataFrame) -> pd.DataFrame:
    """Mean bpp and PSNRs of each (codec, setting, point) measured on every video."""
    n = results["video"].nunique()
    grouped = results.groupby(["codec", "setting", "point"], sort=False)
    means = grouped[["bpp", "psnr_rgb", "psnr_yuv"]].mean()
    counts = grouped["video"].nunique()
    means = means[counts == n].reset_index()
    means["video"] = "average"
    return means


def _panels(results: pd.DataFrame) -> list[tuple[str, pd.DataFrame]]:
    panels = []
    for video in dict.fromkeys(results["video"]):
        rows = results[results["video"] == video]
        first = rows.iloc[0]
        title = f"{video}\n{int(first['frames'])} frames, {int(first['width'])}x{int(first['height'])}"
        panels.append((title, rows))
    if len(panels) > 1:
        panels.append((f"average over {len(panels)} videos\n(points measured on every video)",
                       average_points(results)))
    return panels


def _tick(value: float, _pos=None) -> str:
    return f"{value:g}"


def _minor_tick(value: float, _pos=None) -> str:
    """Labels 2 and 5 times a power of ten, so a narrow log axis still has numbers."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value) + 1e-9)
    return f"{value:g}" if round(mantissa, 6) in (2.0, 5.0) else ""


def plot_rd(results: pd.DataFrame, png: Path, svg: Path, caption: str) -> None:
    """PSNR-RGB against bpp, one panel per video (plus the average), one curve per codec and setting."""
    panels = _panels(results)
    cols = min(len(panels), 2)
    rows = math.ceil(len(panels) / cols)
    wrapped = "\n".join(textwrap.wrap(caption, width=int(105 * cols)))
    caption_lines = wrapped.count("\n") + 1
    legend_guess = math.ceil(len(curves(results)) / max(1, 2 * cols + 1))
    fig = Figure(figsize=(7.5 * cols, 5.2 * rows + 0.17 * caption_lines + 0.2 * legend_guess + 0.6))
    height = fig.get_figheight()
    keys = [k for k in curves(results) if k[1] != ENVELOPE]
    enerv_index = {k: i for i, k in enumerate(k for k in keys if k[0] == "enerv")}
    handles = {}
    for i, (title, rows_df) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for codec, setting in keys:
            c = rows_df[(rows_df["codec"] == codec) & (rows_df["setting"] == setting)].sort_values("bpp")
            if c.empty:
                continue
            (line,) = ax.plot(c["bpp"], c["psnr_rgb"], label=curve_label(codec, setting),
                              **_style(codec, setting, enerv_index.get((codec, setting), 0)))
            handles.setdefault(curve_label(codec, setting), line)
            if codec == "enerv" and "point" in c:
                for _, p in c.iterrows():
                    ax.annotate(str(p["point"]), (p["bpp"], p["psnr_rgb"]), textcoords="offset points",
                                xytext=(4, -9), fontsize=6.5, color=line.get_color())
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_tick))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_tick))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("rate (bits per pixel, whole file; log scale)")
        ax.set_ylabel("PSNR, 8-bit RGB (dB)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    ncol = max(1, min(2 * cols + 1, len(handles)))
    fig.legend(list(handles.values()), list(handles.keys()), loc="upper center", ncol=ncol, fontsize=8,
               frameon=False)
    legend_rows = math.ceil(len(handles) / ncol)
    top = 1 - (0.15 + 0.2 * legend_rows + 0.5) / height  # legend, then the panels' two-line titles
    bottom = (0.75 + 0.16 * caption_lines) / height
    fig.subplots_adjust(left=0.08 / cols * 2 * 0.5 + 0.04, right=0.98, top=top, bottom=bottom, hspace=0.45,
                        wspace=0.25)
    fig.text(0.01, 0.01, wrapped, fontsize=7.5, va="bottom", ha="left")
    _save(fig, png, "png")
    _save(fig, svg, "svg")


def plot_time_to_quality(history: pd.DataFrame, results: pd.DataFrame, png: Path) -> None:
    """PSNR against fitting time for the E-NeRV points: the training estimate while fitting,
    and the measured PSNR of the decoded file at the end of the whole encode."""
    videos = list(dict.fromkeys(history["video"]))
    cols = min(len(videos), 2)
    rows = math.ceil(len(videos) / cols)
    caption = ("Lines: PSNR estimated during fitting (mean over each epoch's batches of float outputs, "
               "weights changing within the epoch; the learning-rate schedule is set for the run's full length, "
               "so a shorter run would not stop on this curve). Markers: PSNR of the frames decoded from the "
               ".bin file, at the end of the whole encode (fit + prune + quantize + entropy coding).")
    wrapped = "\n".join(textwrap.wrap(caption, width=int(100 * cols)))
    fig = Figure(figsize=(7.5 * cols, 4.8 * rows + 0.8))
    enerv = results[results["codec"] == "enerv"]
    for i, video in enumerate(videos):
        ax = fig.add_subplot(rows, cols, i + 1)
        h = history[history["video"] == video]
        for j, ((setting, point), curve) in enumerate(h.groupby(["setting", "point"], sort=False)):
            colour = _ENERV_COLOURS[j % len(_ENERV_COLOURS)]
            label = f"{setting} {point}"
            ax.plot(curve["seconds"], curve["psnr"], color=colour, linewidth=1.3, label=label + " (fit, estimate)")
            final = enerv[(enerv["video"] == video) & (enerv["setting"] == setting) & (enerv["point"] == point)]
            if not final.empty:
                f = final.iloc[0]
                ax.plot([f["encode_seconds"]], [f["psnr_rgb"]], marker="*", markersize=11, color=colour,
                        linestyle="none", label=label + " (decoded file)")
        ax.set_xlabel("time (s): since the fit started (lines), whole encode (stars)")
        ax.set_ylabel("PSNR, RGB (dB)")
        ax.set_title(video, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.subplots_adjust(left=0.09, right=0.98, top=0.93, bottom=(0.55 + 0.15 * (wrapped.count("\n") + 1))
                        / fig.get_figheight(), hspace=0.4, wspace=0.25)
    fig.text(0.01, 0.01, wrapped, fontsize=7.5, va="bottom", ha="left")
    _save(fig, png, "png")


# --- machine ----------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str) -> dict[str, str]:
    """Platform, CPU, library and encoder versions; "unknown" where they cannot be found."""
    import torch

    from benchmarks.anchors import encoder_version
    from pipeline.video_io import ffmpeg_binary, ffmpeg_version

    def version(module: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(module)
        except Exception:  # noqa: BLE001 - a missing version is reported as such
            return "unknown"

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    info = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu count": f"{os.cpu_count()} (usable by this process: {usable})",
        "python": platform.python_version(),
        "torch": f"{torch.__version__} ({torch.get_num_threads()} threads)",
        "E-NeRV device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["GPU"] = torch.cuda.get_device_name()
    try:
        info["ffmpeg"] = f"{ffmpeg_version()} ({ffmpeg_binary()})"
    except Exception:  # noqa: BLE001
        info["ffmpeg"] = "unknown"
    for name, encoder in (("x264 (libx264)", "libx264"), ("x265 (libx265)", "libx265")):
        try:
            info[name] = encoder_version(encoder)
        except Exception:  # noqa: BLE001
            info[name] = "unknown"
    for module in ("numpy", "pandas", "matplotlib", "bjontegaard", "ffmpeg-python", "pytorch-msssim"):
        info[module] = version(module)
    return info


# --- markdown ---------------------------------------------------------------------------------


def fmt(value, spec: str = ".2f", missing: str = "n/a") -> str:
    try:
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
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
    anchors = sorted(set(zip(avg["anchor_codec"], avg["anchor_setting"])))
    # E-NeRV first (the question the benchmark asks), then the anchors against each other.
    tests = sorted(set(zip(avg["test_codec"], avg["test_setting"])),
                   key=lambda k: (k[0] != "enerv", k[1] == ENVELOPE, k))
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
            rate, gain = c[f"bd_rate_{metric}"], c[f"bd_psnr_{metric}"]
            text = f"{fmt(rate, '+.1f')} % / {fmt(gain, '+.2f')} dB"
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


def enerv_points_table(results: pd.DataFrame) -> str:
    e = results[results["codec"] == "enerv"]
    if e.empty:
        return "(E-NeRV was not run)"
    resumed = e["resumed"].eq(True) if "resumed" in e else pd.Series(False, index=e.index)
    rows = []
    for _, p in e.sort_values(["video", "setting", "bpp"]).iterrows():
        epochs = f"{int(p['epochs'])} + {int(p['prune_epochs'])} + {int(p['qat_epochs'])}"
        rows.append([p["video"], p["setting"], f"{int(p['bits'])}", f"{p['prune_ratio']:.0%}", epochs,
                     f"{int(p['parameters']):,}", f"{int(p['bytes']):,}", f"{p['bpp']:.4f}", f"{p['psnr_rgb']:.2f}",
                     f"{p['psnr_yuv']:.2f}", fmt(p["ms_ssim"], ".4f"), f"{p['fit_seconds']:.0f}",
                     f"{p['encode_seconds']:.0f}" + (" (resumed)" if resumed[p.name] else ""),
                     f"{p['decode_seconds']:.2f}", p["device"]])
    table = markdown_table(["video", "preset", "bits", "pruned", "epochs (fit + prune + QAT)", "parameters", "bytes",
                           "bpp", "PSNR-RGB", "PSNR-YUV", "MS-SSIM", "fit s", "encode s", "decode s", "device"], rows,
                          ["---", "---", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:", "---:",
                           "---:", "---:", "---:", "---"])
    if resumed.any():
        table += ("\n\n(resumed): the point was interrupted and continued from its checkpoint; its encode and fit "
                  "times cover only the part after the resume.")
    return table


def anchor_flags(results: pd.DataFrame) -> str:
    """Each anchor setting's exact ffmpeg command, its CRF replaced by {CRF} and paths shortened."""
    lines = []
    anchors = results[results["codec"].isin(ANCHOR_CODECS)]
    for (codec, setting), group in anchors.groupby(["codec", "setting"], sort=True):
        first = group.iloc[0]
        words = str(first["command"]).split(" ")
        words[0] = "ffmpeg"
        for i, w in enumerate(words[:-1]):
            if w == "-crf":
                words[i + 1] = "{CRF}"
        words = ["OUT.mp4" if w.endswith(".mp4") else w for w in words]
        crfs = ", ".join(fmt(v, "g") for v in sorted(group["knob_value"].astype(float)))
        lines.append(f"- **{curve_label(codec, setting)}** (CRF {crfs}):\n  `{' '.join(words)}`")
    return "\n".join(lines) if lines else "(no anchor was run)"


def timing_table(results: pd.DataFrame, wall: dict[str, float], measured: Iterable[str] = ()) -> str:
    """Time per codec: sums over points (from whichever run measured them) and this run's wall time."""
    measured = set(measured)
    rows = []
    for codec in dict.fromkeys(results["codec"]):
        c = results[results["codec"] == codec]
        if codec in wall:
            spent = f"{wall[codec]:.1f}"
        elif codec in measured:
            spent = "see the concurrent row"
        else:
            spent = "0 (all cached)"
        rows.append([codec, str(len(c)), f"{c['encode_seconds'].sum():.1f}", f"{c['decode_seconds'].sum():.1f}", spent])
    for name, seconds in wall.items():
        if name not in set(results["codec"]):
            rows.append([name, "", "", "", f"{seconds:.1f}"])
    return markdown_table(["codec", "points", "encode s (sum over points)", "decode s (sum)",
                           "wall s in this run (encode + decode + metrics)"], rows,
                          ["---", "---:", "---:", "---:", "---:"])


def write_report(path: Path, results: pd.DataFrame, bd: pd.DataFrame, info: dict) -> None:
    """report.md: figure, BD-rate tables, points, anchors' flags, colour handling, machine, timings."""
    machine = "\n".join(f"- {k}: {v}" for k, v in info["machine"].items())
    if info.get("time_to_quality", False):
        ttq = ("![PSNR against encoding time](time_to_quality.png)\n\n"
               "The lines are the training-time estimate that the fit records after each epoch (float outputs, "
               "averaged over the epoch while the weights change), not a measurement of a file; the stars are "
               "the PSNR of the decoded files at the end of each whole encode. The data are in "
               "`time_to_quality.csv`.")
    else:
        ttq = "(E-NeRV was not run, so there is no fitting curve.)"
    avg_note = ("Average rows are the mean of the per-video values. " if results["video"].nunique() > 1
                else "One video: its values are the averages, and the figure has no separate average panel. ")
    text = f"""# Rate-distortion benchmark

Command: `{info['command']}`

Run {info['started']} - {info['finished']}, wall time {info['wall_seconds']:.0f} s on this machine
({info['measured']} points measured in this run, {info['cached']} taken from the cache of an earlier run in this folder;
cached points keep the timings of the run that measured them).

![PSNR against bits per pixel](rd.png)

[rd.svg](rd.svg) (vector). {info['caption']}

## BD-rate against the anchors

Average over videos; per-video values are in `bd_rate.csv`. Each cell: BD-rate / BD-PSNR of the
row's curve against the column's anchor. Negative BD-rate = fewer bits than the anchor for the same
quality; positive BD-PSNR = more quality at the same rate. Computed with the `bjontegaard` package
({info['bd_method']} interpolation, log10 rate), on each curve's Pareto front (points beaten by a cheaper
and better point of the same curve are left out). BD-rate is averaged over the PSNR range both curves
cover, BD-PSNR over the rate range both cover (no extrapolation); * marks a cell where that common range
covers under half of the narrower curve's range, or a value is undefined because the curves do not
overlap at all (see the `note` and `*_overlap` columns of the CSV).
{avg_note}

PSNR-RGB:

{bd_matrix(bd, 'psnr_rgb')}

PSNR-YUV ((6 Y + U + V) / 8, BT.709):

{bd_matrix(bd, 'psnr_yuv')}

## Curves

{curve_summary(results)}

## E-NeRV points

Each point is a complete `enerv-compress` run (`compress_video`) writing a real `.bin`; its rate is the
file's size on disk, and its quality is measured on the frames decoded by `decode_frames` from the
file's bytes. {info['budget_note']}

{enerv_points_table(results)}

## Time to quality

{ttq}

## Anchors

{info['anchor_note']}

{anchor_flags(results)}

## Colour handling and rate accounting

- Every codec is measured on 8-bit RGB frames decoded from its own output file, against the RGB source
  frames (the input decoded once to RGB24 by ffmpeg{info['source_note']}). PSNR-RGB is the mean over frames
  of the per-frame PSNR over the three channels; PSNR-YUV converts both RGB frame sets to BT.709
  limited-range Y'CbCr at full chroma resolution and takes (6 PSNR-Y + PSNR-U + PSNR-V) / 8; MS-SSIM is on
  RGB (n/a below 161 pixels a side).
- The anchors convert RGB to Y'CbCr explicitly with ffmpeg's scale filter (BT.709 matrix, limited "tv"
  range, stream tagged bt709/tv) and back the same way when decoding; yuv420p halves the chroma
  resolution both ways, yuv444p keeps it. E-NeRV fits and renders RGB directly.
- The rate is the size of the whole file for every codec: the `.mp4` (container included) for x264 and
  x265, the `.bin` (header, side information, masks, payload and checksum) for E-NeRV. bpp =
  8 x bytes / (width x height x frames); kbps at the source frame rate. The encoded files are kept
  under `files/`.

## Time

{timing_table(results, info['wall_by_codec'], info['measured_codecs'])}

Encode time of an anchor point: the ffmpeg process from raw RGB on its input pipe to the finished file
(colour conversion included); decode: ffmpeg from the file to raw RGB. Encode time of an E-NeRV point:
the whole `compress_video` call (reading the input, fitting, pruning, quantization, entropy coding and
its own check of the decoded frames); decode: `decode_frames` from the file's bytes (entropy decoding,
rebuilding the network, rendering every frame on {info['machine'].get('E-NeRV device', 'the device')}).
{info['concurrency_note']}

## Machine

{machine}
"""
    write_atomically(path, text.encode())


def _main(argv: list[str]) -> int:  # pragma: no cover - a convenience for rebuilding tables by hand
    results = pd.read_csv(argv[0])
    print(bd_table(results).to_string())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
