"""The rate-distortion benchmark (enerv-bench), run whole and in-process on a tiny clip."""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from conftest import smooth_clip

from benchmarks import bd, rd
from benchmarks.anchors import X264
from benchmarks.budget import budget_factor, within_budget
from benchmarks.enerv import ENeRV, parse_point
from compress.plan import StepSeconds, estimate_seconds
from decompress.decode import decode_frames, read_file_bytes
from pipeline.cli_common import run_command
from pipeline.config import load_preset
from pipeline.epochs import EpochPlan
from pipeline.errors import InputError
from pipeline.metrics import psnr
from pipeline.presets import with_fit_epochs
from pipeline.video_io import read_video
from pipeline.video_writer import write_video

# Two E-NeRV points (test-tiny, a few epochs) and three CRFs for each anchor.
SWEEP = ["--codecs", "enerv,x264,x265", "--enerv-presets", "test-tiny", "--epochs", "3", "--enerv-points", "8:0,6:0.3",
         "--budget-seconds", "600", "--crfs", "20,32,44", "--anchor-presets", "medium", "--pix-fmts", "yuv420p",
         "--no-low-delay", "-q"]

REQUIRED_COLUMNS = {
    "video", "codec", "setting", "preset", "knob", "knob_value", "bytes", "bpp", "kbps", "psnr_rgb", "psnr_yuv",
    "ms_ssim", "encode_seconds", "decode_seconds", "frames", "width", "height", "command", "epochs", "file",
}


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("clip") / "clip.mkv"
    write_video(path, smooth_clip(8, 32, 48))
    return path


@pytest.fixture(scope="module")
def bench(clip, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "report"
    assert rd.main([str(clip), "-o", str(out), *SWEEP]) == 0
    return out


def _forbid_encoding(monkeypatch):
    """Makes every encoder fail, so a run that still succeeds encoded nothing."""

    def refuse(*args, **kwargs):
        raise AssertionError("encoded a point")

    monkeypatch.setattr("benchmarks.anchors.FFmpegCodec.encode", refuse)
    monkeypatch.setattr("benchmarks.enerv.compress_frames", refuse)


def test_every_output_is_written_with_the_promised_columns(bench):
    for name in ("results.csv", "bd_rate.csv", "rd.png", "rd.svg", "report.md", "time_to_quality.png",
                 "time_to_quality.csv"):
        assert (bench / name).stat().st_size > 0, name
    results = pd.read_csv(bench / "results.csv")
    assert REQUIRED_COLUMNS <= set(results.columns)
    counts = results.groupby("codec").size().to_dict()
    assert counts == {"enerv": 2, "x264": 3, "x265": 3}
    assert (results[["frames", "width", "height"]] == [8, 48, 32]).all().all()
    assert np.allclose(results["bpp"], 8 * results["bytes"] / (48 * 32 * 8))
    assert np.allclose(results["kbps"], 8 * results["bytes"] / (8 / 24.0) / 1000)
    assert results["psnr_rgb"].between(5, 100).all() and results["psnr_yuv"].between(5, 100).all()
    assert results["ms_ssim"].isna().all()  # 48x32 is below MS-SSIM's 161 pixels
    enerv = results[results["codec"] == "enerv"]
    assert set(enerv["epochs"]) == {3} and enerv["estimated_seconds"].gt(0).all()
    assert enerv["command"].str.startswith("enerv-compress ").all()
    anchors = results[results["codec"] != "enerv"]
    assert anchors["command"].str.contains(" -crf ").all() and (anchors["knob"] == "crf").all()
    assert "filter_units=remove_types=6" in anchors[anchors["codec"] == "x264"]["command"].iloc[0]
    text = (bench / "report.md").read_text()
    for needle in ("rd.png", "time_to_quality.png", "BT.709", "whole file", "x265 (libx265)", "cpu count", "4:2:0"):
        assert needle in text, needle


def test_bytes_are_the_sizes_of_the_kept_files_and_quality_is_measured_on_them(bench, clip):
    results = pd.read_csv(bench / "results.csv")
    for row in results.itertuples():
        assert (bench / row.file).stat().st_size == row.bytes, row.file
    source = read_video(clip).frames
    e = results[results["codec"] == "enerv"].iloc[0]
    decoded = decode_frames(read_file_bytes(bench / e["file"]))
    assert psnr(decoded.frames, source) == pytest.approx(e["psnr_rgb"], abs=1e-9)
    a = results[results["codec"] == "x264"].iloc[0]
    frames = X264(preset="medium", pix_fmt="yuv420p").decode(bench / a["file"], 48, 32)
    assert psnr(frames, source) == pytest.approx(a["psnr_rgb"], abs=1e-9)


def test_rd_figure_is_a_valid_png(bench):
    data = (bench / "rd.png").read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = matplotlib.image.imread(bench / "rd.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.shape[1] > 300
    assert (bench / "rd.svg").read_text().lstrip().startswith("<?xml")


def test_bd_rate_matches_hand_computed_cases():
    rates = np.array([0.1, 0.2, 0.4, 0.8])
    psnrs = 30 + 3 * np.log2(rates / 0.1)  # linear in log-rate: every interpolation is exact
    for method in bd.BD_METHODS:
        same = bd.bd_metrics(rates, psnrs, rates, psnrs, method)
        assert same["bd_rate"] == pytest.approx(0, abs=1e-9) and same["bd_psnr"] == pytest.approx(0, abs=1e-9)
        cheaper = bd.bd_metrics(rates, psnrs, 0.8 * rates, psnrs, method)
        assert cheaper["bd_rate"] == pytest.approx(-20.0, abs=1e-6)
        # At equal rate the test curve is 3 * log2(1 / 0.8) dB higher.
        assert cheaper["bd_psnr"] == pytest.approx(3 * math.log2(1.25), abs=1e-6)
        dearer = bd.bd_metrics(rates, psnrs, 1.5 * rates, psnrs, method)
        assert dearer["bd_rate"] == pytest.approx(50.0, abs=1e-6)


def test_bd_rate_edge_cases():
    # Dominated points leave the curve; too few points or no overlap give NaN with a note.
    r, d = bd.pareto_front([0.1, 0.2, 0.3, 0.25], [30, 33, 32, 34])
    assert list(r) == [0.1, 0.2, 0.25] and list(d) == [30, 33, 34]
    one = bd.bd_metrics([0.1, 0.2], [30, 33], [0.1, 0.2], [31, 31], "akima")
    assert math.isnan(one["bd_rate"]) and one["note"]
    apart = bd.bd_metrics([0.1, 0.2], [30, 33], [1.0, 2.0], [40, 43], "akima")
    assert math.isnan(apart["bd_rate"]) and math.isnan(apart["bd_psnr"]) and "no common" in apart["note"]


def test_bd_rate_of_each_curve_against_itself_is_zero(bench):
    results = pd.read_csv(bench / "results.csv")
    table = bd.bd_table(results, include_self=True)
    itself = table[(table["test_codec"] == table["anchor_codec"]) & (table["test_setting"] == table["anchor_setting"])]
    assert len(itself) == 2 * 2  # x264 and x265, per video and averaged
    assert np.allclose(itself["bd_rate_psnr_rgb"], 0, atol=1e-9)
    assert np.allclose(itself["bd_psnr_psnr_rgb"], 0, atol=1e-9)
    written = pd.read_csv(bench / "bd_rate.csv")
    assert set(written["video"]) == {"clip.mkv", "average"}
    pair = written[(written["test_codec"] == "x265") & (written["anchor_codec"] == "x264")]
    assert len(pair) == 2 and pair["bd_rate_psnr_rgb"].notna().all()
    assert not ((written["test_codec"] == written["anchor_codec"])
                & (written["test_setting"] == written["anchor_setting"])).any()


def test_a_second_run_takes_every_point_from_the_cache(bench, clip, monkeypatch, capsys):
    before = pd.read_csv(bench / "results.csv")
    _forbid_encoding(monkeypatch)
    capsys.readouterr()
    assert rd.main([str(clip), "-o", str(bench), *SWEEP]) == 0
    assert "(0 measured, 8 cached)" in capsys.readouterr().out
    after = pd.read_csv(bench / "results.csv")
    pd.testing.assert_frame_equal(before, after)


def test_a_lost_point_is_the_only_one_recomputed(bench, clip, monkeypatch, capsys):
    results = pd.read_csv(bench / "results.csv")
    lost = results[results["codec"] == "enerv"].iloc[0]
    (bench / "cache" / f"{lost['key']}.json").unlink()
    import benchmarks.enerv

    calls = []
    real = benchmarks.enerv.compress_frames

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr("benchmarks.enerv.compress_frames", counting)
    monkeypatch.setattr("benchmarks.anchors.FFmpegCodec.encode", lambda *a, **k: pytest.fail("re-encoded an anchor"))
    capsys.readouterr()
    assert rd.main([str(clip), "-o", str(bench), *SWEEP]) == 0
    assert len(calls) == 1 and "(1 measured, 7 cached)" in capsys.readouterr().out
    record = json.loads((bench / "cache" / f"{lost['key']}.json").read_text())
    assert record["row"]["bytes"] == (bench / lost["file"]).stat().st_size


def test_dry_run_encodes_nothing_and_writes_nothing(clip, tmp_path, monkeypatch, capsys):
    _forbid_encoding(monkeypatch)
    out = tmp_path / "dry"
    assert rd.main([str(clip), "-o", str(out), "--dry-run", *SWEEP]) == 0
    text = capsys.readouterr().out
    assert text.count("would run") == 8 and "8 to run, 0 cached" in text
    assert not out.exists()


def test_dry_run_reports_cached_points(bench, clip, capsys):
    assert rd.main([str(clip), "-o", str(bench), "--dry-run", *SWEEP]) == 0
    assert "0 to run, 8 cached" in capsys.readouterr().out


@pytest.mark.parametrize("case", ["codec", "missing input", "not a video", "no parent", "file in the way",
                                  "no encoder", "bad point", "bad crf", "bad preset", "odd size"])
def test_bad_inputs_are_one_error_line_exit_2_and_nothing_written(case, clip, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    argv = [str(clip), "-o", str(out), *SWEEP]
    if case == "codec":
        argv += ["--codecs", "enerv,x266"]
    elif case == "missing input":
        argv[0] = str(tmp_path / "nope.mkv")
    elif case == "not a video":
        (tmp_path / "notes.txt").write_text("not a video")
        argv[0] = str(tmp_path / "notes.txt")
    elif case == "no parent":
        out = tmp_path / "missing" / "out"
        argv[2] = str(out)
    elif case == "file in the way":
        out.write_text("keep me")
    elif case == "no encoder":
        monkeypatch.setattr("benchmarks.plan.has_encoder", lambda name: name != "libx265")
    elif case == "bad point":
        argv += ["--enerv-points", "8:1.5"]
    elif case == "bad crf":
        argv += ["--crfs", "20,60"]
    elif case == "bad preset":
        argv += ["--enerv-presets", "no-such-preset"]
    elif case == "odd size":
        argv += ["--size", "47x31"]
    _forbid_encoding(monkeypatch)
    capsys.readouterr()
    assert run_command(rd.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    if case == "file in the way":
        assert out.read_text() == "keep me"
    else:
        assert not out.exists()


def _point_preset(name: str, point: str, epochs: int | None):
    return ENeRV(preset=with_fit_epochs(load_preset(name), epochs), curve=()).point_preset(parse_point(point))


def test_the_budget_scales_every_epoch_count_down_by_one_factor():
    preset = _point_preset("enerv-cpu-s", "6:0.2", epochs=None)
    plan = EpochPlan.of(preset)
    fit, pe, rd, qe = plan.as_list()
    steps = StepSeconds(fit=1.0, finetune=1.0)  # one step an epoch below: a second an epoch
    batch = preset.fit.batch_size
    assert budget_factor([plan], steps, batch, batch, budget=1000) == 1.0
    assert within_budget(plan, 1.0) is plan
    budget = (fit + pe + rd + qe) / 2
    factor = budget_factor([plan], steps, batch, batch, budget=budget)
    scaled = within_budget(plan, factor)
    assert scaled.as_list() == [max(1, math.floor(e * factor)) if e else 0 for e in (fit, pe, rd, qe)]
    assert estimate_seconds(scaled, steps, batch, batch) <= budget
    applied = scaled.apply(preset)
    assert applied.network == preset.network and applied.codec.bits == 6
    unpruned = _point_preset("enerv-cpu-s", "8:0", epochs=60)  # no rate term: no rate-distortion fine-tune
    assert EpochPlan.of(unpruned).as_list() == [60, 0, 0, round(load_preset("enerv-cpu-s").codec.qat_epochs / 2)]
    with_rate = _point_preset("enerv-cpu-s", "40", epochs=None)
    assert EpochPlan.of(with_rate).rd == load_preset("enerv-cpu-s").codec.rd_epochs > 0


def test_several_videos_get_per_video_and_averaged_bd_rates(tmp_path):
    paths = []
    for seed in (0, 1):
        paths.append(tmp_path / f"clip{seed}.mkv")
        write_video(paths[-1], smooth_clip(8, 32, 48, seed=seed))
    out = tmp_path / "two"
    argv = [*map(str, paths), "-o", str(out), "--codecs", "x264,x265", "--crfs", "20,32,44", "--anchor-presets",
            "medium", "--pix-fmts", "yuv420p", "--no-low-delay", "-q"]
    assert rd.main(argv) == 0
    results = pd.read_csv(out / "results.csv")
    assert sorted(set(results["video"])) == ["clip0.mkv", "clip1.mkv"] and len(results) == 12
    bd = pd.read_csv(out / "bd_rate.csv")
    pair = bd[(bd["test_codec"] == "x265") & (bd["anchor_codec"] == "x264")].set_index("video")
    assert pair.loc["average", "bd_rate_psnr_rgb"] == pytest.approx(
        pair.loc[["clip0.mkv", "clip1.mkv"], "bd_rate_psnr_rgb"].mean())
    assert pair.loc["average", "videos"] == "2/2"
    assert matplotlib.image.imread(out / "rd.png").shape[1] > 1500  # two panels and the average, two columns
    assert not (out / "time_to_quality.png").exists() and "E-NeRV was not run" in (out / "report.md").read_text()


def test_an_interrupted_point_exits_130_and_the_same_command_finishes_it(clip, tmp_path, monkeypatch, capsys):
    import benchmarks.enerv
    from compress.fit import FitInterrupted

    out = tmp_path / "interrupted"
    argv = [str(clip), "-o", str(out), *SWEEP, "--codecs", "enerv", "--enerv-points", "8:0"]

    def interrupted(frames, fps, preset, **kwargs):
        checkpoint = Path(kwargs["checkpoint"])
        checkpoint.write_bytes(b"not a checkpoint")  # what an interrupted fit leaves, here unusable
        raise FitInterrupted(checkpoint)

    with monkeypatch.context() as m:
        m.setattr(benchmarks.enerv, "compress_frames", interrupted)
        assert run_command(rd.main, argv) == 130
    assert "error: interrupted" in capsys.readouterr().err
    left = sorted(p.name for p in (out / "files" / "clip").iterdir())
    assert left == ["enerv-test-tiny-b8-p00.bin.ckpt", "enerv-test-tiny-b8-p00.bin.plan.json"]
    assert not (out / "results.csv").exists()
    # The rerun tries the checkpoint, finds it unusable, and runs the point from the start.
    assert rd.main(argv) == 0
    assert sorted(p.name for p in (out / "files" / "clip").iterdir()) == ["enerv-test-tiny-b8-p00.bin"]
    row = pd.read_csv(out / "results.csv").iloc[0]
    assert not row["resumed"] and row["bytes"] == (out / row["file"]).stat().st_size


@pytest.mark.slow
def test_anchors_in_a_process_pool_give_the_same_files(clip, tmp_path):
    argv = ["--codecs", "x264,x265", "--crfs", "20,32,44", "--anchor-presets", "medium", "--pix-fmts", "yuv420p",
            "--no-low-delay", "-q"]
    assert rd.main([str(clip), "-o", str(tmp_path / "serial"), *argv]) == 0
    assert rd.main([str(clip), "-o", str(tmp_path / "pool"), *argv, "--jobs", "2"]) == 0
    serial = pd.read_csv(tmp_path / "serial" / "results.csv")
    pool = pd.read_csv(tmp_path / "pool" / "results.csv")
    assert list(serial["bytes"]) == list(pool["bytes"]) and np.allclose(serial["psnr_rgb"], pool["psnr_rgb"])
    assert "2 at a time" in (tmp_path / "pool" / "report.md").read_text()


def test_the_report_of_a_run_is_the_report_rebuilt_from_its_folder(bench, tmp_path):
    from benchmarks import report

    assert report.main([str(bench / "results.csv"), "-o", str(tmp_path / "again")]) == 0
    for name in ("report.md", "bd_rate.csv", "time_to_quality.png"):
        assert (tmp_path / "again" / name).read_bytes() == (bench / name).read_bytes(), name
    summary = report.RunSummary.read(bench / "run.json")
    assert summary is not None and summary.measured + summary.cached == 8 and summary.command.startswith("enerv-bench ")


def test_every_row_states_its_codec_versions_and_how_it_was_timed(bench):
    results = pd.read_csv(bench / "results.csv")
    assert results["encoder_version"].str.len().gt(0).all()
    assert results["machine"].map(lambda text: "cpu count" in json.loads(text)).all()
    anchors, enerv = results[results["codec"] != "enerv"], results[results["codec"] == "enerv"]
    assert (anchors["own_encode_seconds"] == anchors["encode_seconds"]).all()
    assert np.allclose(enerv["encode_seconds"], enerv["own_encode_seconds"] + enerv["fit_seconds"])
    assert set(results["parallel_jobs"]) == {1}
    config = json.loads(anchors["config"].iloc[0])
    assert config["crf"] in (20, 32, 44) and config["library_version"] and config["ffmpeg"]


def test_two_points_differing_only_in_codec_settings_fit_once(clip, tmp_path, monkeypatch):
    import compress.encode
    from compress.video import compress_frames

    fits = []
    real = compress.encode.fit_network
    monkeypatch.setattr(compress.encode, "fit_network", lambda *a, **k: fits.append(1) or real(*a, **k))
    out = tmp_path / "shared"
    argv = [str(clip), "-o", str(out), "--codecs", "enerv", "--enerv-presets", "test-tiny", "--epochs", "6",
            "--enerv-points", "8:0,6:0.3", "--budget-seconds", "0", "-q"]
    assert rd.main(argv) == 0
    assert len(fits) == 1
    rows = pd.read_csv(out / "results.csv")
    assert sorted(rows["fit_reused"]) == [False, True] and rows["fit_key"].nunique() == 1
    assert rows["fit_seconds"].nunique() == 1 and (rows["own_encode_seconds"] < rows["encode_seconds"]).all()
    assert "(shared)" in (out / "report.md").read_text()
    # The point that took the shared fit is byte for byte the point fitted on its own.
    reused = rows[rows["fit_reused"]].iloc[0]
    preset = _point_preset("test-tiny", "6:0.3", epochs=6)
    data, _ = compress_frames(read_video(clip).frames, 24.0, preset, progress=False)
    assert (out / reused["file"]).read_bytes() == data
    # A lost point is measured again without fitting again; --force fits again, once.
    (out / "cache" / f"{reused['key']}.json").unlink()
    fits.clear()
    assert rd.main(argv) == 0 and fits == []
    assert rd.main(argv + ["--force"]) == 0 and len(fits) == 1


def test_a_budget_gives_every_point_of_a_curve_the_same_fitting_epochs():
    presets = [_point_preset("enerv-cpu-s", p, epochs=None) for p in ("8:0", "6:0.2", "5:0.4")]
    plans = [EpochPlan.of(p) for p in presets]
    assert len({p.total for p in plans}) == 2  # the unpruned point has no prune fine-tune
    steps, batch = StepSeconds(fit=1.0, finetune=1.0), presets[0].fit.batch_size
    factor = budget_factor(plans, steps, batch, batch, budget=100)
    scaled = [within_budget(p, factor) for p in plans]
    assert len({p.fit for p in scaled}) == 1 and scaled[0].fit < plans[0].fit
    assert max(p.total for p in scaled) <= 100
    assert budget_factor(plans, steps, batch, batch, budget=10_000) == 1.0


def test_points_are_labelled_codec_settings():
    # BITS:PRUNE is the quantizer of earlier versions: a bit depth and no rate term.
    point = parse_point("6:0.2")
    assert dict(point.settings) == {"quality": None, "bits": 6, "prune_ratio": 0.2}
    assert (point.label, point.token, point.knob_value) == ("6b/20%", "b6-p20", "-,6,0.2")
    preset = _point_preset("test-tiny", "5:0", epochs=None)
    assert (preset.codec.bits, preset.codec.prune_ratio, preset.codec.prune_epochs) == (5, 0.0, 0)
    assert preset.codec.quality is None
    # QUALITY alone: the rate knob, an alphabet as wide as the steps need, no pruning.
    point = parse_point("45")
    assert dict(point.settings) == {"quality": 45.0, "bits": None, "prune_ratio": 0.0}
    assert (point.label, point.token, point.knob_value) == ("q45", "q45", "45,-,0")
    assert parse_point("45:6:0.2").label == "q45/6b/20%"
    for bad in ("6:0.2:1", "x:0.2", "1:0.2", "17:0", "6:1.0", "6:-0.1", "101", "-5", "q", "50:8:0.2:1", ""):
        with pytest.raises(InputError, match="--enerv-points"):
            parse_point(bad)
