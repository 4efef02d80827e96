"""The rate-distortion benchmark end to end on a tiny clip, and its BD-rate arithmetic."""

import struct

import numpy as np
import pandas as pd
import pytest

import cli
from benchmarks.rd_report import bd_metrics, pareto_front
from pipeline.video_io import write_video
from tests.conftest import smooth_clip

COLUMNS = ["video", "codec", "setting", "preset", "knob", "knob_value", "bytes", "bpp", "kbps", "psnr_rgb",
           "psnr_yuv", "ms_ssim", "encode_seconds", "decode_seconds", "frames", "width", "height", "command"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "tiny.mkv"
    write_video(path, smooth_clip(8, 32, 48), fps=24)
    return path


def _bench(clip, out, *extra):
    return cli.bench_main([str(clip), "-o", str(out), "--quick", "--enerv-presets", "test-tiny", "--epochs", "6",
                           "--crfs", "20,30,40", "--device", "cpu", *extra])


@pytest.fixture(scope="module")
def report(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "tiny"
    assert _bench(clip, out) == 0
    return out


def test_results_have_every_column_and_real_sizes(report):
    results = pd.read_csv(report / "results.csv")
    assert set(COLUMNS) <= set(results.columns)
    assert set(results["codec"]) == {"enerv", "x264", "x265"}
    assert results.groupby(["codec", "setting"]).size().min() >= 3
    for _, row in results.iterrows():
        assert row["bytes"] == (report / row["file"]).stat().st_size
        assert row["bpp"] == pytest.approx(8 * row["bytes"] / (48 * 32 * 8))
    assert set(results["setting"][results["codec"] == "x264"]) == {"medium-yuv420p", "medium-yuv444p"}


def test_bd_rate_of_a_curve_against_itself_is_zero(report):
    bd = pd.read_csv(report / "bd_rate.csv")
    same = bd[(bd["codec"] == bd["anchor"]) & (bd["setting"] == bd["anchor_setting"])]
    assert len(same) >= 4
    finite = same["bd_rate_percent"].dropna()
    assert len(finite) and np.allclose(finite, 0, atol=1e-9)
    assert "(average)" in set(bd["video"])


def test_bd_rate_matches_a_hand_computed_case():
    rates, psnrs = [0.1, 0.2, 0.4, 0.8], [30.0, 33.0, 36.0, 39.0]
    # The same quality at 80 % of the rate everywhere: BD-rate is exactly -20 %.
    rate, dpsnr, _ = bd_metrics(rates, psnrs, [0.8 * r for r in rates], psnrs)
    assert rate == pytest.approx(-20.0, abs=1e-6)
    # One dB better everywhere: BD-PSNR +1 dB.
    _, dpsnr, _ = bd_metrics(rates, psnrs, rates, [p + 1 for p in psnrs])
    assert dpsnr == pytest.approx(1.0, abs=1e-6)


def test_pareto_front_drops_dominated_points():
    assert list(pareto_front(np.array([1.0, 2.0, 3.0, 4.0]), np.array([30.0, 29.0, 32.0, 31.5]))) == [0, 2]


def test_figures_and_report(report):
    for name in ("rd.png", "time_to_quality.png"):
        data = (report / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 300 and height > 200
    assert (report / "rd.svg").read_text().lstrip().startswith("<?xml")
    text = (report / "report.md").read_text()
    for needle in ("rd.png", "BD-rate", "BT.709", "yuv444p", "whole file", "ffmpeg"):
        assert needle in text


def test_a_second_run_uses_the_cache(clip, report, capsys):
    assert _bench(clip, report) == 0
    assert "[1/" not in capsys.readouterr().err  # nothing was encoded again


def test_dry_run_encodes_nothing(clip, tmp_path, capsys):
    out = tmp_path / "dry"
    assert _bench(clip, out, "--dry-run") == 0
    assert "points" in capsys.readouterr().out
    assert not out.exists()


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["--codecs", "enerv,vp9"], "vp9"),
        (["--crfs", "a,b"], "crfs"),
        (["--enerv-presets", "nope"], "preset"),
    ],
)
def test_bad_options_are_one_line(clip, tmp_path, capsys, args, fragment):
    out = tmp_path / "bad"
    assert cli.bench_main([str(clip), "-o", str(out), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0]
    assert not out.exists()


def test_missing_input_and_unwritable_output(clip, tmp_path, capsys):
    assert cli.bench_main([str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "r")]) == 2
    assert cli.bench_main([str(clip), "-o", str(tmp_path / "no" / "such" / "r")]) == 2
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.bench_main([str(clip), "-o", str(blocker)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 3 and all(line.startswith("error: ") for line in lines)
