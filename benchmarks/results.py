"""``results.csv``: one row per measured point, in a fixed column order; written and read here."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.errors import InputError

COLUMNS = [
    "video", "codec", "setting", "label", "point", "preset", "knob", "knob_value", "bytes", "bpp", "kbps",
    "psnr_rgb", "psnr_yuv", "ms_ssim", "vmaf", "encode_seconds", "own_encode_seconds", "decode_seconds", "frames",
    "width", "height", "fps", "pix_fmt", "crf", "qp", "low_delay", "quality", "bits", "prune_ratio", "epochs",
    "prune_epochs", "rd_epochs", "qat_epochs", "epochs_requested", "budget_seconds", "estimated_seconds", "parameters",
    "fit_seconds", "fit_reused", "fit_key", "resumed", "device", "encoder_version", "vmaf_model", "parallel_jobs",
    "source_pix_fmt", "file", "command", "config", "machine", "key", "measured_at",
]
INT_COLUMNS = ["bytes", "frames", "width", "height", "bits", "epochs", "prune_epochs", "rd_epochs", "qat_epochs",
               "parameters", "parallel_jobs"]
# What a report needs at the least; a results file of an older version lacks some of the rest.
REQUIRED = ["video", "codec", "setting", "point", "bytes", "bpp", "psnr_rgb", "psnr_yuv", "encode_seconds",
            "decode_seconds", "frames", "width", "height"]


def results_frame(rows: list[dict]) -> pd.DataFrame:
    """The table of points: known columns in order (then any others), sorted by curve and rate."""
    table = pd.DataFrame(rows)
    extra = sorted(c for c in table.columns if c not in COLUMNS)
    table = table.reindex(columns=COLUMNS + extra)
    if table.empty:
        return table
    table = table.sort_values(["video", "codec", "setting", "bpp"], kind="stable").reset_index(drop=True)
    for column in INT_COLUMNS:  # whole numbers, empty where a codec has no such knob
        table[column] = pd.to_numeric(table[column]).round().astype("Int64")
    return table


def read_results(path: Path) -> pd.DataFrame:
    """A results.csv as :func:`results_frame` makes it; InputError when it is not one."""
    try:
        table = pd.read_csv(path)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: not a readable CSV file ({exc})") from None
    missing = [c for c in REQUIRED if c not in table.columns]
    if missing:
        raise InputError(f"{path}: not a results.csv of enerv-bench (no column {', '.join(missing)})")
    if table.empty:
        raise InputError(f"{path}: no points")
    return results_frame(table.to_dict("records"))
