"""The decoder as a reference decoder: the same frame however it is asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import cli
from compress.quantize import quantize_tensor
from decompress.decode import decode_frames, load_network
from pipeline.bitstream import StreamHeader, read_bitstream, write_bitstream
from pipeline.config import load_preset
from pipeline.geometry import resolve_network
from pipeline.networks import build_network
from pipeline.render import render_frames
from pipeline.video_io import read_video


def make_bitstream(width: int, height: int, frames: int, seed: int = 0, preset: str = "test-tiny") -> bytes:
    """A valid file without fitting: a randomly initialised network, quantized and coded."""
    network = resolve_network(load_preset(preset).network, width, height)
    torch.manual_seed(seed)
    model = build_network(network)
    with torch.no_grad():  # livelier frames than the initialisation gives
        for param in model.parameters():
            param.mul_(3.0)
    coded = [quantize_tensor(param.detach().numpy(), 8, None) for param in model.parameters()]
    data, _ = write_bitstream(StreamHeader(network, width, height, frames, 24.0, "tests"), coded)
    return data


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, bytes]:
    """12 frames of 48x32. With the former batch-of-8 renderer, 39 of its 78 ranges
    decoded differently from the full decode on the team's machine."""
    data = make_bitstream(48, 32, 12)
    path = tmp_path_factory.mktemp("decode") / "small.bin"
    path.write_bytes(data)
    return path, data


@pytest.fixture(scope="module")
def full(small) -> np.ndarray:
    return decode_frames(small[1]).frames


# --- the same frame however it is asked for ------------------------------------------------------------


def test_the_file_renders_varied_frames(full):
    """The other tests compare frames: they must not be flat or all alike."""
    assert full.shape == (12, 32, 48, 3)
    assert full.std() > 20 and len({f.tobytes() for f in full}) == 12


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_range_equals_the_full_decode(small, full, threads):
    """Every A:B of the file, with 1, 2 or 3 frames rendered at once, equals the full decode."""
    model = load_network(read_bitstream(small[1]))
    for start in range(12):
        for stop in range(start + 1, 13):
            part = render_frames(model, range(start, stop), 12, 32, 48, threads)
            assert np.array_equal(part, full[start:stop]), (start, stop, threads)
    for frame_range in [(0, 1), (10, 12), (5, None)]:
        part = decode_frames(small[1], frame_range, threads=threads).frames
        assert np.array_equal(part, full[frame_range[0] : frame_range[1]]), frame_range


def test_frames_do_not_depend_on_order_or_company(small, full):
    model = load_network(read_bitstream(small[1]))
    for request in ([11], [7, 2, 9, 2], list(range(11, -1, -1)), [0, 11, 5, 6, 5]):
        assert np.array_equal(render_frames(model, request, 12, 32, 48), full[request]), request


def test_the_thread_count_does_not_change_the_frames(small, full):
    """Each frame is computed by one thread whatever the intra-op thread count."""
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        alone = decode_frames(small[1]).frames
    finally:
        torch.set_num_threads(previous)
    assert torch.get_num_threads() == previous
    assert np.array_equal(alone, full)


def test_the_encoder_renders_what_the_decoder_writes(small, full):
    """compress_video measures PSNR on render_frames: the decoder's frames, bit for bit."""
    parsed = read_bitstream(small[1])
    assert np.array_equal(render_frames(load_network(parsed), range(12), 12, 32, 48), full)


def test_random_access_through_the_command(small, full, tmp_path):
    path, _ = small
    assert cli.decompress_main([str(path), "-o", str(tmp_path / "part.mkv"), "--frames", "10:12"]) == 0
    assert np.array_equal(read_video(tmp_path / "part.mkv").frames, full[10:12])
    assert cli.decompress_main([str(path), "-o", str(tmp_path / "png") + "/", "--frames", "3:5", "--threads", "1"]) == 0
    assert np.array_equal(read_video(tmp_path / "png").frames, full[3:5])
