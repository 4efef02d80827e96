"""The benchmark's figures: PSNR against rate, and E-NeRV's PSNR against encoding time."""

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
from pipeline.files import write_atomically

_CODEC_COLOURS = {"x264": ("#1f77b4", "#6baed6", "#08519c"), "x265": ("#2ca02c", "#74c476", "#006d2c")}
_ENERV_COLOURS = ("#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
_FIT_COLOURS = ("#444444", "#17becf", "#bcbd22", "#7f7f7f")


def _style(codec: str, setting: str, enerv_index: int) -> dict:
    if codec == "enerv":
        return {"color": _ENERV_COLOURS[enerv_index % len(_ENERV_COLOURS)], "marker": "D", "linestyle": "-",
                "linewidth": 2.0, "markersize": 5}
    palette = _CODEC_COLOURS.get(codec, ("#7f7f7f",) * 3)
    colour = palette[2] if "veryslow" in setting else palette[1] if "lowdelay" in setting else palette[0]
    return {"color": colour, "marker": "s" if "veryslow" in setting else "^" if "lowdelay" in setting else "o",
            "linestyle": "--" if "yuv444p" in setting else "-", "linewidth": 1.2, "markersize": 4}


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
