"""VMAF: libvmaf through ffmpeg on the decoded frames, a column of results.csv, a BD table and a
figure; an empty column with the reason where it is off or this ffmpeg has no libvmaf."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import smooth_clip

from benchmarks import rd
from benchmarks.vmaf import VMAF_MODEL, measure_vmaf, vmaf_unavailable
from pipeline.video_writer import write_video

needs_vmaf = pytest.mark.skipif(bool(vmaf_unavailable()), reason=vmaf_unavailable() or "libvmaf is there")
ANCHORS = ["--codecs", "x264", "--crfs", "20,32,44", "--anchor-presets", "medium", "--pix-fmts", "yuv420p",
           "--no-low-delay", "-q"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    path = tmp_path_factory.mktemp("vmaf") / "clip.mkv"
    write_video(path, smooth_clip(6, 48, 64))
    return path


@needs_vmaf
def test_vmaf_falls_as_the_frames_get_worse():
    frames = smooth_clip(6, 48, 64)
    noise = np.random.default_rng(0).integers(-40, 41, frames.shape)
    worse = np.clip(frames.astype(int) + noise, 0, 255).astype(np.uint8)
    same, noisy = measure_vmaf(frames, frames, 24.0), measure_vmaf(worse, frames, 24.0)
    assert same.mean > 90 and noisy.mean < same.mean - 10
    assert same.model.startswith(f"{VMAF_MODEL} (libvmaf ") and "unknown" not in same.model


@needs_vmaf
def test_a_run_has_a_vmaf_column_table_and_figure(clip, tmp_path):
    out = tmp_path / "run"
    assert rd.main([str(clip), "-o", str(out), *ANCHORS, "--codecs", "x264,x265"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert results["vmaf"].between(0, 100).all() and (results["vmaf_model"].str.startswith(VMAF_MODEL)).all()
    bd = pd.read_csv(out / "bd_rate.csv")
    assert {"bd_rate_vmaf", "bd_vmaf"} <= set(bd.columns) and bd["bd_rate_vmaf"].notna().any()
    text = (out / "report.md").read_text()
    assert "VMAF (BD-rate / BD-VMAF" in text and "rd_vmaf.png" in text and "libvmaf" in text
    assert (out / "rd_vmaf.png").read_bytes().startswith(b"\x89PNG")


@needs_vmaf
def test_no_vmaf_leaves_the_column_empty_and_a_later_run_scores_the_kept_files(clip, tmp_path, monkeypatch,
                                                                                capsys):
    out = tmp_path / "run"
    assert rd.main([str(clip), "-o", str(out), *ANCHORS, "--no-vmaf"]) == 0
    results = pd.read_csv(out / "results.csv")
    assert results["vmaf"].isna().all() and set(results["vmaf_model"]) == {"not measured (--no-vmaf)"}
    assert "bd_rate_vmaf" not in pd.read_csv(out / "bd_rate.csv").columns and not (out / "rd_vmaf.png").exists()
    assert "No point has a VMAF score (not measured (--no-vmaf))" in (out / "report.md").read_text()
    # The same sweep with VMAF: nothing is encoded again, the kept files are decoded and scored.
    monkeypatch.setattr("benchmarks.anchors.FFmpegCodec.encode", lambda *a, **k: pytest.fail("encoded again"))
    capsys.readouterr()
    assert rd.main([str(clip), "-o", str(out), *ANCHORS]) == 0
    assert "(0 measured, 3 cached)" in capsys.readouterr().out
    again = pd.read_csv(out / "results.csv")
    assert again["vmaf"].notna().all() and (again["bytes"] == results["bytes"]).all()


def test_without_libvmaf_the_column_is_empty_and_the_report_says_why(clip, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("benchmarks.vmaf.has_filter", lambda name: False)
    out = tmp_path / "run"
    assert rd.main([str(clip), "-o", str(out), *ANCHORS]) == 0
    assert "note: VMAF not measured: this ffmpeg" in capsys.readouterr().err
    results = pd.read_csv(out / "results.csv")
    assert results["vmaf"].isna().all() and results["vmaf_model"].str.contains("has no libvmaf filter").all()
    assert "has no libvmaf filter" in (out / "report.md").read_text()
