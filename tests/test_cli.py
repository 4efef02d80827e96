"""The commands end to end, through the installed console scripts."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pipeline.metrics import psnr
from pipeline.video_io import read_video
from pipeline.video_writer import write_video
from tests.conftest import smooth_clip

BIN_DIR = Path(sys.executable).parent


def run(tool: str, *args, cwd=None) -> subprocess.CompletedProcess:
    exe = shutil.which(tool, path=str(BIN_DIR)) or tool
    return subprocess.run([exe, *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd,
                          stdin=subprocess.DEVNULL)


def assert_input_error(proc: subprocess.CompletedProcess, fragment: str = "") -> None:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def clip(workdir) -> tuple[Path, np.ndarray]:
    frames = smooth_clip(12, 32, 48)
    path = workdir / "clip.mkv"
    write_video(path, frames, fps=24)
    return path, frames


@pytest.fixture(scope="module")
def encoded(workdir, clip) -> tuple[Path, dict]:
    source, _ = clip
    out, summary = workdir / "clip.bin", workdir / "clip.json"
    proc = run("enerv-compress", source, "-o", out, "--preset", "test-tiny", "--epochs", "12", "--prune", "0.2",
               "--json", summary, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "bpp" in proc.stdout and "PSNR" in proc.stdout
    return out, json.loads(summary.read_text())


def test_summary_reports_the_file_on_disk(encoded):
    out, summary = encoded
    for key in ("bytes", "bpp", "psnr", "ms_ssim", "frames", "width", "height", "seconds"):
        assert key in summary
    assert summary["bytes"] == out.stat().st_size
    assert summary["bpp"] == pytest.approx(8 * out.stat().st_size / (48 * 32 * 12))
    assert not out.with_name(out.name + ".ckpt").exists()
    assert not out.with_name(out.name + ".ckpt.d").exists()


def test_reported_psnr_equals_psnr_of_the_decoded_file(encoded, clip, workdir):
    out, summary = encoded
    _, frames = clip
    decoded_path = workdir / "full.mkv"
    proc = run("enerv-decompress", out, "-o", decoded_path)
    assert proc.returncode == 0, proc.stderr
    decoded = read_video(decoded_path).frames
    assert decoded.shape == frames.shape
    assert psnr(decoded, frames) == pytest.approx(summary["psnr"], abs=1e-9)


def test_random_access_equals_the_full_decode(encoded, workdir):
    out, _ = encoded
    assert run("enerv-decompress", out, "-o", workdir / "all.mkv").returncode == 0
    proc = run("enerv-decompress", out, "-o", workdir / "part.mkv", "--frames", "10:12")
    assert proc.returncode == 0, proc.stderr
    full = read_video(workdir / "all.mkv").frames
    part = read_video(workdir / "part.mkv").frames
    assert part.shape[0] == 2
    np.testing.assert_array_equal(part, full[10:12])


def test_default_output_is_a_lossless_mkv_beside_the_input(encoded, workdir):
    out, _ = encoded
    copy = workdir / "default" / "video.bin"
    copy.parent.mkdir()
    shutil.copy(out, copy)
    assert run("enerv-decompress", copy).returncode == 0
    assert (copy.parent / "video.decoded.mkv").exists()


@pytest.mark.parametrize("target", ["frames.y4m", "frames.mp4", "pngs/", "seq_%03d.png"])
def test_other_output_formats(encoded, workdir, target):
    out, _ = encoded
    proc = run("enerv-decompress", out, "-o", f"{workdir}/{target}")  # keeps a trailing slash
    assert proc.returncode == 0, proc.stderr
    if target.endswith("/"):
        assert len(list((workdir / target).glob("*.png"))) == 12
    elif "%" in target:
        assert len(list(workdir.glob("seq_*.png"))) == 12
    else:
        assert (workdir / target).stat().st_size > 0
    if target.endswith(".mp4"):
        assert "lossy" in proc.stderr


def test_info_prints_header_and_split(encoded):
    out, summary = encoded
    proc = run("enerv-decompress", out, "--info")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["video"] == {"width": 48, "height": 32, "frames": 12, "fps": 24.0}
    assert sum(info["size_split"].values()) == summary["bytes"]
    assert info["size_split"]["masks"] > 0  # pruned with --prune
    estimate = info["rate_estimate"]
    assert estimate["estimated_weight_bytes"] == summary["estimated_weight_bytes"]
    assert estimate["coded_weight_bytes"] == summary["coded_weight_bytes"] > 0
    assert info["format_version"] == 4 and sum(info["side_info_parts"].values()) == info["size_split"]["side_info"]
    for t in info["tensors"]:  # a bank table codes within 1 % of the tensor's own counts, their bytes included
        assert t["value_bytes"] + t["model_bytes"] <= 1.01 * (t["entropy_bytes"] + t["counts_bytes"]) + 1, t


# --- bad input ---------------------------------------------------------------------------


def test_compress_missing_input(workdir):
    assert_input_error(run("enerv-compress", workdir / "nope.mp4", "-o", workdir / "x.bin"))


def test_compress_text_file(workdir):
    text = workdir / "notes.txt"
    text.write_text("not a video\n")
    assert_input_error(run("enerv-compress", text, "-o", workdir / "x.bin"))
    assert not (workdir / "x.bin").exists()


@pytest.mark.parametrize(
    "options,fragment",
    [
        (["--bits", "1"], "bits"),
        (["--bits", "17"], "bits"),
        (["--prune", "1.0"], "prune"),
        (["--prune", "-0.1"], "prune"),
        (["--preset", "no-such-preset"], "preset"),
        (["--frames", "5:2"], "range"),
        (["--frames", "100:200"], ""),
        (["--size", "4x4"], "4x4"),
        (["--size", "abc"], "size"),
        (["--epochs", "-3"], "epochs"),
        (["--segment-frames", "0"], "--segment-frames must be at least 1"),
        (["--segment-frames", "-2"], "segment-frames"),
        (["--segment-frames", "many"], "segment-frames"),
    ],
)
def test_compress_refuses_bad_options(clip, workdir, options, fragment):
    source, _ = clip
    out = workdir / "bad.bin"
    assert_input_error(run("enerv-compress", source, "-o", out, "--preset", "test-tiny", *options), fragment)
    assert not out.exists()


def test_compress_refuses_output_in_missing_folder(clip, workdir):
    source, _ = clip
    assert_input_error(run("enerv-compress", source, "-o", workdir / "missing" / "x.bin"), "does not exist")


def test_compress_refuses_to_overwrite_its_input(clip, workdir):
    source, _ = clip
    before = source.read_bytes()
    assert_input_error(run("enerv-compress", source, "-o", source, "--preset", "test-tiny"), "overwrite")
    assert source.read_bytes() == before


def test_decompress_missing_file(workdir):
    assert_input_error(run("enerv-decompress", workdir / "missing.bin"), "no such file")


def test_decompress_directory(workdir):
    assert_input_error(run("enerv-decompress", workdir))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: b"",
        lambda d: d[: len(d) // 2],
        lambda d: d[:-1],
        lambda d: d + b"junk",
        lambda d: d[:40] + bytes([d[40] ^ 0xFF]) + d[41:],
        lambda d: b"\x00" * 1000,
        lambda d: b"ENRV\x07\x00" + d[6:],
    ],
    ids=["empty", "half", "one-byte-short", "appended", "flipped", "zeros", "future-version"],
)
def test_decompress_refuses_damaged_files(encoded, workdir, mutate):
    out, _ = encoded
    bad = workdir / "bad.bin"
    bad.write_bytes(mutate(out.read_bytes()))
    target = workdir / "bad_out.mkv"
    assert_input_error(run("enerv-decompress", bad, "-o", target))
    assert not target.exists()
    assert not [p for p in workdir.iterdir() if p.name.startswith(".bad_out")]


def test_decompress_refuses_bad_range_and_folder(encoded, workdir):
    out, _ = encoded
    assert_input_error(run("enerv-decompress", out, "--frames", "10:20", "-o", workdir / "r.mkv"), "outside")
    assert_input_error(run("enerv-decompress", out, "-o", workdir / "nowhere" / "r.mkv"), "does not exist")
    assert_input_error(run("enerv-decompress", out, "-o", workdir / "r.avi"))
    assert not (workdir / "r.mkv").exists()


def test_decompress_refuses_to_overwrite_its_input(encoded, workdir):
    out, _ = encoded
    copy = workdir / "self.bin"
    shutil.copy(out, copy)
    assert_input_error(run("enerv-decompress", copy, "-o", copy), "overwrite")
    assert copy.read_bytes() == out.read_bytes()


def test_decoder_never_imports_the_encoder():
    code = (
        "import sys, cli, decompress.decode\n"
        "cli.decompress_main(['--help']) if False else None\n"
        "from decompress.decode import decode_frames, bitstream_info\n"
        "assert not [m for m in sys.modules if m == 'compress' or m.startswith('compress.')], sorted(sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    root = Path(__file__).resolve().parent.parent
    for path in (root / "decompress").rglob("*.py"):
        text = path.read_text()
        assert "from compress" not in text and "import compress" not in text, path
    for path in (root / "pipeline").rglob("*.py"):
        text = path.read_text()
        for other in ("compress", "decompress", "benchmarks"):
            assert f"from {other}" not in text and f"import {other}" not in text, (path, other)


def test_decompress_runs_without_the_encoder_package(encoded, workdir):
    """Decode with the compress package made unimportable: the decoder needs none of it."""
    out, _ = encoded
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'compress' or name.startswith('compress.'):\n"
        "            raise ImportError('the encoder is not installed here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import cli\n"
        f"sys.exit(cli.decompress_main([{str(out)!r}, '-o', {str(workdir / 'noenc.mkv')!r}]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert (workdir / "noenc.mkv").exists()
