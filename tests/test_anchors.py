"""The anchor registry and the AV1/VVC anchors (SVT-AV1, libaom, VVenC): each encodes, decodes
and is measured by Codec.run on a tiny clip; an anchor this ffmpeg lacks is skipped (here) or
refused with one error line (enerv-bench, when asked for by name)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import smooth_clip

from benchmarks import rd
from benchmarks.anchors import FFmpegCodec, RatePoint, encoder_version
from benchmarks.codec import SourceClip
from benchmarks.curves import curve_label
from benchmarks.registry import ANCHORS, chroma_label
from benchmarks.settings import parse_settings
from pipeline.cli_common import run_command
from pipeline.ffmpeg import encoder_pix_fmts, has_encoder
from pipeline.metrics import psnr
from pipeline.video_writer import write_video

NEW = ("svtav1", "aom", "vvenc")
# What each command must hold: the rate parameter, the preset option and the codec's own flags.
EXPECTED_FLAGS = {"svtav1": ["-crf", "-preset 8"], "aom": ["-crf", "-cpu-used 6", "-usage good", "-b:v 0"],
                  "vvenc": ["-qp", "-preset faster", "filter_units=remove_types=20"]}
FAST_PRESET = {"svtav1": "8", "aom": "6", "vvenc": "faster"}


def _require(name: str) -> None:
    if not has_encoder(ANCHORS[name].encoder):
        pytest.skip(f"this ffmpeg has no {ANCHORS[name].encoder}")


@pytest.fixture(scope="module")
def tiny():
    """6 frames of 64x48: AV1 and VVC code it (both pad to their block sizes and crop back)."""
    return SourceClip(smooth_clip(6, 48, 64), 24.0, Path("tiny.mkv"))


@pytest.mark.parametrize("name", NEW)
def test_each_new_anchor_encodes_decodes_and_is_measured_like_the_others(name, tiny, tmp_path):
    _require(name)
    spec = ANCHORS[name]
    pix_fmt = next(f for f in spec.chroma.values() if f in encoder_pix_fmts(spec.encoder))
    low, high = spec.rates["quick"][1], spec.rates["quick"][3]
    codec = FFmpegCodec(anchor=name, preset=FAST_PRESET[name], pix_fmt=pix_fmt, rates=(low, high),
                        library_version=encoder_version(spec.encoder))
    points = [codec.run(tiny, p, tmp_path / codec.file_name(p)) for p in codec.points()]
    for point, p in zip(points, codec.points()):
        path = tmp_path / codec.file_name(p)
        assert path.suffix == spec.extension and point.bytes == path.stat().st_size  # the whole file
        assert (point.codec, point.knob, point.knob_value) == (name, spec.knob, p.value)
        assert 10 < point.psnr_rgb < 60 and 10 < point.psnr_yuv < 70 and point.ms_ssim is None
        frames = codec.decode(path, 64, 48)
        assert frames.shape == tiny.frames.shape and psnr(frames, tiny.frames) == pytest.approx(point.psnr_rgb)
        for flag in EXPECTED_FLAGS[name]:
            assert flag in point.command, flag
        assert point.config[spec.knob] == p.value and point.config["library_version"] not in ("", "unknown")
    assert points[0].bytes > points[1].bytes and points[0].psnr_rgb > points[1].psnr_rgb  # more rate, more quality
    assert point.details.crf == (p.value if spec.knob == "crf" else None)
    assert point.details.qp == (p.value if spec.knob == "qp" else None)


def test_every_anchor_is_registered_once_with_what_the_benchmark_reads():
    for name, spec in ANCHORS.items():
        assert spec.name == name and spec.encoder.startswith("lib") and spec.extension.startswith(".")
        for mode in ("quick", "full"):
            assert set(spec.default_presets[mode]) <= set(spec.presets)
            assert all(spec.knob_range[0] <= v <= spec.knob_range[1] for v in spec.rates[mode])
        assert set(spec.chroma) <= {"yuv420p", "yuv444p"} and len(spec.colours) == 3
        setting = f"{spec.setting_token(spec.presets[0])}-{next(iter(spec.chroma.values()))}"
        assert curve_label(name, setting).startswith(spec.title)
    assert curve_label("vvenc", "medium-yuv420p10le") == "VVenC medium 4:2:0 10-bit"
    assert curve_label("svtav1", "p6-yuv420p") == "SVT-AV1 preset 6 4:2:0"
    assert curve_label("x264", "medium-yuv444p-lowdelay") == "x264 medium 4:4:4 low-delay"
    assert chroma_label("yuv420p10le") == "4:2:0 10-bit" and RatePoint(32, "qp").label == "qp32"


def test_versions_come_from_the_libraries():
    for spec in ANCHORS.values():
        version = encoder_version(spec.encoder)
        if not has_encoder(spec.encoder):
            assert version == "not available"
        else:
            assert version and version != "unknown", spec.name


def test_presets_and_rates_apply_per_codec(tmp_path):
    argv = ["clip.mkv", "-o", str(tmp_path / "out"), "--codecs", "x264,svtav1,vvenc", "--quick"]
    s = parse_settings([*argv, "--anchor-presets", "svtav1:4,svtav1:8,slow", "--crfs", "vvenc:30,vvenc:40"])
    assert s.anchor_presets == {"x264": ("slow",), "svtav1": ("4", "8"), "vvenc": ("slow",)}
    assert s.rates["vvenc"] == (30, 40) and s.rates["x264"] == ANCHORS["x264"].rates["quick"]
    assert s.rates["svtav1"] == ANCHORS["svtav1"].rates["quick"] and s.explicit_codecs
    full = parse_settings(argv[:-1] + ["--crfs", "20,30"])
    assert full.anchor_presets["svtav1"] == ANCHORS["svtav1"].default_presets["full"]
    assert {v for v in full.rates.values()} == {(20, 30)}
    assert not parse_settings(argv[:3]).explicit_codecs


@pytest.fixture(scope="module")
def clip_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("anchors") / "clip.mkv"
    write_video(path, smooth_clip(6, 48, 64))
    return path


@pytest.mark.parametrize("case", ["lacks encoder", "no such preset", "rate out of range", "no 4:4:4",
                                  "not an anchor of this run"])
def test_an_anchor_that_cannot_run_as_asked_is_one_error_line(case, clip_file, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    argv = [str(clip_file), "-o", str(out), "--codecs", "x264,svtav1", "--crfs", "30,40", "-q"]
    if case == "lacks encoder":
        monkeypatch.setattr("benchmarks.plan.has_encoder", lambda name: name != "libsvtav1")
    elif case == "no such preset":
        argv += ["--anchor-presets", "svtav1:medium"]
    elif case == "rate out of range":
        argv[-2] = "x264:30,svtav1:70"
    elif case == "no 4:4:4":
        monkeypatch.setattr("benchmarks.plan.encoder_pix_fmts", lambda name: ("yuv420p",))
        argv += ["--pix-fmts", "yuv444p"]
    elif case == "not an anchor of this run":
        argv += ["--anchor-presets", "aom:4"]
    assert run_command(rd.main, argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    assert not out.exists()


def test_an_anchor_of_the_default_set_that_this_ffmpeg_lacks_is_left_out_with_a_note(clip_file, tmp_path,
                                                                                      monkeypatch, capsys):
    monkeypatch.setattr("benchmarks.plan.has_encoder", lambda name: name != "libvvenc")
    monkeypatch.setattr("benchmarks.plan.encoder_pix_fmts", lambda name: ("yuv420p",))
    argv = [str(clip_file), "-o", str(tmp_path / "out"), "--enerv-presets", "test-tiny", "--dry-run", "--quick"]
    assert rd.main(argv) == 0
    captured = capsys.readouterr()
    assert "note: vvenc is left out: this ffmpeg" in captured.err and "VVenC" not in captured.out
    assert "note: aom yuv444p is left out: its libaom-av1 takes yuv420p" in captured.err
    assert "libaom cpu-used 6 4:2:0" in captured.out and "libaom cpu-used 6 4:4:4" not in captured.out
    assert "SVT-AV1 preset 6" in captured.out and "E-NeRV test-tiny" in captured.out


def test_the_container_is_the_cheapest_that_holds_the_stream(tiny, tmp_path):
    """AV1 in a raw OBU stream, VVC in a raw Annex B stream: no container bytes beside the pictures."""
    _require("svtav1")
    codec = FFmpegCodec(anchor="svtav1", preset="8", rates=(40,))
    point = codec.points()[0]
    codec.encode(tiny, point, tmp_path / "a.obu")
    data = (tmp_path / "a.obu").read_bytes()
    assert data[0] >> 3 & 0xF == 2  # the stream starts with a temporal delimiter OBU (type 2), no header
    frames = codec.decode(tmp_path / "a.obu", 64, 48)
    assert frames.shape == tiny.frames.shape and frames.dtype == np.uint8
