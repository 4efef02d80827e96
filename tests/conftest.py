"""Shared fixtures; slow tests run only with --runslow, GPU tests only with a GPU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

torch.set_num_threads(2)


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_collection_modifyitems(config, items):
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)


def smooth_clip(frames: int = 8, height: int = 32, width: int = 48, seed: int = 0) -> np.ndarray:
    """A small, smooth, moving RGB clip (uint8 [T,H,W,3]) that a tiny network can learn."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    phases = rng.uniform(0, 2 * np.pi, size=3)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        for c in range(3):
            wave = np.sin(x / width * 2 * np.pi + phases[c] + 0.3 * t) * np.cos(y / height * np.pi + 0.2 * t * (c + 1))
            out[t, :, :, c] = np.clip(127.5 + 100 * wave, 0, 255).astype(np.uint8)
    return out


@pytest.fixture
def one_torch_thread():
    """Tiny clips: a second intra-op thread only waits on the first (badly so on a busy machine)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def tiny_clip() -> np.ndarray:
    return smooth_clip()


def mux_audio_and_subtitles(video, output) -> None:
    """``output`` (.mkv): ``video``'s stream copied, with a sine tone and one subtitle beside it."""
    import subprocess

    from pipeline.ffmpeg import ffmpeg_binary

    subtitles = output.with_suffix(".srt")
    subtitles.write_text("1\n00:00:00,000 --> 00:00:00,200\nhello\n")
    subprocess.run([ffmpeg_binary(), "-y", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(video),
                    "-f", "lavfi", "-i", "sine=duration=0.5", "-i", str(subtitles), "-map", "0:v", "-map", "1:a",
                    "-map", "2:s", "-c:v", "copy", "-c:a", "pcm_s16le", "-c:s", "srt", str(output)], check=True)
