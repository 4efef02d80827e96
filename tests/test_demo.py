"""make demo, on a tiny clip: the library's entry points, the decoded file measured on its own."""

from __future__ import annotations

import json

from conftest import smooth_clip

from benchmarks import demo
from decompress.decode import decode_frames, read_file_bytes
from pipeline.video_io import read_video
from pipeline.video_writer import write_video


def test_demo_compresses_decodes_and_compares_with_x264(tmp_path, monkeypatch, capsys):
    clip = tmp_path / "clip.mkv"
    write_video(clip, smooth_clip(8, 32, 48), fps=24)
    monkeypatch.setattr(demo, "CLIP", clip)
    monkeypatch.setattr(demo, "OUT", tmp_path / "out")
    monkeypatch.setattr(demo, "PRESET", "test-tiny")
    monkeypatch.setattr(demo, "TARGET_BPP", 15.0)  # a tiny clip's file is mostly header
    assert demo.main([]) == 0
    out = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "bunny.json").read_text())
    data = read_file_bytes(tmp_path / "out" / "bunny.bin")
    assert summary["bytes"] == len(data) and summary["output"] == str(tmp_path / "out" / "bunny.bin")
    decoded = read_video(tmp_path / "out" / "bunny_decoded.mkv").frames
    assert (decoded == decode_frames(data).frames).all()
    assert abs(summary["bytes"] / summary["target_bytes"] - 1) <= 0.10 and "from the target" in out
    assert "| E-NeRV (this tool) |" in out and "| x264 medium, yuv444p" in out and "measured independently" in out
