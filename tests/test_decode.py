"""The decoder as a reference decoder: the same frame however it is asked for, frames that
stream (into files, into other tools through standard output), bounded memory, clean failures."""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import cli
from compress.quantize import LearnedQuantizer, quantize_network
from decompress.decode import decode_frames
from decompress.frame_source import FrameSource, Segment, load_network
from pipeline.bitstream import StreamHeader, read_bitstream, write_bitstream
from pipeline.config import load_preset
from pipeline.errors import InputError
from pipeline.ffmpeg import ffmpeg_binary
from pipeline.geometry import resolve_network
from pipeline.networks import build_network
from pipeline.render import FrameRenderer, render_frames
from pipeline.video_io import read_video

BIN_DIR = Path(sys.executable).parent


def make_bitstream(width: int, height: int, frames: int, seed: int = 0, preset: str = "test-tiny") -> bytes:
    """A valid file without fitting: a randomly initialised network, quantized and coded."""
    network = resolve_network(load_preset(preset).network, width, height)
    torch.manual_seed(seed)
    model = build_network(network)
    with torch.no_grad():  # livelier frames than the initialisation gives
        for param in model.parameters():
            param.mul_(3.0)
    coded = quantize_network(model, LearnedQuantizer(dict(model.named_parameters()), bits=8))
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


def decompress(*args, stdout=subprocess.PIPE, timeout=120) -> subprocess.CompletedProcess:
    exe = shutil.which("enerv-decompress", path=str(BIN_DIR))
    return subprocess.run([exe, *map(str, args)], stdout=stdout, stderr=subprocess.PIPE, timeout=timeout,
                          stdin=subprocess.DEVNULL)


# --- the same frame however it is asked for ------------------------------------------------------------


def test_the_file_renders_varied_frames(full):
    """The other tests compare frames: they must not be flat or all alike."""
    assert full.shape == (12, 32, 48, 3)
    assert full.std() > 20 and len({f.tobytes() for f in full}) == 12


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_every_range_equals_the_full_decode(small, full, threads):
    """Every A:B of the file, with 1, 2 or 3 frames rendered at once, equals the full decode."""
    source = FrameSource.from_parsed(read_bitstream(small[1]), threads=threads)
    for start in range(12):
        for stop in range(start + 1, 13):
            part = np.stack(list(source.frames(range(start, stop))))
            assert np.array_equal(part, full[start:stop]), (start, stop, threads)
    for frame_range in [(0, 1), (10, 12), (5, None)]:
        part = decode_frames(small[1], frame_range, threads=threads).frames
        assert np.array_equal(part, full[frame_range[0] : frame_range[1]]), frame_range


def test_frames_do_not_depend_on_order_or_company(small, full):
    source = FrameSource.from_parsed(read_bitstream(small[1]))
    for request in ([11], [7, 2, 9, 2], list(range(11, -1, -1)), [0, 11, 5, 6, 5]):
        assert np.array_equal(np.stack(list(source.frames(request))), full[request]), request


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


# --- segments: which network renders frame i ---------------------------------------------------------


def _tiny_model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_network(resolve_network(load_preset("test-tiny").network, 48, 32))
    with torch.no_grad():
        for param in model.parameters():
            param.mul_(3.0)
    return model.eval()


def test_each_frame_comes_from_its_segment_at_its_local_index():
    models = {"a": _tiny_model(1), "b": _tiny_model(2), "c": _tiny_model(3)}
    builds = []

    def builder(name):
        def build():
            builds.append(name)
            return models[name]
        return build

    segments = [Segment(0, 5, builder("a")), Segment(5, 1, builder("b")), Segment(6, 7, builder("c"))]
    source = FrameSource(segments, 48, 32)
    assert [source.locate(i) for i in (0, 4, 5, 6, 12)] == [(0, 0), (0, 4), (1, 0), (2, 0), (2, 6)]
    for outside in (-1, 13):
        with pytest.raises(InputError, match="outside"):
            source.locate(outside)
    request = [3, 4, 5, 6, 12, 0]
    got = list(source.frames(request))
    expected = [render_frames(models[name], [local], count, 32, 48)[0]
                for name, local, count in [("a", 3, 5), ("a", 4, 5), ("b", 0, 1), ("c", 0, 7), ("c", 6, 7),
                                           ("a", 0, 5)]]
    assert all(np.array_equal(g, e) for g, e in zip(got, expected, strict=True))
    assert builds == ["a", "b", "c", "a"]  # built when first needed, one network at a time


def test_segments_must_tile_the_video():
    build = _tiny_model  # never called
    with pytest.raises(InputError, match="segments"):
        FrameSource([Segment(0, 4, build), Segment(5, 4, build)], 48, 32)
    with pytest.raises(InputError, match="segments"):
        FrameSource([Segment(1, 4, build)], 48, 32)


# --- frames into other tools: a Y4M stream on standard output -----------------------------------------


def parse_y4m(data: bytes) -> tuple[dict[str, str], np.ndarray]:
    """Header fields and the [N,3,H,W] planes of a 4:4:4 Y4M stream; fails on anything else."""
    header, _, body = data.partition(b"\n")
    fields = dict((f[:1].decode(), f[1:].decode()) for f in header.split(b" ")[1:])
    assert header.startswith(b"YUV4MPEG2 ") and fields["C"].startswith("444"), header
    width, height = int(fields["W"]), int(fields["H"])
    size = 3 * width * height
    frames, pos = [], 0
    while pos < len(body):
        assert body[pos : pos + 6] == b"FRAME\n", pos
        frames.append(np.frombuffer(body[pos + 6 : pos + 6 + size], np.uint8).reshape(3, height, width))
        pos += 6 + size
    assert pos == len(body), "trailing bytes after the last frame"
    return fields, np.stack(frames)


def test_stdout_holds_a_y4m_stream_and_nothing_else(small, full):
    path, _ = small
    proc = decompress(path, "-o", "-", "--frames", "2:9")
    assert proc.returncode == 0, proc.stderr
    fields, planes = parse_y4m(proc.stdout)
    assert (fields["W"], fields["H"], fields["F"], fields["X"]) == ("48", "32", "24:1", "COLORRANGE=LIMITED")
    assert planes.shape == (7, 3, 32, 48)
    # BT.601, limited range: the conversion stated in the README and --help.
    rgb = full[2:9].astype(np.float64) / 255
    luma = 16 + 219 * (rgb @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(planes[:, 0].astype(np.float64) - luma).max() <= 1.0
    lines = proc.stderr.decode().strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("wrote a Y4M stream") and "BT.601" in lines[0], lines


def test_stdout_stream_feeds_ffmpeg(small, full):
    path, _ = small
    producer = subprocess.Popen([shutil.which("enerv-decompress", path=str(BIN_DIR)), str(path), "-o", "-"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    consumer = subprocess.run([ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-i", "-",
                               "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                              stdin=producer.stdout, capture_output=True, timeout=120)
    producer.stdout.close()
    assert producer.wait(timeout=120) == 0, producer.stderr.read()
    producer.stderr.close()
    assert consumer.returncode == 0, consumer.stderr
    frames = np.frombuffer(consumer.stdout, np.uint8).reshape(-1, 32, 48, 3)
    assert frames.shape[0] == 12
    # ffmpeg reads untagged Y4M as BT.601, so the round trip only rounds: within 2 levels.
    error = np.abs(frames.astype(int) - full)
    assert error.max() <= 2 and error.mean() < 0.7


@pytest.fixture(scope="module")
def larger(tmp_path_factory) -> Path:
    """64 frames of 96x64: 1.2 MB of Y4M, far more than a pipe holds."""
    path = tmp_path_factory.mktemp("larger") / "larger.bin"
    path.write_bytes(make_bitstream(96, 64, 64))
    return path


def test_a_reader_that_closes_early_ends_the_decode_quietly(larger):
    """| head -c 100: exit 141 as a command killed by SIGPIPE, nothing on stderr."""
    producer = subprocess.Popen([shutil.which("enerv-decompress", path=str(BIN_DIR)), str(larger), "-o", "-"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    assert producer.stdout.read(100).startswith(b"YUV4MPEG2 ")
    producer.stdout.close()
    _, err = producer.communicate(timeout=120)
    assert producer.returncode == 141, err
    assert err == b""


def test_the_shell_sees_status_141(larger):
    if shutil.which("bash") is None:
        pytest.skip("no bash")
    exe = shutil.which("enerv-decompress", path=str(BIN_DIR))
    proc = subprocess.run(["bash", "-c", f"'{exe}' '{larger}' -o - | head -c 100 > /dev/null; "
                                         'echo "${PIPESTATUS[0]}"'], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip() == "141" and proc.stderr == "", (proc.stdout, proc.stderr)


def test_info_into_a_closed_pipe_is_quiet(small):
    path, _ = small
    proc = subprocess.run(["bash", "-c", f"'{shutil.which('enerv-decompress', path=str(BIN_DIR))}' '{path}' --info "
                                         '| head -c 1 > /dev/null; echo "${PIPESTATUS[0]}"'],
                          capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() in ("0", "141") and proc.stderr == "", (proc.stdout, proc.stderr)


def test_stdout_on_a_terminal_is_refused(small):
    path, _ = small
    leader, follower = pty.openpty()
    try:
        proc = decompress(path, "-o", "-", stdout=follower)
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith("error: -o - writes a binary Y4M stream")


# --- outputs stay atomic ------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["out.mkv", "frames/", "%03d.png"])
def test_an_interrupted_decode_leaves_nothing_behind(small, tmp_path, monkeypatch, capsys, target):
    path, _ = small
    (tmp_path / "out.mkv").write_bytes(b"previous result")
    rendered = []
    real = FrameRenderer._forward

    def interrupted(self, index):
        rendered.append(index)
        if len(rendered) == 5:
            raise KeyboardInterrupt
        return real(self, index)

    monkeypatch.setattr(FrameRenderer, "_forward", interrupted)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.decompress_main([str(path), "-o", f"{tmp_path}/{target}"]) == 130
    assert capsys.readouterr().err.strip() == "error: interrupted"
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "out.mkv").read_bytes() == b"previous result"


def test_a_writer_failing_midway_is_one_line_and_leaves_nothing(small, tmp_path, monkeypatch, capsys):
    """ffmpeg dying after some frames (disk full): exit 2, the previous file intact, no temporary."""
    path, _ = small
    fake = tmp_path / "ffmpeg"
    fake.write_text(f"""#!/bin/sh
case "$*" in *-encoders*) exec '{ffmpeg_binary()}' "$@";; esac
head -c 20000 > /dev/null
echo "av_interleaved_write_frame(): No space left on device" >&2
exit 1
""")
    fake.chmod(0o755)
    monkeypatch.setattr("pipeline.video_writer.ffmpeg_binary", lambda: str(fake))
    (tmp_path / "out.mkv").write_bytes(b"previous result")
    assert cli.decompress_main([str(path), "-o", str(tmp_path / "out.mkv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "No space left on device" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ffmpeg", "out.mkv"]
    assert (tmp_path / "out.mkv").read_bytes() == b"previous result"


# --- bounded memory -------------------------------------------------------------------------------------

_PEAK_SCRIPT = """
import json, resource, sys
from decompress.decode import decode_to_video
data = open(sys.argv[1], "rb").read()
peaks = []
for count in (int(sys.argv[3]), int(sys.argv[4])):
    decode_to_video(data, sys.argv[2], (0, count), "cpu")
    peaks.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
print(json.dumps(peaks))
"""


def test_peak_memory_does_not_grow_with_the_number_of_frames(tmp_path):
    """96 frames of 640x360 are 66 MB of RGB; decoding them needs no more memory than decoding 8."""
    width, height, few, many = 640, 360, 8, 96
    path = tmp_path / "long.bin"
    path.write_bytes(make_bitstream(width, height, many))
    # glibc's dynamic mmap threshold keeps large freed buffers in the heap, which blurs the
    # peak RSS by tens of MB; a fixed threshold makes the peak follow the memory in use.
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    proc = subprocess.run([sys.executable, "-c", _PEAK_SCRIPT, str(path), str(tmp_path / "out.mkv"), str(few),
                           str(many)], capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert proc.returncode == 0, proc.stderr
    few_peak, many_peak = json.loads(proc.stdout)
    frames_bytes = many * width * height * 3
    # Holding the frames would add at least their size (measured: under 1 MB is added).
    assert many_peak - few_peak < frames_bytes / 8, (few_peak, many_peak, frames_bytes)
    assert len(read_video(tmp_path / "out.mkv", frame_range=(many - 1, None)).frames) == 1
