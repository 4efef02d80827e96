"""enerv-bench at several time budgets per point: the option, the curves' names and cache keys, the dry
run's estimate, and the report's "What minutes buy" (from synthetic results; nothing is fitted)."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import matplotlib.image
import pandas as pd
import pytest
from conftest import smooth_clip

from benchmarks import budget_curve, rd, report
from benchmarks.curves import curve_label
from benchmarks.enerv import ENeRV, parse_point
from benchmarks.plan import Job, job_key
from benchmarks.point_cache import PointCache
from benchmarks.settings import parse_settings
from pipeline.cli_common import run_command
from pipeline.config import load_preset
from pipeline.video_writer import write_video

# --- the option ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("given, expected", [(None, (0.0,)), ("300", (300.0,)), ("0", (0.0,)),
                                             ("600,75,150", (75.0, 150.0, 600.0)), (" 75 , 150 ", (75.0, 150.0)),
                                             ("2.5", (2.5,))])
def test_budget_seconds_takes_one_value_or_a_list(given, expected, tmp_path):
    argv = ["clip.mkv", "-o", str(tmp_path / "out"), "--codecs", "enerv", "--enerv-presets", "test-tiny"]
    argv += [] if given is None else ["--budget-seconds", given]
    assert parse_settings(argv).budget_seconds == expected


def test_quick_keeps_a_single_120_s_budget_and_a_ladder_of_rate_targets(tmp_path):
    settings = parse_settings(["clip.mkv", "-o", str(tmp_path / "out"), "--codecs", "enerv", "--quick"])
    assert settings.budget_seconds == (120.0,)
    assert [p.target_bpp for p in settings.enerv_points] == [0.02, 0.04, 0.08, 0.15, 0.3]
    assert [p.name for p in settings.enerv_presets] == ["enerv-latent-xs"]


@pytest.mark.parametrize("bad", ["abc", "-5", "inf", "nan", "0,300", "300,300", "300,300.0", ",", "75,,x"])
def test_bad_budgets_are_one_error_line_exit_2_and_nothing_written(bad, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [str(tmp_path / "clip.mkv"), "-o", str(out), "--codecs", "enerv", "--budget-seconds", bad]
    assert run_command(rd.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "--budget-seconds" in err[0], err
    assert not out.exists()


def test_help_names_the_list_form(capsys):
    with pytest.raises(SystemExit):
        parse_settings(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--budget-seconds SECONDS[,SECONDS...]" in text and "75,150,300,600" in text


# --- curves and cache keys -----------------------------------------------------------------------------


def _enerv(budget: float, several: bool) -> ENeRV:
    return ENeRV(preset=load_preset("test-tiny"), curve=(parse_point("50"),), budget_seconds=budget,
                 budget_in_setting=several)


def test_each_budget_is_its_own_curve_and_key_and_a_single_budget_is_as_before():
    point = parse_point("50")
    video = SimpleNamespace(fingerprint="f", name="clip.mkv")
    single, at300, at150 = _enerv(300, False), _enerv(300, True), _enerv(150, True)
    assert single.setting() == "test-tiny" and at300.setting() == "test-tiny@300s"
    assert curve_label("enerv", at300.setting()) == "E-NeRV test-tiny @300s"
    assert single.file_name(point) == "enerv-test-tiny-q50.bin" and "@300s" in at300.file_name(point)
    assert at150.file_name(point) != at300.file_name(point)
    # The budget is in the key through the point's description: one run of several budgets reuses the
    # points of a run of one of them, and points at different budgets never collide.
    assert job_key(video, single, point) == job_key(video, at300, point) != job_key(video, at150, point)


def test_a_cached_point_takes_the_curve_name_of_the_run_that_loads_it(tmp_path):
    point = parse_point("50")
    video = SimpleNamespace(fingerprint="f", name="clip.mkv")
    (tmp_path / "files").mkdir()
    (tmp_path / "cache").mkdir()
    (tmp_path / "files" / "a.bin").write_bytes(b"1234")
    cache = PointCache(tmp_path)
    single = Job(video, _enerv(300, False), point, "files/a.bin", job_key(video, _enerv(300, False), point))
    cache.save(single, {"setting": "test-tiny", "label": "E-NeRV test-tiny", "file": "files/a.bin", "bytes": 4}, ())
    several = Job(video, _enerv(300, True), point, "files/b.bin", job_key(video, _enerv(300, True), point))
    row = cache.load(several).row
    assert row["setting"] == "test-tiny@300s" and row["label"] == "E-NeRV test-tiny @300s"
    assert row["file"] == "files/a.bin"  # the file that was measured


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mkv"
    write_video(path, smooth_clip(8, 32, 48))
    return path


def test_dry_run_lists_each_budgets_points_and_the_estimated_time(clip, tmp_path, capsys):
    out = tmp_path / "dry"
    argv = [str(clip), "-o", str(out), "--dry-run", "--codecs", "enerv,x264", "--enerv-presets", "test-tiny",
            "--enerv-points", "40,60", "--budget-seconds", "120,60", "--crfs", "20,32", "--anchor-presets", "medium",
            "--pix-fmts", "yuv420p", "--no-low-delay", "--no-vmaf", "-q"]
    assert rd.main(argv) == 0
    text = capsys.readouterr().out
    assert "6 to run, 0 cached" in text and not out.exists()
    assert text.count("E-NeRV test-tiny @60s q") == 2 and text.count("E-NeRV test-tiny @120s q") == 2
    assert text.index("@60s") < text.index("@120s")
    assert "budget 60 s: 2 E-NeRV points x 60 s = 120 s (2.0 min)" in text
    assert "budget 120 s: 2 E-NeRV points x 120 s = 240 s (4.0 min)" in text
    assert "estimated time: 360 s (6.0 min) for E-NeRV" in text and "+ 2 anchor points" in text


# --- where BD-rate crosses 0 ----------------------------------------------------------------------------


def test_crossing_interpolates_in_log_seconds_between_measured_budgets():
    found = budget_curve.zero_crossing([75, 150, 300, 600], [30.0, 10.0, -10.0, -20.0])
    assert found.kind == "interpolated" and found.seconds == pytest.approx(150 * math.sqrt(2))
    assert "interpolated" in found.text and "extrapolated" not in found.text
    found = budget_curve.zero_crossing([300, 75, 150], [-3.0, 9.0, 3.0])  # any order
    assert found.kind == "interpolated" and found.seconds == pytest.approx(150 * 2 ** 0.5)


def test_crossing_extrapolates_from_the_last_two_budgets_and_says_so():
    found = budget_curve.zero_crossing([75, 150, 300], [50.0, 30.0, 20.0])
    assert found.kind == "extrapolated" and found.seconds == pytest.approx(1200.0)  # -10 % per doubling
    assert "extrapolated, not measured" in found.text
    found = budget_curve.zero_crossing([100, 1000], [20.0, 10.0])
    assert found.seconds == pytest.approx(10_000.0)
    found = budget_curve.zero_crossing([75, 150, 300], [math.nan, 10.0, 5.0])  # an undefined BD-rate is left out
    assert found.kind == "extrapolated" and found.seconds == pytest.approx(600.0)


@pytest.mark.parametrize("rates, kind, words", [
    ([30.0, 10.0, 12.0], "none", "no crossing: BD-rate is not falling"),
    ([30.0, 10.0, 10.0], "none", "no crossing: BD-rate is not falling"),
    ([-5.0, -10.0, -12.0], "below", "below 0 already"),
    ([10.0, 0.0, -3.0], "measured", "measured"),
    ([10.0, math.nan, math.nan], "none", "fewer than two budgets"),
])
def test_crossing_edge_cases(rates, kind, words):
    found = budget_curve.zero_crossing([75, 150, 300], rates)
    assert found.kind == kind and words in found.text
    assert (found.seconds == 150) if kind == "measured" else math.isnan(found.seconds)


# --- the report, from synthetic results at three budgets --------------------------------------------------

RATES = (0.03, 0.06, 0.12, 0.24)  # quality linear in log-rate: a gap of D dB costs 2^(D/3) in rate
ANCHORS = [("x264", "medium-yuv420p", 26.0), ("x264", "medium-yuv444p", 27.0), ("x265", "medium-yuv420p", 28.0)]
# E-NeRV enerv-grid-m at each budget (xs is 1 dB below it everywhere, so the envelope is m)
ENERV = {75: 25.5, 150: 26.5, 300: 27.5}


def _row(video: str, v: int, codec: str, setting: str, base: float, i: int, bpp: float) -> dict:
    quality = base + v + 3 * math.log2(bpp / RATES[0])
    return {"video": video, "codec": codec, "setting": setting, "point": f"p{i}", "bytes": round(bpp * 1000),
            "bpp": bpp, "psnr_rgb": quality, "psnr_yuv": quality + 4, "encode_seconds": 1.0, "own_encode_seconds": 1.0,
            "decode_seconds": 0.1, "frames": 48, "width": 320, "height": 180, "fps": 24.0, "knob_value": 40 - i,
            "low_delay": False, "preset": setting.split("-")[0], "command": "ffmpeg -crf 1 out.mp4",
            "encoder_version": "test", "machine": '{"cpu": "test"}', "parallel_jobs": 1}


def _results(path: Path, enerv: dict[float, float]) -> pd.DataFrame:
    rows = []
    for v, video in enumerate(("a.mkv", "b.mkv")):
        for i, bpp in enumerate(RATES):
            rows += [_row(video, v, codec, setting, base, i, bpp) for codec, setting, base in ANCHORS]
            for budget, base in enerv.items():
                for preset, shift in (("enerv-grid-xs", -1.0), ("enerv-grid-m", 0.0)):
                    row = _row(video, v, "enerv", f"{preset}@{budget:g}s", base + shift, i, bpp)
                    row.update({"preset": preset, "budget_seconds": budget, "encode_seconds": 0.9 * budget,
                                "epochs": 10, "prune_epochs": 0, "rd_epochs": 1, "qat_epochs": 1,
                                "parameters": 1000, "fit_seconds": 1.0, "fit_reused": i > 0,
                                "fit_key": f"{preset}{budget}", "resumed": False, "device": "cpu",
                                "point": f"q{i}", "low_delay": None})
                    rows.append(row)
    table = pd.DataFrame(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False)
    return table


def _bd(gap_db: float) -> float:
    """BD-rate (%) of a curve gap_db above an anchor, both 3 dB per doubling of rate."""
    return (2 ** (-gap_db / 3) - 1) * 100


def test_budget_bd_of_each_budgets_curves_against_the_anchors(tmp_path):
    results = _results(tmp_path / "results.csv", ENERV)
    assert budget_curve.budgets(results) == [75.0, 150.0, 300.0]
    table = budget_curve.budget_bd(results)
    assert len(table) == 3 * 3 * 3  # budgets x (xs, m, envelope) x (two references + x264 medium 4:4:4)
    main = budget_curve.main_curve(table)
    assert set(main["curve"]) == {"envelope over presets"} and len(main) == 9
    for _, r in table.iterrows():
        anchor_base = next(b for c, s, b in ANCHORS if (c, s) == (r["anchor_codec"], r["anchor_setting"]))
        base = ENERV[int(r["budget_seconds"])] - (r["curve"] == "enerv-grid-xs")
        assert r["bd_rate_psnr_rgb"] == pytest.approx(_bd(base - anchor_base), abs=1e-6), r.to_dict()
        assert r["videos"] == "2/2" and r["encode_seconds"] == pytest.approx(0.9 * r["budget_seconds"])
    found = budget_curve.crossing(table, budget_curve.crossing_anchor(results))
    b150, b300 = _bd(26.5 - 27.0), _bd(27.5 - 27.0)
    expected = 150 * 2 ** (b150 / (b150 - b300))
    assert found.kind == "interpolated" and found.seconds == pytest.approx(expected, rel=1e-6)


def test_the_report_gains_what_minutes_buy(tmp_path):
    results_csv = tmp_path / "run" / "results.csv"
    _results(results_csv, ENERV)
    out = tmp_path / "report"
    assert report.main([str(results_csv), "-o", str(out)]) == 0
    assert matplotlib.image.imread(out / "budget_curve.png").shape[1] > 800
    curve = pd.read_csv(out / "budget_curve.csv")
    assert set(curve["budget_seconds"]) == {75, 150, 300}
    text = (out / "report.md").read_text()
    section = text.split("## What minutes buy", 1)[1].split("\n## ", 1)[0]
    assert "| E-NeRV curve | BD-rate vs | 75 s / point | 150 s / point | 300 s / point |" in section
    envelope = next(line for line in section.splitlines()
                    if line.startswith("| envelope over presets | x264 medium 4:4:4 |"))
    assert f"| {_bd(-1.5):+.1f} % | {_bd(-0.5):+.1f} % | {_bd(0.5):+.1f} % |" in envelope
    assert "budget_curve.png" in section and "BD-rate 0 against x264 medium 4:4:4" in section
    assert "interpolated in log(seconds)" in section
    assert "| E-NeRV enerv-grid-m @300s |" in text  # its own curve in the summary


def test_a_crossing_beyond_the_budgets_is_marked_extrapolated(tmp_path):
    results_csv = tmp_path / "run" / "results.csv"
    _results(results_csv, {75: 24.0, 150: 24.6, 300: 25.2})  # +0.6 dB per doubling, 1.8 dB short at 300 s
    out = tmp_path / "report"
    assert report.main([str(results_csv), "-o", str(out)]) == 0
    section = (out / "report.md").read_text().split("## What minutes buy", 1)[1].split("\n## ", 1)[0]
    assert "extrapolated, not measured" in section


def test_one_budget_gives_no_budget_section_and_removes_an_old_one(tmp_path):
    results_csv = tmp_path / "run" / "results.csv"
    out = tmp_path / "report"
    _results(results_csv, ENERV)
    assert report.main([str(results_csv), "-o", str(out)]) == 0 and (out / "budget_curve.csv").exists()
    _results(results_csv, {300: 27.5})
    assert report.main([str(results_csv), "-o", str(out)]) == 0
    assert not (out / "budget_curve.csv").exists() and not (out / "budget_curve.png").exists()
    assert "What minutes buy" not in (out / "report.md").read_text()
