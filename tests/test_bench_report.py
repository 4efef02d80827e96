"""python -m benchmarks.report: the report rebuilt from a results.csv alone.

tests/data/bench_results.csv is the results.csv of a real enerv-bench run on two tiny
synthetic clips (test-tiny at three codec settings, x264 and x265 medium in both chroma
formats at three CRFs); tests/data/bench_bd_rate.csv is the bd_rate.csv that run wrote.
"""

from __future__ import annotations

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
