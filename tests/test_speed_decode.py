"""benchmarks.speed's decoder figures: they run and describe what they measured."""

from __future__ import annotations

import json

import pytest

from benchmarks import speed


def test_decode_only_reports_every_step(capsys):
    assert speed.main(["--decode-only", "--preset", "test-tiny", "--size", "64x40", "--device", "cpu",
                       "--repeats", "2", "--decode-frames", "3"]) == 0
    decode = json.loads(capsys.readouterr().out)["decode"]
    assert (decode["preset"], decode["device"], decode["width"], decode["height"]) == ("test-tiny", "cpu", 64, 40)
    assert decode["render_frames"] == 3 and decode["repeats"] == 2
    for key in ("entropy_decode_seconds", "network_build_seconds", "render_frames_per_second",
                "batched_forward_frames_per_second", "entropy_decode_symbols_per_second"):
        assert decode[key] > 0, key
    assert decode["render_vs_batched"] == pytest.approx(
        decode["render_frames_per_second"] / decode["batched_forward_frames_per_second"])
    assert decode["bitstream_bytes"] > 0 and decode["parameters"] > 0
