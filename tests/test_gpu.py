"""The CUDA path: bf16 fitting and decoding on a GPU (skipped where there is none)."""

import numpy as np
import pytest

import cli
from decompress.decode import decode_frames, read_file_bytes
from pipeline.metrics import psnr
from pipeline.video_writer import write_video
from tests.conftest import smooth_clip

pytestmark = pytest.mark.gpu


def test_fit_on_cuda_and_decode_on_both_devices(tmp_path, capsys):
    frames = smooth_clip(8, 32, 48)
    source, out = tmp_path / "clip.mkv", tmp_path / "clip.bin"
    write_video(source, frames, fps=24)
    assert cli.compress_main([str(source), "-o", str(out), "--preset", "test-tiny", "--device", "cuda", "-q"]) == 0
    assert "on cuda" in capsys.readouterr().out
    data = read_file_bytes(out)
    on_gpu = decode_frames(data, device="cuda").frames
    on_cpu = decode_frames(data, device="cpu").frames
    # Same weights; float rounding may differ between devices by a level here and there.
    assert np.abs(on_gpu.astype(int) - on_cpu.astype(int)).max() <= 2
    assert psnr(on_gpu, frames) > 15
