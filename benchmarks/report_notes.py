"""The notes of an enerv-bench report: what the rows say about the run (captions, versions,
budgets, sources, machines, anchors), as Markdown for :func:`benchmarks.report.report_text`."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd

from benchmarks import tables, time_axis
from benchmarks.registry import ANCHOR_CODECS, ANCHORS


@dataclass(frozen=True)
class RunSummary:
    """The facts of one enerv-bench run that its rows do not hold (``run.json``)."""

    command: str
    started: str
    finished: str
    wall_seconds: float
    measured: int  # points measured in this run
    cached: int  # points taken from the cache of an earlier run
    bd_method: str = "akima"
    wall_by_codec: dict[str, float] = field(default_factory=dict)  # this run's wall time per codec
    measured_codecs: tuple[str, ...] = ()
    skipped: dict[str, str] = field(default_factory=dict)  # anchors of the default set this ffmpeg cannot run

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def read(cls, path: Path) -> RunSummary | None:
        """The summary in ``path``; None when there is none or it cannot be read."""
        try:
            data = json.loads(path.read_text())
            return cls(**{**data, "measured_codecs": tuple(data.get("measured_codecs", ()))})
        except (OSError, ValueError, TypeError):
            return None



# --- what the rows say ------------------------------------------------------------------------


def _distinct(values) -> list:
    return list(dict.fromkeys(v for v in values if isinstance(v, str) and v))


def _anchors(results: pd.DataFrame) -> pd.DataFrame:
    return results[results["codec"].isin(ANCHOR_CODECS)]


def caption(results: pd.DataFrame) -> str:
    parts = []
    anchors = _anchors(results)
    if not anchors.empty:
        described = []
        for codec in ANCHOR_CODECS:
            mine = anchors[anchors["codec"] == codec]
            if mine.empty:
                continue
            spec = ANCHORS[codec]
            versions = " / ".join(_distinct(mine["encoder_version"])) or "?"
            values = ", ".join(tables.fmt(c, "g") for c in sorted(set(mine["knob_value"].astype(float))))
            presets = ", ".join(spec.preset_label(p) for p in _distinct(mine.loc[~tables.flag_column(mine["low_delay"]),
                                                                                    "preset"].astype(str)))
            described.append(f"{spec.title} ({versions}; {presets or '-'}; {spec.knob.upper()} {values})")
        low = tables.flag_column(anchors["low_delay"])
        low_text = ("; 'low-delay' = preset " + ", ".join(_distinct(anchors.loc[low, "preset"].astype(str)))
                    + ", tune zerolatency, GOP 12, no B-frames") if low.any() else ""
        parts.append(f"Anchors through ffmpeg: {'; '.join(described)}; default GOPs{low_text}; solid lines 4:2:0, "
                     "dashed 4:4:4, light to dark = fast to slow preset; RGB <-> Y'CbCr BT.709 limited range, "
                     "explicit; no version or settings SEI written.")
    e = results[results["codec"] == "enerv"]
    if not e.empty:
        low, high = int(e["epochs"].min()), int(e["epochs"].max())
        parts.append(f"E-NeRV: presets {', '.join(_distinct(e['setting']))}, points labelled by quality "
                     f"(q), bit depth (b) and pruned fraction, "
                     f"{low if low == high else f'{low}-{high}'} fitting epochs on "
                     f"{', '.join(_distinct(e['device']))}.")
    parts.append("Rate: whole files (container included for every codec). Quality: 8-bit RGB decoded from each "
                 "codec's own file against the RGB source.")
    return " ".join(parts)


def vmaf_note(results: pd.DataFrame) -> str:
    """Which VMAF the points have, or why they have none."""
    scored = pd.to_numeric(results["vmaf"], errors="coerce").notna()
    models = _distinct(results.loc[scored, "vmaf_model"])
    reasons = _distinct(results.loc[~scored, "vmaf_model"])
    if not scored.any():
        why = "; ".join(reasons) or "these results predate the VMAF column"
        return f"No point has a VMAF score ({why}), so there is no VMAF table or figure."
    text = (f"VMAF: model {' / '.join(models)}, built into libvmaf, run through ffmpeg's `libvmaf` filter on the "
            "decoded frames against the source, both converted to Y' exactly as for PSNR-YUV (BT.709, 8-bit "
            "limited range, rounded to 8 bits; the model reads luma only); the mean over frames.")
    if (~scored).any():
        text += f" {int((~scored).sum())} points have none ({'; '.join(reasons) or 'not measured'})."
    return text


def skipped_note(run: RunSummary | None) -> str:
    if run is None or not run.skipped:
        return ""
    return "Not run: " + "; ".join(f"{name} ({why})" for name, why in run.skipped.items()) + "."


def budget_note(results: pd.DataFrame) -> str:
    e = results[results["codec"] == "enerv"]
    if e.empty:
        return ""
    budgets = sorted(set(pd.to_numeric(e["budget_seconds"]).dropna()) - {0})
    if budgets:
        return (f"Time budget: {', '.join(f'{b:g}' for b in budgets)} s per point for fitting and fine-tuning, "
                "estimated from two timed epochs on a few frames (a fine-tune epoch counted as a fitting epoch); "
                "where the longest point of a curve was estimated over it, every epoch count of the curve was "
                "scaled down by one factor, so that its points keep one fitting length and share one fit "
                "(`epochs_requested` in `results.csv` has the counts before the budget).")
    epochs = ", ".join(str(v) for v in sorted(set(e["epochs"].dropna().astype(int))))
    return f"No time budget: every point ran the epochs it asked for ({epochs} fitting epochs)."


def source_note(results: pd.DataFrame) -> str:
    sources = results.drop_duplicates("video")
    listed = "; ".join(f"{r['video']}: {tables.fmt(r['source_pix_fmt'], 's', 'unknown')}, {r['fps']:g} fps"
                       for _, r in sources.iterrows())
    return ("; a YUV source is converted with ffmpeg's defaults for its tagged colour space, an RGB one is taken "
            f"as it is; sources: {listed}")


def concurrency_note(results: pd.DataFrame) -> str:
    anchors = _anchors(results)
    at_once = pd.to_numeric(anchors["parallel_jobs"]).dropna()
    if at_once.empty or at_once.max() <= 1:
        return "Every point ran alone, one after the other (nothing of this benchmark ran concurrently)."
    e = results[results["codec"] == "enerv"]
    beside = (f", while E-NeRV fitted on the {'GPU' if 'cuda' in set(e['device']) else 'CPU'} in the main process"
              if not e.empty else "")
    return (f"Anchor points ran {int(at_once.max())} at a time in worker processes{beside}: their times are wall "
            "times under that load.")


def machines(results: pd.DataFrame) -> str:
    described = _distinct(results["machine"])
    if not described:
        return "(not recorded in these results)"
    parts = []
    for i, text in enumerate(described):
        info = json.loads(text)
        items = "\n".join(f"- {k}: {v}" for k, v in info.items())
        points = int((results["machine"] == text).sum())
        parts.append(items if len(described) == 1 else f"Machine {i + 1} ({points} points):\n\n{items}")
    return "\n\n".join(parts)


# --- the report -------------------------------------------------------------------------------


def run_lines(results: pd.DataFrame, run: RunSummary | None) -> str:
    if run is None:
        return (f"Rebuilt from `results.csv` alone ({len(results)} points); the command, dates and wall time of the "
                "run that measured them are not in it. Each point keeps the timings of the run that measured it.")
    return (f"Command: `{run.command}`\n\nRun {run.started} - {run.finished}, wall time {run.wall_seconds:.0f} s on "
            f"this machine\n({run.measured} points measured in this run, {run.cached} taken from the cache of an "
            "earlier run in this folder;\ncached points keep the timings of the run that measured them).")


def anchors_note(results: pd.DataFrame) -> str:
    codecs = [c for c in ANCHOR_CODECS if (results["codec"] == c).any()]
    if not codecs:
        return "No anchor was run."
    lines = ["Each anchor runs through ffmpeg-python with its own rate parameter (CRF; QP for VVenC), "
             "8-bit unless said otherwise. **4:2:0** = chroma at half resolution both ways (the usual delivery "
             "format); **4:4:4** = full-resolution chroma, like E-NeRV's RGB output. Unless marked **low-delay** "
             "(x264/x265 only: `-tune zerolatency`, a keyframe every 12 frames, no B-frames), each uses its "
             "preset's default GOP. Per codec:", ""]
    for codec in codecs:
        spec = ANCHORS[codec]
        lines.append(f"- {spec.title} ({spec.encoder}): `-{spec.preset_option}` presets "
                     f"{', '.join(spec.presets)} (fast to slow), `-{spec.knob}` {spec.knob_range[0]}.."
                     f"{spec.knob_range[1]}; stored as {spec.container} (`{spec.extension}`). {spec.notes}.")
    return "\n".join(lines + ["", "The exact commands:"])


def time_axis_text(table: pd.DataFrame, plotted: bool) -> str:
    figure = ("![quality at fixed rates against encode time](time_axis.png)\n\n" if plotted else "")
    return (f"{figure}Each curve's Pareto front (bpp, PSNR-RGB) interpolated linearly in log-rate at "
            f"{' and '.join(f'{r:g}' for r in time_axis.TARGET_BPP)} bpp: PSNR-RGB there, and at the same place "
            "VMAF and the encode seconds of one point (the whole clip; a shared E-NeRV fit counted in full); "
            "no extrapolation, so a curve that does not span a rate has no value there"
            + (" (average over the videos where every video has one)" if (table["video"] == "average").any()
               else "") + ". Data in `time_axis.csv`. Encode times are those of the machine below, one job at a "
            f"time unless the Time section says otherwise.\n\n{time_axis.markdown(table)}")


