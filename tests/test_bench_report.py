"""python -m benchmarks.report: the report rebuilt from a results.csv alone.

tests/data/bench_results.csv is the results.csv of a real enerv-bench run on two tiny
synthetic clips (test-tiny at three codec settings, x264 and x265 medium in both chroma
formats at three CRFs); tests/data/bench_bd_rate.csv is the bd_rate.csv that run wrote.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from benchmarks import report
from benchmarks.curves import curve_label
from pipeline.cli_common import run_command

DATA = Path(__file__).resolve().parent / "data"
ROOT = DATA.parent.parent


@pytest.fixture
def results_alone(tmp_path) -> Path:
    """The committed results.csv, alone in a folder (no run.json, no fitting history)."""
    path = tmp_path / "run" / "results.csv"
    path.parent.mkdir()
    shutil.copy(DATA / "bench_results.csv", path)
    return path


def test_python_m_benchmarks_report_rebuilds_everything_from_results_alone(results_alone, tmp_path):
    out = tmp_path / "rebuilt"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.report", str(results_alone), "-o", str(out)],
                          cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["bd_rate.csv", "rd.png", "rd.svg", "report.md"]
    expected = pd.read_csv(DATA / "bench_bd_rate.csv")
    pd.testing.assert_frame_equal(pd.read_csv(out / "bd_rate.csv"), expected, rtol=1e-9)
    assert expected["bd_rate_psnr_rgb"].notna().sum() > 10  # the anchors' BD-rates against each other
    assert matplotlib.image.imread(out / "rd.png").shape[1] > 1500  # two videos and their average

    text = (out / "report.md").read_text()
    results = pd.read_csv(results_alone)
    assert "Rebuilt from `results.csv` alone (30 points)" in text
    for codec, setting in set(zip(results["codec"], results["setting"])):
        assert curve_label(codec, setting) in text
    for point in results.loc[results["codec"] == "enerv", "point"]:
        assert f"| {point} |" in text
    for needle in ("libx264 core", "libx265 ", "-crf {CRF}", "cpu count", "BT.709", "whole file", "(shared)",
                   "No time budget: every point ran the epochs it asked for (6 fitting epochs)",
                   "Every point ran alone", "clip0.mkv: bgr0, 24 fps"):
        assert needle in text, needle
    assert "wall s in this run" not in text and "time_to_quality.png" not in text


def test_a_run_summary_and_history_beside_the_results_are_used(results_alone, tmp_path):
    history = pd.DataFrame({"video": ["clip0.mkv"] * 3, "setting": ["test-tiny"] * 3, "point": ["8b/0%"] * 3,
                            "fit_key": ["k"] * 3, "epoch": [1, 2, 3], "seconds": [0.1, 0.2, 0.3],
                            "loss": [0.3, 0.2, 0.1], "psnr": [12.0, 13.0, 14.0]})
    history.to_csv(results_alone.parent / "time_to_quality.csv", index=False)
    summary = report.RunSummary(command="enerv-bench clip0.mkv clip1.mkv -o run", started="then", finished="now",
                                wall_seconds=12.0, measured=30, cached=0, bd_method="pchip",
                                wall_by_codec={"enerv": 7.5, "x264": 0.5, "x265": 0.6},
                                measured_codecs=("enerv", "x264", "x265"))
    (results_alone.parent / "run.json").write_text(summary.to_json())
    assert report.RunSummary.read(results_alone.parent / "run.json") == summary
    out = tmp_path / "rebuilt"
    assert report.main([str(results_alone), "-o", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert "Command: `enerv-bench clip0.mkv clip1.mkv -o run`" in text and "(pchip interpolation" in text
    assert "| enerv | 6 |" in text and "| 7.5 |" in text
    assert (out / "time_to_quality.png").stat().st_size > 0 and "time_to_quality.png" in text
    assert set(pd.read_csv(out / "bd_rate.csv")["method"]) == {"pchip"}


@pytest.mark.parametrize("case", ["missing", "not a csv", "other columns", "no rows", "file in the way"])
def test_bad_results_are_one_error_line_and_nothing_written(case, tmp_path, capsys):
    results, out = tmp_path / "results.csv", tmp_path / "out"
    if case == "not a csv":
        results.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00")
    elif case == "other columns":
        results.write_text("a,b\n1,2\n")
    elif case == "no rows":
        results.write_text(",".join(pd.read_csv(DATA / "bench_results.csv").columns) + "\n")
    elif case == "file in the way":
        shutil.copy(DATA / "bench_results.csv", results)
        out.write_text("keep me")
    assert run_command(report.main, [str(results), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    if case == "file in the way":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()


# --- many clips, the summary and the time axis, from a synthetic results.csv -----------------------------

RATES = (0.03, 0.06, 0.12, 0.24)  # doubling: quality linear in log-rate makes every interpolation exact
# (codec, setting, preset, knob, quality at 0.03 bpp, encode s per point, budget)
CURVES = [("x264", "fast-yuv420p", "fast", "crf", 26.0, 0.2, None),
          ("x264", "medium-yuv420p", "medium", "crf", 27.0, 0.5, None),
          ("x264", "veryslow-yuv420p", "veryslow", "crf", 28.5, 3.0, None),
          ("svtav1", "p8-yuv420p", "8", "crf", 28.0, 0.4, None),
          ("svtav1", "p6-yuv420p", "6", "crf", 29.0, 0.8, None),
          ("vvenc", "medium-yuv420p10le", "medium", "qp", 29.5, 7.0, None),
          ("enerv", "enerv-grid-m", "enerv-grid-m", "quality", 25.0, 60.0, 60.0),
          ("enerv", "enerv-grid-m", "enerv-grid-m", "quality", 26.5, 300.0, 300.0)]


def _synthetic_results(path: Path) -> pd.DataFrame:
    rows = []
    for v, video in enumerate(("a.mkv", "b.mkv")):
        for codec, setting, preset, knob, base, seconds, budget in CURVES:
            for i, bpp in enumerate(RATES):
                quality = base + v + 3 * math.log2(bpp / RATES[0])
                row = {"video": video, "codec": codec, "setting": setting, "point": f"{knob}{i}", "preset": preset,
                       "knob": knob, "knob_value": 40 - 6 * i, "bytes": round(bpp * 320 * 180 * 48 / 8), "bpp": bpp,
                       "psnr_rgb": quality, "psnr_yuv": quality + 4, "ms_ssim": 0.9, "vmaf": 2 * quality,
                       "vmaf_model": "vmaf_v0.6.1 (libvmaf test)", "encode_seconds": seconds,
                       "own_encode_seconds": seconds, "decode_seconds": 0.1, "frames": 48, "width": 320,
                       "height": 180, "fps": 24.0, "source_pix_fmt": "yuv420p", "parallel_jobs": 1,
                       "machine": '{"cpu": "test"}', "encoder_version": f"lib{codec} test",
                       "command": f"ffmpeg -i - -{knob} {40 - 6 * i} out.mp4", "low_delay": False}
                if codec == "enerv":
                    row.update({"epochs": 30, "prune_epochs": 0, "rd_epochs": 5, "qat_epochs": 5, "parameters": 1000,
                                "budget_seconds": budget, "fit_seconds": seconds / 2, "own_encode_seconds": seconds / 2,
                                "fit_reused": i > 0, "fit_key": f"fit{budget}", "resumed": False, "device": "cpu",
                                "point": f"q{i}b{budget:g}", "low_delay": None})
                rows.append(row)
    table = pd.DataFrame(rows)
    table.to_csv(path, index=False)
    return table


def test_many_clips_give_a_summary_and_a_time_axis(tmp_path):
    results_csv = tmp_path / "run" / "results.csv"
    results_csv.parent.mkdir()
    _synthetic_results(results_csv)
    out = tmp_path / "report"
    assert report.main([str(results_csv), "-o", str(out)]) == 0
    for name in ("rd.png", "rd_vmaf.png", "time_axis.png", "time_axis.csv", "bd_rate.csv", "report.md"):
        assert (out / name).stat().st_size > 0, name
    assert matplotlib.image.imread(out / "rd.png").shape[1] > 1500  # a panel per clip and the average

    axis = pd.read_csv(out / "time_axis.csv")
    assert set(axis["video"]) == {"a.mkv", "b.mkv", "average"} and set(axis["target_bpp"]) == {0.05, 0.1}
    for codec, setting, _, _, base, seconds, budget in CURVES:
        rows = axis[(axis["codec"] == codec) & (axis["setting"] == setting)]
        if budget is not None:
            rows = rows[rows["budget_seconds"] == budget]
        at = rows.set_index(["video", "target_bpp"])
        for target in (0.05, 0.1):
            expected = base + 0.5 + 3 * math.log2(target / RATES[0])  # the mean of the clips' base and base + 1
            assert at.loc[("average", target), "psnr_rgb"] == pytest.approx(expected, abs=1e-9)
            assert at.loc[("average", target), "vmaf"] == pytest.approx(2 * expected, abs=1e-9)
            assert at.loc[("average", target), "encode_seconds"] == pytest.approx(seconds)
            assert at.loc[("a.mkv", target), "psnr_rgb"] == pytest.approx(expected - 0.5, abs=1e-9)

    text = (out / "report.md").read_text()
    summary = text.split("## Summary", 1)[1].split("## BD-rate", 1)[0]
    assert "| vs x264 medium 4:2:0 | vs SVT-AV1 preset 6 4:2:0 | vs VVenC medium 4:2:0 10-bit |" in summary
    # x264 veryslow is 1.5 dB above medium at 3 dB per doubling of rate: 2^-0.5 of its rate.
    veryslow = next(line for line in summary.splitlines() if line.startswith("| x264 veryslow 4:2:0 |"))
    assert f"{(2 ** -0.5 - 1) * 100:+.1f} %" in veryslow and "| 3.00 | 0.10 | 8 |" in veryslow
    assert "| x264 medium 4:2:0 | (reference) |" in summary
    axis_text = text.split("## Quality against encode time", 1)[1].split("## Time to quality", 1)[0]
    assert "time_axis.png" in axis_text
    for label in ("x264 fast 4:2:0", "SVT-AV1 preset 8 4:2:0", "E-NeRV enerv-grid-m, budget 60 s",
                  "E-NeRV enerv-grid-m, budget 300 s"):
        assert f"| {label} |" in axis_text, label
    # Per codec the fastest curve first.
    assert axis_text.index("x264 fast 4:2:0") < axis_text.index("x264 medium 4:2:0") < axis_text.index("veryslow")
    assert "VMAF (BD-rate / BD-VMAF" in text and "vmaf_v0.6.1 (libvmaf test)" in text
