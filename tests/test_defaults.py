"""What a user meets on real material: a plain command never refuses a valid clip, a time budget is
re-planned from the measured pace, and the final measurement streams frame by frame."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import cli
from compress.plan import BudgetPacer, StepSeconds
from pipeline.epochs import EpochPlan
from pipeline.video_writer import write_video
from tests.conftest import smooth_clip

ROOT = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --- defaults never refuse a valid video ----------------------------------------------------------


@pytest.mark.parametrize("frames,width,height", [(8, 160, 96), (1, 64, 48), (3, 37, 29), (2, 16, 16)],
                         ids=["short-160x96", "one-frame", "odd-size", "tiny"])
def test_a_plain_command_serves_small_short_odd_and_one_frame_clips(tmp_path, capsys, frames, width, height):
    source, out, summary = tmp_path / "clip.mkv", tmp_path / "clip.bin", tmp_path / "clip.json"
    write_video(source, smooth_clip(frames, height, width), fps=24)
    code = cli.compress_main([str(source), "-o", str(out), "--epochs", "2", "-q", "--json", str(summary)])
    err = capsys.readouterr().err
    assert code == 0, err
    result = json.loads(summary.read_text())
    assert out.stat().st_size == result["bytes"] and result["frames"] == frames
    assert "error" not in err
    if result["notices"]:  # a default raised to the smallest file is said once, and the file holds it
        assert err.count("note: the default target") == 1
        assert result["target_bytes"] > frames * width * height * 0.1 / 8


def test_the_default_target_of_a_short_clip_is_raised_to_the_smallest_file_with_one_notice(tmp_path, capsys):
    source, out = tmp_path / "clip.mkv", tmp_path / "clip.bin"
    write_video(source, smooth_clip(8, 96, 160), fps=24)
    assert cli.compress_main([str(source), "-o", str(out), "--epochs", "2", "-q"]) == 0
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if line.startswith("note: the default target")]
    assert len(notes) == 1 and "smallest file" in notes[0], err
    assert out.exists()


def test_an_impossible_target_the_user_gives_is_still_refused_in_one_line(tmp_path, capsys):
    source, out = tmp_path / "clip.mkv", tmp_path / "clip.bin"
    write_video(source, smooth_clip(8, 96, 160), fps=24)
    assert cli.compress_main([str(source), "-o", str(out), "--epochs", "2", "--target-size", "500"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "below the smallest file" in err
    assert err.count("500 bytes") == 1  # the size said once
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv"]


# --- the time budget follows the measured pace ----------------------------------------------------


def _pacer(seconds_left: float) -> BudgetPacer:
    plan = EpochPlan(100, 0, 20, 10)  # one step an epoch below
    return BudgetPacer(time.perf_counter() + seconds_left, plan, StepSeconds(fit=0.1, finetune=0.1), 2, 2)


def test_a_slower_pace_than_planned_gives_fewer_steps_and_a_faster_one_more():
    # The plan: 130 steps of 0.1 s = 13 s. At half the planned speed only about half fit.
    slow = _pacer(13.0)
    total = slow.total_steps("fit", 10, 100, seconds=2.0, timed=10)
    assert 35 <= total <= 55 and slow.stage_steps("rd") < 20
    fast = _pacer(13.0)
    total = fast.total_steps("fit", 20, 100, seconds=1.0, timed=20)  # twice the planned speed
    assert total > 150 and fast.stage_steps("rd") > 30
    # A start too short to measure leaves the plan alone; a deadline already passed stops the stage.
    assert _pacer(13.0).total_steps("fit", 1, 100, seconds=0.1, timed=1) == 100
    assert _pacer(-1.0).total_steps("fit", 10, 100, seconds=2.0, timed=10) == 10


# --- the final measurement streams ----------------------------------------------------------------

_MEASURE_SCRIPT = """
import json, resource, sys
import numpy as np
from compress.assemble import measure
from pipeline.bitstream import read_bitstream
from tests.test_decode import make_bitstream
width, height, few, many = 640, 360, int(sys.argv[1]), int(sys.argv[2])
source = np.full((many, height, width, 3), 128, np.uint8)
peaks = []
for count in (few, many):
    parsed = read_bitstream(make_bitstream(width, height, count))
    measure(parsed, parsed.header.network, width, height, count, lambda span: source[span.first:span.stop], "cpu")
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps(peaks))
"""


def test_the_final_measurement_holds_a_few_rendered_frames_at_a_time():
    """Measuring 96 frames of 640x360 (66 MB of RGB) needs no more memory than measuring 8."""
    few, many = 8, 96
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", _MEASURE_SCRIPT, str(few), str(many)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    few_peak, many_peak = json.loads(proc.stdout)
    frames_bytes = many * 640 * 360 * 3
    # Keeping the rendered frames would add their size; a generous bound of an eighth of it.
    assert many_peak - few_peak < frames_bytes / 8, (few_peak, many_peak, frames_bytes)
    assert np.isfinite(few_peak)
