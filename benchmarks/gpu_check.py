"""The GPU check: one short, prepared run of the CUDA path on a machine that has a GPU.

    python3 -m benchmarks.gpu_check [--fit-seconds S] [--frames N] [--json FILE]
    python3 -m benchmarks.gpu_check --cpu-smoke      # the same steps, tiny, on the CPU

On a CUDA machine it (1) installs the packages that are missing from the wheels in ``wheels/``
(never PyTorch: the machine's own CUDA build is used), into a folder of its own put on the
path, so the Python environment itself is not touched; (2) runs the GPU tests (``pytest -m
gpu``); (3) fits the first frames of the 1280x720 bunny with the ``enerv-gpu-720p`` preset
for a fixed time in bf16 and in float32; (4) decodes each file on the GPU and a few of its
frames on the CPU, and prints one table: fit frames/s, PSNR, decode fps and the CPU-vs-GPU
frame differences. The defaults keep the whole check near 6 minutes.

Without CUDA it prints one line and exits 0. The wheels are prepared beforehand on a
machine that reaches PyPI (``make gpu-wheels``, which lists the exact ``pip download`` and
also puts the first 60 frames of the 720p bunny beside them, ``--prepare-clip``).
Only the standard library and PyTorch are imported before the packages are in place.
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks.gpu_setup import (  # noqa: F401 - the check's set-up, importable from here too
    REQUIREMENTS,
    ROOT,
    SITE,
    WHEELS,
    Requirement,
    ensure_packages,
    gpu_test_files,
    install_command,
    missing,
    normalized,
    plan_install,
    run_gpu_tests,
    wheels_in,
)
from pipeline.cli_common import EXIT_OK, OneLineErrorParser, run_command
from pipeline.errors import InputError

# The 720p bunny beside a developer's checkout, or a shared/ folder inside it; else the bundled
# 320x180 bunny, upscaled (real content, softer), else a synthetic clip.
BUNNY_720P = (ROOT.parent / "shared" / "data" / "bunny_1280x720.mkv", ROOT / "shared" / "data" / "bunny_1280x720.mkv")
BUNNY_SMALL = ROOT / "data" / "bunny_320x180_48f.mkv"
# ../shared does not travel to a device machine: `--prepare-clip` (run by make gpu-wheels) puts the
# first frames of the 720p bunny beside the wheels as H.264 4:4:4 at CRF 10 (3.8 MB for 60 frames
# against 29 MB of FFV1, so that the wheels and the clip fit the 64 MiB that travel).
PREPARED_CLIP = WHEELS / "bunny_1280x720_60f.mp4"
GPU_PRESET, SMOKE_PRESET = "enerv-gpu-720p", "test-tiny"
PRECISIONS = ("bf16", "float32")
COLUMNS = ("precision", "fit s", "fit epochs", "fit frames/s", "fit PSNR dB", "PSNR dB", "bytes",
           "decode fps", "CPU decode fps", "CPU!=GPU pixels", "max CPU-GPU diff")


@dataclass(frozen=True)
class ClipChoice:
    path: Path
    size: tuple[int, int] | None  # resize while reading
    what: str


def synthetic_frames(frames: int, height: int, width: int):
    """A smooth, moving RGB clip (uint8 [T,H,W,3]) with a little texture, for machines without data."""
    import numpy as np

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    out = np.empty((frames, height, width, 3), np.uint8)
    for t in range(frames):
        for c in range(3):
            wave = np.sin((x + 3 * t) / width * (2 + c) * np.pi) * np.cos((y - 2 * t) / height * (1 + c) * np.pi)
            out[t, :, :, c] = np.clip(127.5 + 90 * wave + 20 * np.sin(x / 7 + y / 5 + t), 0, 255).astype(np.uint8)
    return out


def choose_clip(asked: Path | None, workdir: Path, frames: int, smoke: bool) -> ClipChoice:
    from pipeline.video_writer import write_video

    if smoke:
        path = workdir / "smoke.mkv"
        write_video(path, synthetic_frames(frames, 36, 64), fps=24)
        return ClipChoice(path, None, f"synthetic 64x36, {frames} frames")
    if asked is not None:
        if not asked.exists():
            raise InputError(f"--clip {asked}: no such file")
        return ClipChoice(asked, None, str(asked))
    for path in BUNNY_720P:
        if path.exists():
            return ClipChoice(path, None, f"{path.name}, first {frames} frames")
    if PREPARED_CLIP.exists():
        return ClipChoice(PREPARED_CLIP, None, f"{PREPARED_CLIP.name} (H.264 4:4:4 CRF 10), first {frames} frames")
    if BUNNY_SMALL.exists():
        return ClipChoice(BUNNY_SMALL, (1280, 720), f"{BUNNY_SMALL.name} upscaled to 1280x720 (no 720p bunny here)")
    path = workdir / "synthetic_720p.mkv"
    write_video(path, synthetic_frames(frames, 720, 1280), fps=24)
    return ClipChoice(path, None, f"synthetic 1280x720, {frames} frames (no bunny here)")


def prepare_clip(frames: int, output: Path = PREPARED_CLIP) -> None:
    """Cuts the first ``frames`` frames of the 720p bunny into ``output`` (see :data:`PREPARED_CLIP`)."""
    from pipeline.ffmpeg import ffmpeg_binary, last_line, run_ffmpeg

    source = next((p for p in BUNNY_720P if p.exists()), None)
    if source is None:
        raise InputError(f"no 720p bunny at {' or '.join(str(p) for p in BUNNY_720P)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    proc = run_ffmpeg([ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", "-i", str(source),
                       "-frames:v", str(frames), "-an", "-c:v", "libx264", "-preset", "medium", "-crf", "10",
                       "-pix_fmt", "yuv444p", str(output)])
    if proc.returncode != 0:
        raise InputError(f"ffmpeg could not write {output}: {last_line(proc.stderr)}")
    print(f"wrote {output} ({output.stat().st_size:,} bytes, {frames} frames of {source.name})")


# --- fit, decode, compare --------------------------------------------------------------------


@dataclass(frozen=True)
class PrecisionRun:
    precision: str
    fit_seconds: float
    fit_epochs: float  # passes over the frames (a budget may stop in the middle of one)
    fit_frames_per_second: float
    fit_psnr: float
    psnr: float
    bytes: int
    decode_fps: float
    cpu_decode_fps: float
    differing_pixels: int
    compared_pixels: int
    max_difference: int
    encode_seconds: float
    device: str


def compared_indices(num_frames: int, count: int) -> list[int]:
    """``count`` frame indices spread over the clip, first and last included."""
    count = max(1, min(count, num_frames))
    if count == 1:
        return [0]
    return sorted({round(i * (num_frames - 1) / (count - 1)) for i in range(count)})


def frame_differences(a, b) -> tuple[int, int, int]:
    """(pixels where any channel differs, pixels compared, largest difference of a sample)."""
    import numpy as np

    delta = np.abs(a.astype(np.int16) - b.astype(np.int16))
    return int(delta.max(axis=-1).astype(bool).sum()), int(delta.shape[0] * delta.shape[1] * delta.shape[2]), \
        int(delta.max(initial=0))


def run_precision(clip: ClipChoice, precision: str, *, preset_name: str, frames: int, fit_seconds: float,
                  device: str, compare_frames: int, workdir: Path, progress: bool) -> PrecisionRun:
    import torch

    from compress.video import compress_video
    from decompress.decode import decode_frames, read_file_bytes
    from pipeline.config import load_preset, override

    preset = load_preset(preset_name)
    preset = override(preset, fit=override(preset.fit, precision=precision))
    output = workdir / f"{precision}.bin"
    started = time.perf_counter()
    result = compress_video(clip.path, output, preset, frame_range=(0, frames), size=clip.size, device=device,
                            progress=progress, time_budget=fit_seconds)
    encode_seconds = time.perf_counter() - started
    data = read_file_bytes(output)
    decode_frames(data, frame_range=(0, 1), device=device)  # warm-up: kernels, allocator
    if device == "cuda":
        torch.cuda.synchronize()
    on_device = decode_frames(data, device=device)
    picked = compared_indices(result.frames, compare_frames)
    cpu_seconds, differing, compared, largest = 0.0, 0, 0, 0
    for index in picked:
        on_cpu = decode_frames(data, frame_range=(index, index + 1), device="cpu")
        cpu_seconds += on_cpu.seconds
        d, n, m = frame_differences(on_cpu.frames, on_device.frames[index : index + 1])
        differing, compared, largest = differing + d, compared + n, max(largest, m)
    fit_epochs = result.epochs[0] if result.epochs else 0
    return PrecisionRun(
        precision=precision,
        fit_seconds=result.fit_seconds,
        fit_epochs=fit_epochs,
        fit_frames_per_second=fit_epochs * result.frames / result.fit_seconds if result.fit_seconds else math.nan,
        fit_psnr=result.fit_psnr if result.fit_psnr is not None else math.nan,
        psnr=result.psnr,
        bytes=result.bytes,
        decode_fps=result.frames / on_device.seconds if on_device.seconds else math.nan,
        cpu_decode_fps=len(picked) / cpu_seconds if cpu_seconds else math.nan,
        differing_pixels=differing,
        compared_pixels=compared,
        max_difference=largest,
        encode_seconds=encode_seconds,
        device=result.device,
    )


def format_table(runs: Sequence[PrecisionRun]) -> str:
    """One markdown table, a row per precision, in the order of :data:`COLUMNS`."""
    rows = [COLUMNS, tuple("---" for _ in COLUMNS)]
    for r in runs:
        share = r.differing_pixels / r.compared_pixels if r.compared_pixels else math.nan
        rows.append((r.precision, f"{r.fit_seconds:.1f}", f"{r.fit_epochs:.3g}", f"{r.fit_frames_per_second:.1f}",
                     f"{r.fit_psnr:.2f}", f"{r.psnr:.2f}", f"{r.bytes:,}", f"{r.decode_fps:.1f}",
                     f"{r.cpu_decode_fps:.2f}", f"{r.differing_pixels:,} of {r.compared_pixels:,} ({share:.2%})",
                     str(r.max_difference)))
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


# --- the command -----------------------------------------------------------------------------


def _parser() -> OneLineErrorParser:
    p = OneLineErrorParser(prog="python3 -m benchmarks.gpu_check",
                           description="Install what is missing, run the GPU tests, fit and decode the 720p bunny "
                                       "in bf16 and float32 on CUDA, and print one table.")
    p.add_argument("--fit-seconds", type=float, default=None,
                   help="--time-budget of each encode (default 150; 4 with --cpu-smoke)")
    p.add_argument("--frames", type=int, default=None, help="first frames of the clip (default 60; 6 with --cpu-smoke)")
    p.add_argument("--compare-frames", type=int, default=3, help="frames rendered on the CPU too (default 3)")
    p.add_argument("--precision", choices=PRECISIONS, action="append", help="only this precision (repeatable)")
    p.add_argument("--clip", type=Path, help="the video to fit (default: the 1280x720 bunny)")
    p.add_argument("--wheels", type=Path, default=WHEELS, help=f"folder of prepared wheels (default {WHEELS})")
    p.add_argument("--site", type=Path, default=SITE, help=f"where missing packages are installed (default {SITE})")
    p.add_argument("--skip-tests", action="store_true", help="do not run pytest -m gpu")
    p.add_argument("--cpu-smoke", action="store_true",
                   help="the same steps on the CPU, with the test-tiny preset on a tiny synthetic clip")
    p.add_argument("--json", type=Path, help="also write the rows as JSON (after each precision)")
    p.add_argument("--prepare-clip", action="store_true",
                   help=f"only write the first --frames of the 720p bunny to {PREPARED_CLIP.relative_to(ROOT)}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def _check(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    smoke = args.cpu_smoke
    fit_seconds = args.fit_seconds if args.fit_seconds is not None else (4.0 if smoke else 150.0)
    frames = args.frames if args.frames is not None else (6 if smoke else 60)
    if not (fit_seconds > 0 and frames >= 1 and args.compare_frames >= 1):
        raise InputError("--fit-seconds, --frames and --compare-frames must be positive")
    if args.prepare_clip:
        prepare_clip(frames)
        return EXIT_OK
    started = time.perf_counter()
    try:
        import torch
    except ImportError:
        print("gpu-check: this Python has no PyTorch; nothing to check (run it where PyTorch with CUDA is)")
        return EXIT_OK
    if not smoke and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA device here (torch {torch.__version__}); nothing to check "
              "(--cpu-smoke runs a tiny version on the CPU)")
        return EXIT_OK
    device = "cpu" if smoke else "cuda"
    name = "cpu" if smoke else torch.cuda.get_device_name(0)
    print(f"gpu-check: torch {torch.__version__} on {name}, Python {sys.version.split()[0]}", flush=True)

    installed = ensure_packages(args.wheels, args.site)
    print(f"packages: {'installed ' + ', '.join(installed) if installed else 'all present'}", flush=True)
    tests_ok, tests = True, "skipped"
    if not args.skip_tests:
        tests_ok, summary = run_gpu_tests()
        tests = "passed" if tests_ok else "FAILED"
        print(f"GPU tests: {summary}", flush=True)

    with tempfile.TemporaryDirectory(prefix="enerv-gpu-check-") as tmp:
        workdir = Path(tmp)
        clip = choose_clip(args.clip, workdir, frames, smoke)
        print(f"clip: {clip.what}; preset {SMOKE_PRESET if smoke else GPU_PRESET}, "
              f"budget {fit_seconds:g} s an encode", flush=True)
        runs = []
        for precision in args.precision or PRECISIONS:
            runs.append(run_precision(clip, precision, preset_name=SMOKE_PRESET if smoke else GPU_PRESET,
                                      frames=frames, fit_seconds=fit_seconds, device=device,
                                      compare_frames=args.compare_frames, workdir=workdir,
                                      progress=not args.quiet))
            print(f"{precision}: encoded in {runs[-1].encode_seconds:.1f} s", flush=True)
            if args.json:  # written as the check goes, so that a run stopped at its limit keeps its rows
                report = {"device": name, "torch": torch.__version__, "clip": clip.what, "tests": tests,
                          "seconds": round(time.perf_counter() - started, 1), "runs": [asdict(r) for r in runs]}
                args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(format_table(runs))
    print(f"gpu-check: {time.perf_counter() - started:.0f} s in all; GPU tests {tests}")
    return EXIT_OK if tests_ok else 1  # a failed GPU test fails the check


def main(argv: Sequence[str] | None = None) -> int:
    return run_command(_check, argv)


if __name__ == "__main__":
    sys.exit(main())
