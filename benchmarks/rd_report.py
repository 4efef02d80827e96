"""Turns measured rate-distortion points into CSV tables, figures and a markdown report."""

from __future__ import annotations

import io
import os
import platform
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import bjontegaard  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from benchmarks.anchors import encoder_version  # noqa: E402
from pipeline.files import write_atomically  # noqa: E402
from pipeline.video_io import ffmpeg_binary, ffmpeg_version  # noqa: E402

ANCHORS = ("x264", "x265")
BD_METHOD = "pchip"
COLOURS = {"enerv": "tab:red", "x264": "tab:blue", "x265": "tab:green"}


def pareto_front(rates: np.ndarray, psnrs: np.ndarray) -> np.ndarray:
    """Indices of the points no other point beats on both rate and quality, by rate."""
    order = np.argsort(rates, kind="stable")
    keep, best = [], -np.inf
    for i in order:
        if psnrs[i] > best:
            keep.append(i)
            best = psnrs[i]
    return np.array(keep, dtype=int)


def bd_metrics(anchor_rate, anchor_psnr, test_rate, test_psnr) -> tuple[float, float, str]:
    """BD-rate (%) and BD-PSNR (dB) of a test curve against an anchor (PCHIP, on the
    Pareto fronts); NaN with a reason where the curves do not overlap."""
    a = pareto_front(np.asarray(anchor_rate, float), np.asarray(anchor_psnr, float))
    t = pareto_front(np.asarray(test_rate, float), np.asarray(test_psnr, float))
    if len(a) < 2 or len(t) < 2:
        return np.nan, np.nan, "fewer than two points on a Pareto front"
    args = (np.asarray(anchor_rate, float)[a], np.asarray(anchor_psnr, float)[a],
            np.asarray(test_rate, float)[t], np.asarray(test_psnr, float)[t])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rate = bjontegaard.bd_rate(*args, method=BD_METHOD, require_matching_points=False)
        dpsnr = bjontegaard.bd_psnr(*args, method=BD_METHOD, require_matching_points=False)
    note = "" if np.isfinite(rate) and np.isfinite(dpsnr) else "the curves do not overlap enough"
    return float(rate), float(dpsnr), note


def bd_table(results: pd.DataFrame) -> pd.DataFrame:
    """BD-rate of every (codec, setting) against every anchor setting, per video and averaged."""
    rows = []
    curves = results.groupby(["video", "codec", "setting"])
    for video in sorted(results["video"].unique()):
        keys = [k for k in curves.groups if k[0] == video]
        for _, a_codec, a_setting in keys:
            if a_codec not in ANCHORS:
                continue
            anchor = curves.get_group((video, a_codec, a_setting))
            for _, t_codec, t_setting in keys:
                test = curves.get_group((video, t_codec, t_setting))
                rate, dpsnr, note = bd_metrics(anchor["bpp"], anchor["psnr_rgb"], test["bpp"], test["psnr_rgb"])
                rows.append({"video": video, "codec": t_codec, "setting": t_setting, "anchor": a_codec,
                             "anchor_setting": a_setting, "bd_rate_percent": rate, "bd_psnr_db": dpsnr,
                             "note": note})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    mean = (table.groupby(["codec", "setting", "anchor", "anchor_setting"], as_index=False)
            .agg(bd_rate_percent=("bd_rate_percent", "mean"), bd_psnr_db=("bd_psnr_db", "mean")))
    mean.insert(0, "video", "(average)")
    mean["note"] = ""
    return pd.concat([table, mean], ignore_index=True)


def _curve_label(codec: str, setting: str) -> str:
    return f"{codec} {setting}"


def plot_rd(results: pd.DataFrame, caption: str, path_png: Path, path_svg: Path) -> None:
    videos = sorted(results["video"].unique())
    panels = videos + ["average"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 5.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        if panel == "average":
            data = (results.groupby(["codec", "setting", "point"], as_index=False)
                    .agg(bpp=("bpp", "mean"), psnr_rgb=("psnr_rgb", "mean")))
            ax.set_title(f"average over {len(videos)} video(s)")
        else:
            data = results[results["video"] == panel]
            ax.set_title(panel)
        for (codec, setting), curve in data.groupby(["codec", "setting"]):
            curve = curve.sort_values("bpp")
            style = "-" if "yuv444p" in setting or codec == "enerv" else "--"
            marker = "o" if codec == "enerv" else ("s" if "lowdelay" in setting else ".")
            ax.plot(curve["bpp"], curve["psnr_rgb"], style, marker=marker, color=COLOURS.get(codec),
                    alpha=1.0 if "veryslow" not in setting else 0.6, label=_curve_label(codec, setting))
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_xlabel("rate (bits per pixel, whole file)")
        ax.set_ylabel("PSNR (dB, 8-bit RGB)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.text(0.01, 0.01, caption, fontsize=7, wrap=True)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    for path, fmt in ((path_png, "png"), (path_svg, "svg")):
        buf = io.BytesIO()
        fig.savefig(buf, format=fmt, dpi=120)
        write_atomically(path, buf.getvalue())
    plt.close(fig)


def plot_time_to_quality(histories: dict, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for (video, setting), history in sorted(histories.items()):
        ax.plot([h["seconds"] for h in history], [h["psnr"] for h in history], label=f"{video}: {setting}")
    ax.set_xlabel("fitting time (s)")
    ax.set_ylabel("training PSNR (dB, float output)")
    ax.set_title("E-NeRV: quality against fitting time")
    ax.grid(True, alpha=0.3)
    if histories:
        ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=120)
    write_atomically(path, buf.getvalue())
    plt.close(fig)


def _markdown_table(frame: pd.DataFrame, floats: str = "{:.2f}") -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        cells = []
        for c in cols:
            v = row[c]
            cells.append(floats.format(v) if isinstance(v, float) and np.isfinite(v) else
                         ("n/a" if isinstance(v, float) else str(v)))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_reports(out: Path, rows: list[dict], histories: dict, points: list) -> None:
    results = pd.DataFrame(rows)
    front = ["video", "codec", "setting", "preset", "point", "knob", "knob_value", "bytes", "bpp", "kbps",
             "psnr_rgb", "psnr_yuv", "ms_ssim", "encode_seconds", "decode_seconds", "frames", "width",
             "height", "file", "command"]
    results = results[[c for c in front if c in results.columns] + [c for c in results.columns if c not in front]]
    write_atomically(out / "results.csv", results.to_csv(index=False).encode())
    bd = bd_table(results)
    write_atomically(out / "bd_rate.csv", bd.to_csv(index=False).encode())

    caption = ("All codecs measured on 8-bit RGB decoded from their own files against the RGB source; rate = "
               "whole file. Anchors: x264/x265 CRF sweeps, 8-bit, BT.709 limited range, presets and chroma as "
               "labelled (solid: yuv444p, dashed: yuv420p; 'lowdelay' = zerolatency, GOP 12, no B-frames; "
               "otherwise default GOP with B-frames).")
    plot_rd(results, caption, out / "rd.png", out / "rd.svg")
    plot_time_to_quality(histories, out / "time_to_quality.png")

    times = results.groupby("codec", as_index=False).agg(points=("bytes", "size"),
                                                        seconds_spent=("seconds_spent", "sum"),
                                                        decode_seconds=("decode_seconds", "sum"))
    best = results.loc[results.groupby(["video", "codec", "setting"])["psnr_rgb"].idxmax(),
                       ["video", "codec", "setting", "point", "bytes", "bpp", "psnr_rgb", "psnr_yuv"]]
    shown_bd = bd[bd["video"] == "(average)"] if not bd.empty else bd
    machine = (f"{platform.platform()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}, "
               f"torch {torch.__version__}" + (f", GPU {torch.cuda.get_device_name()}"
                                               if torch.cuda.is_available() else ", no GPU"))
    text = f"""# Rate-distortion report

![rate-distortion](rd.png)

{caption}

## BD-rate against the anchors (average over videos; negative = fewer bits than the anchor)

BD metrics use PCHIP interpolation ({bjontegaard.__name__} {bjontegaard.__version__}) on each curve's
Pareto front, rate in bits per pixel, distortion PSNR of 8-bit RGB. "n/a" where the curves do
not overlap enough in PSNR. Per-video values are in `bd_rate.csv`.

{_markdown_table(shown_bd.drop(columns=["video", "note"])) if not shown_bd.empty else "(no anchors)"}

## Best point of each curve

{_markdown_table(best, "{:.4g}")}

## Time

{_markdown_table(times, "{:.1f}")}

`seconds_spent` is the wall time this benchmark spent on each codec's points (encode,
decode, measure). Points of one E-NeRV (preset, epochs) share one fit; each point's
`encode_seconds` in `results.csv` counts that fit in full, as a standalone encode would. Quality against fitting time (training estimate on float
output): ![time to quality](time_to_quality.png)

## How it was measured

- Machine: {machine}.
- ffmpeg: {ffmpeg_version()} ({ffmpeg_binary()}); encoders: x264 {encoder_version('libx264')}, x265 {encoder_version('libx265')}.
- Colour: the neural codec works in RGB. Every codec is measured on 8-bit RGB frames decoded
  from its own output file, against the RGB source. The anchors convert RGB to Y'CbCr and
  back with the BT.709 matrix in limited range, set explicitly on both sides; they run in
  yuv420p (what players use) and in yuv444p (the fair comparison for an RGB codec).
  PSNR-YUV in `results.csv` is (6Y+U+V)/8 over BT.709 conversions of the RGB frames.
- Rate: the size of the whole file for every codec (container included: MP4 for the
  anchors, the `.bin` for E-NeRV); x265 is run with `info=0` so no settings string is coded.
- Exact commands: the `command` column of `results.csv`.
"""
    write_atomically(out / "report.md", text.encode())
