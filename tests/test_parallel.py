"""Segment-parallel encoding under torchrun: the same file whatever the number of processes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from compress.parallel import SINGLE, Ranks, launched_by_torchrun, ranks_from_environment
from pipeline.errors import InputError
from pipeline.video_writer import write_video
from tests.conftest import smooth_clip

EXE = shutil.which("enerv-compress", path=str(Path(sys.executable).parent))
ARGS = ["--preset", "test-tiny", "--epochs", "2", "--device", "cpu"]


def test_ranks_share_out_the_segments_in_turn():
    assert SINGLE.leader and SINGLE.label == "" and all(SINGLE.owns(i) for i in range(5))
    second = Ranks(rank=1, world=3, local_rank=1, local_world=3)
    assert [i for i in range(8) if second.owns(i)] == [1, 4, 7]
    assert not second.leader and second.label == "rank 1: "
    assert SINGLE.gather([(0, "a")]) == [(0, "a")] and SINGLE.from_leader(True) is True


def test_the_environment_names_the_process(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not launched_by_torchrun() and ranks_from_environment() == SINGLE
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert launched_by_torchrun() and ranks_from_environment() == Ranks(3, 4, 1, 2)
    monkeypatch.setenv("RANK", "4")
    with pytest.raises(InputError, match="RANK 4"):
        ranks_from_environment()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(InputError, match="WORLD_SIZE"):
        launched_by_torchrun()


def _environment() -> dict[str, str]:
    """One thread per process, and none of an outer torchrun's variables."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")}
    return {**env, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.mark.parametrize("segment_frames", [4, None], ids=["two segments", "one segment"])
def test_two_ranks_write_the_file_one_process_writes(tmp_path, segment_frames):
    source = tmp_path / "clip.mkv"
    write_video(source, smooth_clip(8, 32, 48), fps=24)
    cut = ["--segment-frames", str(segment_frames)] if segment_frames else []
    alone = subprocess.run([EXE, source, "-o", tmp_path / "one.bin", *ARGS, *cut, "-q"], capture_output=True,
                           text=True, env=_environment(), timeout=300)
    assert alone.returncode == 0, alone.stderr
    # The console script itself, as the README says to launch it.
    launched = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                               EXE, str(source), "-o", str(tmp_path / "two.bin"), *ARGS, *cut],
                              capture_output=True, text=True, env=_environment(), timeout=300)
    assert launched.returncode == 0, launched.stderr
    assert (tmp_path / "two.bin").read_bytes() == (tmp_path / "one.bin").read_bytes()
    # Rank 0's summary only: the other rank prints nothing on standard output.
    assert len(launched.stdout.splitlines()) == len(alone.stdout.splitlines()) == 3
    assert launched.stdout.count("wrote ") == 1
    if segment_frames:
        assert "rank 1: segment 2/2 (frames 4:8) encoded" in launched.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mkv", "one.bin", "two.bin"]
