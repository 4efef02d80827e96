"""``make demo``: compress the bundled clip, decompress it, compare with x264 at the same size.

Runs the real commands (``enerv-compress``, ``enerv-decompress``) in-process, then
measures the decoded file independently and encodes the same clip with x264 at the
CRF whose file size is closest to ours.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import cli
from benchmarks.anchors import X264Anchor, match_size
from pipeline.config import load_preset
from pipeline.metrics import ms_ssim_mean, psnr
from pipeline.video_io import read_video

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "data" / "bunny_320x180_48f.mkv"
OUT = ROOT / "demo_out"
PRESET = "enerv-cpu-s"


def main() -> int:
    OUT.mkdir(exist_ok=True)
    preset = load_preset(PRESET)
    source = read_video(CLIP)
    T, H, W = source.frames.shape[:3]
    print(f"demo: {CLIP.name}, {T} frames of {W}x{H} (Big Buck Bunny, CC-BY 3.0 Blender Foundation)")
    print(f"preset {PRESET}: {preset.fit.epochs} fitting epochs + {preset.codec.prune_epochs} after pruning "
          f"+ {preset.codec.qat_epochs} quantization-aware; expect about 3-4 minutes on 2 CPU cores\n")
    sys.stdout.flush()

    bin_path, json_path, decoded_path = OUT / "bunny.bin", OUT / "bunny.json", OUT / "bunny_decoded.mkv"
    if cli.compress_main([str(CLIP), "-o", str(bin_path), "--preset", PRESET, "--json", str(json_path)]) != 0:
        return 1
    start = time.perf_counter()
    if cli.decompress_main([str(bin_path), "-o", str(decoded_path)]) != 0:
        return 1
    decode_seconds = time.perf_counter() - start
    summary = json.loads(json_path.read_text())
    decoded = read_video(decoded_path).frames
    measured = psnr(decoded, source.frames)

    anchor = X264Anchor(preset="medium", pix_fmt="yuv444p", version_sei=False)  # as in enerv-bench
    point = match_size(anchor, source.frames, summary["bytes"], source.info.fps)
    rows = [
        ("E-NeRV (this tool)", summary["bytes"], summary["bpp"], measured, ms_ssim_mean(decoded, source.frames),
         summary["seconds"], decode_seconds),
        (f"x264 {anchor.describe()} crf {point.knob_value}", point.bytes, point.bpp, point.psnr_rgb, point.ms_ssim,
         point.encode_seconds, point.decode_seconds),
    ]
    print("\n| codec | bytes | bpp | PSNR (dB, RGB) | MS-SSIM | encode s | decode s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, size, bpp, p, m, enc, dec in rows:
        ms = f"{m:.4f}" if m is not None else "n/a"
        print(f"| {name} | {size:,} | {bpp:.4f} | {p:.2f} | {ms} | {enc:.1f} | {dec:.2f} |")
    print(f"\nPSNR of {decoded_path.name}, measured independently: {measured:.2f} dB "
          f"(the encoder reported {summary['psnr']:.2f} dB)")
    print(f"files in {OUT}/; whole file sizes, container included, for both codecs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
