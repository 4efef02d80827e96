"""Ctrl-C during fitting keeps a checkpoint; --resume finishes with the same file."""

import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pipeline.video_writer import write_video
from tests.conftest import smooth_clip

EXE = shutil.which("enerv-compress", path=str(Path(sys.executable).parent))
ARGS = ["--preset", "test-tiny", "--epochs", "150", "--device", "cpu"]


def _interrupt_during_fit(cmd: list[str], signum: int, after: bytes = b"fit:") -> tuple[int, str]:
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stderr = bytearray()

    def pump():
        while chunk := proc.stderr.read1(4096):
            stderr.extend(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    deadline = time.monotonic() + 120
    while after not in stderr and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)  # some epochs into the fit
    proc.send_signal(signum)
    proc.wait(timeout=120)
    reader.join(timeout=10)
    return proc.returncode, stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, bytes]:
    folder = tmp_path_factory.mktemp("interrupt")
    source = folder / "clip.mkv"
    write_video(source, smooth_clip(8, 32, 48), fps=24)
    out = folder / "reference.bin"
    done = subprocess.run([EXE, source, "-o", out, *ARGS, "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return source, out.read_bytes()


# SIGTERM takes the same path as SIGINT (one handler turns both into a flag): it runs with the slow tests.
@pytest.mark.parametrize("signum", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)],
                         ids=["SIGINT", "SIGTERM"])
def test_interrupt_then_resume_gives_the_uninterrupted_result(reference, tmp_path, signum):
    source, expected = reference
    out = tmp_path / "out.bin"
    checkpoint = tmp_path / "out.bin.ckpt.d"  # one checkpoint scheme, one segment or many
    code, stderr = _interrupt_during_fit([EXE, str(source), "-o", str(out), *ARGS], signum)
    assert code == 130, stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("error: interrupted") and "--resume" in last, last
    assert "Traceback" not in stderr
    assert checkpoint.exists() and not out.exists()

    resumed = subprocess.run([EXE, source, "-o", out, *ARGS, "-q", "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert not checkpoint.exists()
    assert out.read_bytes() == expected


def test_resume_without_checkpoint_is_refused(tmp_path):
    source = tmp_path / "clip.mkv"
    write_video(source, smooth_clip(4, 32, 48), fps=24)
    proc = subprocess.run([EXE, source, "-o", tmp_path / "x.bin", *ARGS, "--resume"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: --resume") and len(proc.stderr.strip().splitlines()) == 1


def test_interrupted_segments_resume_with_the_finished_ones(reference, tmp_path):
    source, _ = reference
    cut = [*ARGS, "--segment-frames", "4"]
    expected = tmp_path / "expected.bin"
    done = subprocess.run([EXE, source, "-o", expected, *cut, "-q"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    out, folder = tmp_path / "out.bin", tmp_path / "out.bin.ckpt.d"
    code, stderr = _interrupt_during_fit([EXE, str(source), "-o", str(out), *cut], signal.SIGINT,
                                         after=b"segment 1/2")
    assert code == 130 and "Traceback" not in stderr, stderr
    assert "--resume" in stderr.strip().splitlines()[-1] and folder.is_dir() and not out.exists()
    resumed = subprocess.run([EXE, source, "-o", out, *cut, "--resume"], capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert "segment 1/2 (frames 0:4) taken from the checkpoint" in resumed.stderr
    assert out.read_bytes() == expected.read_bytes() and not folder.exists()
