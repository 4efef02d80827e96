"""The benchmark's figures: quality (PSNR, VMAF) against rate, quality at fixed rates against encode
time, and E-NeRV's PSNR against fitting time."""

from __future__ import annotations

import io
import math
import textwrap
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from benchmarks.curves import ENVELOPE, curve_label, curves
from benchmarks.registry import anchor
from pipeline.files import write_atomically

_ENERV_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
_FIT_COLOURS = ("#444444", "#17becf", "#bcbd22", "#7f7f7f")


def curve_styles(keys: list[tuple[str, str]]) -> dict[tuple[str, str], dict]:
    """Line styles of the curves: an anchor's colours and marker come from its registry entry (its
    presets from light = fast to dark = slow), dashed for 4:4:4, triangles for low-delay; E-NeRV
    curves red-orange diamonds."""
    styles = {}
    enerv = [k for k in keys if k[0] == "enerv"]
    for i, key in enumerate(enerv):
        styles[key] = {"color": _ENERV_COLOURS[i % len(_ENERV_COLOURS)], "marker": "D", "linestyle": "-",
                       "linewidth": 2.0, "markersize": 5}
    for codec in dict.fromkeys(k[0] for k in keys if k[0] != "enerv"):
        spec = anchor(codec)
        mine = [k for k in keys if k[0] == codec]
        if spec is None:
            styles.update({k: {"color": "#7f7f7f", "marker": "o", "linestyle": "-", "linewidth": 1.2,
                               "markersize": 4} for k in mine})
            continue
        presets = sorted({spec.preset_of_token(s.split("-")[0]) for _, s in mine},
                         key=lambda p: spec.presets.index(p) if p in spec.presets else 0)
        shade = {p: spec.colours[1] if len(presets) == 1 else spec.colours[round(2 * i / (len(presets) - 1))]
                 for i, p in enumerate(presets)}
        for key in mine:
            preset = spec.preset_of_token(key[1].split("-")[0])
            styles[key] = {"color": shade[preset], "marker": "^" if "lowdelay" in key[1] else spec.marker,
                           "linestyle": "--" if "yuv444p" in key[1] else "-", "linewidth": 1.2, "markersize": 4}
    return styles


def _save(fig: Figure, path: Path, fmt: str) -> None:
    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=150, metadata={"Date": None} if fmt == "svg" else None)
    write_atomically(path, buffer.getvalue())


def average_points(results: pd.DataFrame) -> pd.DataFrame:
    """Mean bpp and PSNRs of each (codec, setting, point) measured on every video."""
    n = results["video"].nunique()
    grouped = results.groupby(["codec", "setting", "point"], sort=False)
    columns = [c for c in ("bpp", "psnr_rgb", "psnr_yuv", "vmaf") if c in results]
    means = grouped[columns].mean()
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


METRIC_AXES = {"psnr_rgb": "PSNR, 8-bit RGB (dB)", "vmaf": "VMAF (vmaf_v0.6.1, BT.709 luma)"}


def plot_rd(results: pd.DataFrame, png: Path, svg: Path | None, caption: str, metric: str = "psnr_rgb") -> None:
    """Quality (PSNR-RGB, or VMAF) against bpp, one panel per video (plus the average), one curve
    per codec and setting."""
    results = results.assign(**{metric: pd.to_numeric(results[metric], errors="coerce")})
    panels = _panels(results)
    cols = min(len(panels), 2)
    rows = math.ceil(len(panels) / cols)
    wrapped = "\n".join(textwrap.wrap(caption, width=int(105 * cols)))
    caption_lines = wrapped.count("\n") + 1
    legend_guess = math.ceil(len(curves(results)) / max(1, 2 * cols + 1))
    fig = Figure(figsize=(7.5 * cols, 5.2 * rows + 0.17 * caption_lines + 0.2 * legend_guess + 0.6))
    height = fig.get_figheight()
    keys = [k for k in curves(results) if k[1] != ENVELOPE]
    styles = curve_styles(keys)
    handles = {}
    for i, (title, rows_df) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, i + 1)
        for codec, setting in keys:
            c = rows_df[(rows_df["codec"] == codec) & (rows_df["setting"] == setting)].sort_values("bpp")
            c = c[c[metric].notna()]
            if c.empty:
                continue
            (line,) = ax.plot(c["bpp"], c[metric], label=curve_label(codec, setting), **styles[(codec, setting)])
            handles.setdefault(curve_label(codec, setting), line)
            if codec == "enerv" and "point" in c:
                for _, p in c.iterrows():
                    ax.annotate(str(p["point"]), (p["bpp"], p[metric]), textcoords="offset points",
                                xytext=(4, -9), fontsize=6.5, color=line.get_color())
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_tick))
        ax.xaxis.set_minor_formatter(FuncFormatter(_minor_tick))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("rate (bits per pixel, whole file; log scale)")
        ax.set_ylabel(METRIC_AXES[metric])
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
    if svg is not None:
        _save(fig, svg, "svg")


def plot_time_to_quality(history: pd.DataFrame, results: pd.DataFrame, png: Path) -> None:
    """PSNR against fitting time for the E-NeRV points: the training estimate while fitting,
    and the measured PSNR of the decoded file at the end of the whole encode."""
    videos = list(dict.fromkeys(history["video"]))
    cols = min(len(videos), 2)
    rows = math.ceil(len(videos) / cols)
    caption = ("Lines: PSNR estimated during fitting (mean over each epoch's batches of float outputs, "
               "weights changing within the epoch; the learning-rate schedule is set for the run's full length, "
               "so a shorter run would not stop on this curve); points that share a fit share its line. Stars: "
               "PSNR of the frames decoded from each point's .bin file, at the end of its whole encode (fit + "
               "prune + quantize + entropy coding, a shared fit counted in full).")
    wrapped = "\n".join(textwrap.wrap(caption, width=int(100 * cols)))
    fig = Figure(figsize=(7.5 * cols, 4.8 * rows + 0.8))
    enerv = results[results["codec"] == "enerv"]
    # One line per fit (older results have no fit key: one line per point).
    by = ["setting", "fit_key"] if "fit_key" in history and history["fit_key"].notna().all() else ["setting", "point"]
    for i, video in enumerate(videos):
        ax = fig.add_subplot(rows, cols, i + 1)
        h = history[history["video"] == video]
        for j, ((setting, _), curve) in enumerate(h.groupby(by, sort=False)):
            points = list(dict.fromkeys(curve["point"]))
            first = curve[curve["point"] == points[0]]
            label = f"{setting} {points[0]}" if len(points) == 1 else f"{setting}, fit shared by {len(points)} points"
            ax.plot(first["seconds"], first["psnr"], color=_FIT_COLOURS[j % len(_FIT_COLOURS)], linewidth=1.3,
                    label=label + " (fit, estimate)")
        finals = enerv[enerv["video"] == video]
        for j, (_, f) in enumerate(finals.iterrows()):
            ax.plot([f["encode_seconds"]], [f["psnr_rgb"]], marker="*", markersize=11, linestyle="none",
                    color=_ENERV_COLOURS[j % len(_ENERV_COLOURS)],
                    label=f"{f['setting']} {f['point']} (decoded file)")
        ax.set_xlabel("time (s): since the fit started (lines), whole encode (stars)")
        ax.set_ylabel("PSNR, RGB (dB)")
        ax.set_title(video, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.subplots_adjust(left=0.09, right=0.98, top=0.93, bottom=(0.55 + 0.15 * (wrapped.count("\n") + 1))
                        / fig.get_figheight(), hspace=0.4, wspace=0.25)
    fig.text(0.01, 0.01, wrapped, fontsize=7.5, va="bottom", ha="left")
    _save(fig, png, "png")


def plot_time_axis(table: pd.DataFrame, png: Path, caption: str) -> None:
    """PSNR-RGB at each target rate against encode seconds per point (log): one panel per rate, one
    marker per curve, the presets (or budgets) of one codec and chroma format joined fast to slow."""
    from benchmarks.time_axis import summary_rows

    shown = summary_rows(table)
    rates = sorted(set(shown["target_bpp"]))
    fig = Figure(figsize=(7.0 * len(rates), 5.6))
    keys = list(dict.fromkeys(zip(shown["codec"], shown["setting"])))
    styles = curve_styles([k for k in keys if k[1] != ENVELOPE])
    handles = {}
    for i, rate in enumerate(rates):
        ax = fig.add_subplot(1, len(rates), i + 1)
        at = shown[(shown["target_bpp"] == rate) & shown["psnr_rgb"].notna() & shown["encode_seconds"].notna()]
        # One line per codec and chroma format (anchors: its presets; E-NeRV: a preset's budgets).
        family = at["codec"] + "|" + at.apply(lambda r: r["setting"] if r["codec"] == "enerv"
                                              else "-".join(r["setting"].split("-")[1:]), axis=1)
        for _, group in at.groupby(family, sort=False):
            group = group.sort_values("encode_seconds")
            first = group.iloc[0]
            style = dict(styles.get((first["codec"], first["setting"]), {"color": "#444444", "marker": "*"}))
            ax.plot(group["encode_seconds"], group["psnr_rgb"], color=style["color"], linewidth=1.0,
                    linestyle=style.get("linestyle", "-"), alpha=0.6)
            for _, point in group.iterrows():
                s = dict(styles.get((point["codec"], point["setting"]), style))
                (marker,) = ax.plot([point["encode_seconds"]], [point["psnr_rgb"]], linestyle="none",
                                    marker=s["marker"], color=s["color"], markersize=7)
                handles.setdefault(point["label"], marker)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(FuncFormatter(_tick))
        ax.set_xlabel("encode time of one point (s, whole clip; log scale)")
        ax.set_ylabel(f"PSNR-RGB at {rate:g} bpp (dB)")
        ax.set_title(f"quality at {rate:g} bpp against encode time", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    ncol = max(1, min(3, len(handles)))
    legend_rows = math.ceil(len(handles) / ncol)
    wrapped = "\n".join(textwrap.wrap(caption, width=int(100 * len(rates))))
    fig.set_figheight(5.6 + 0.2 * legend_rows + 0.15 * (wrapped.count("\n") + 1))
    height = fig.get_figheight()
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center", ncol=ncol, fontsize=7.5,
               frameon=False, bbox_to_anchor=(0.5, (0.2 + 0.15 * (wrapped.count("\n") + 1)) / height))
    fig.subplots_adjust(left=0.07, right=0.98, top=0.93,
                        bottom=(1.0 + 0.2 * legend_rows + 0.15 * (wrapped.count("\n") + 1)) / height, wspace=0.22)
    fig.text(0.01, 0.01, wrapped, fontsize=7.5, va="bottom", ha="left")
    _save(fig, png, "png")


def plot_budget_curve(table: pd.DataFrame, png: Path, caption: str, crossing_seconds: float = math.nan,
                      crossing_label: str = "") -> None:
    """BD-rate (%) of each budget's E-NeRV curve against seconds per point (log), one line per anchor,
    with 0 drawn across and, where known, the budget at which BD-rate reaches 0."""
    fig = Figure(figsize=(7.5, 5.6))
    ax = fig.add_subplot(1, 1, 1)
    keys = list(dict.fromkeys(zip(table["anchor_codec"], table["anchor_setting"])))
    styles = curve_styles(keys)
    for key in keys:
        rows = table[(table["anchor_codec"] == key[0]) & (table["anchor_setting"] == key[1])]
        rows = rows.sort_values("budget_seconds")
        style = styles[key]
        ax.plot(rows["budget_seconds"], rows["bd_rate_psnr_rgb"].astype(float), label=f"vs {curve_label(*key)}",
                color=style["color"], marker=style["marker"], linestyle=style["linestyle"], linewidth=1.5)
    ax.axhline(0.0, color="#444444", linewidth=1.0)
    if math.isfinite(crossing_seconds):
        ax.plot([crossing_seconds], [0.0], marker="o", markersize=9, markerfacecolor="none", color="#d62728",
                linestyle="none", label=crossing_label)
    ax.set_xscale("log")
    ax.set_xticks(sorted(set(table["budget_seconds"].astype(float))))
    ax.xaxis.set_major_formatter(FuncFormatter(_tick))
    ax.xaxis.set_minor_formatter(FuncFormatter(lambda *_: ""))
    ax.set_xlabel("E-NeRV time budget (seconds per point; log scale)")
    ax.set_ylabel("BD-rate on PSNR-RGB (%; below 0: fewer bits than the anchor)")
    ax.set_title("What minutes buy: E-NeRV against the anchors", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7.5)
    wrapped = "\n".join(textwrap.wrap(caption, width=110))
    fig.subplots_adjust(left=0.12, right=0.97, top=0.93, bottom=(0.65 + 0.15 * (wrapped.count("\n") + 1)) / 5.6)
    fig.text(0.01, 0.01, wrapped, fontsize=7, va="bottom", ha="left")
    _save(fig, png, "png")
