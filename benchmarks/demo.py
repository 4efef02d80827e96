"""``make demo``: compress the bundled clip, decompress it, compare with x264 at the same size.

Runs the library's entry points as the commands do: ``compress_frames`` on the decoded
clip (what ``enerv-compress`` runs), the file written, then ``decode_frames`` from the
file's bytes (what ``enerv-decompress`` runs) into a lossless ``.mkv``. It measures that
``.mkv`` independently, and encodes the same clip with x264 at the CRF whose file size is
closest to ours.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path

from benchmarks.anchors import X264, match_size
from benchmarks.codec import SourceClip
from compress.ratecontrol import RateRequest
from compress.video import compress_frames
from decompress.decode import decode_frames, read_file_bytes
from pipeline.cli_common import run_command
from pipeline.config import load_preset
from pipeline.files import write_atomically
from pipeline.metrics import ms_ssim_mean, psnr
from pipeline.video_io import read_video
from pipeline.video_writer import write_video

ROOT = Path(__file__).resolve().parent.parent
CLIP = ROOT / "data" / "bunny_320x180_48f.mkv"
OUT = ROOT / "demo_out"
PRESET = "enerv-latent-xs"  # what a plain enerv-compress runs, at the default target
TARGET_BPP = None  # None: the default target for the clip's frame size


def main(argv: list[str] | None = None) -> int:
    OUT.mkdir(exist_ok=True)
    preset = load_preset(PRESET)
    source = read_video(CLIP)
    T, H, W = source.frames.shape[:3]
    print(f"demo: {CLIP.name}, {T} frames of {W}x{H} (Big Buck Bunny, CC-BY 3.0 Blender Foundation)")
    request = RateRequest(default=True) if TARGET_BPP is None else RateRequest(bpp=TARGET_BPP)
    target = request.target(W, H, T, source.info.fps)
    print(f"preset {PRESET}: {preset.fit.epochs} fitting epochs + {preset.codec.rd_epochs} rate-distortion "
          f"+ {preset.codec.qat_epochs} on the rounded grid; rate target {target.asked}\n")
    sys.stdout.flush()

    bin_path, json_path, decoded_path = OUT / "bunny.bin", OUT / "bunny.json", OUT / "bunny_decoded.mkv"
    start = time.perf_counter()
    data, result = compress_frames(source.frames, source.info.fps, preset, source_id=str(CLIP.resolve()),
                                   target=target)
    write_atomically(bin_path, data)
    encode_seconds = time.perf_counter() - start
    result = replace(result, output=str(bin_path))
    write_atomically(json_path, (json.dumps(result.to_json(), indent=2) + "\n").encode())
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.stage_seconds.items())
    print(f"wrote {bin_path}: {result.bytes:,} bytes, {result.bpp:.4f} bpp, {result.bytes / target.bytes - 1:+.1%} "
          f"from the target ({result.parameters:,} parameters, width x{result.width_factor:g}, "
          f"quality {result.quality:g}); {stages}")

    start = time.perf_counter()
    decoded = decode_frames(read_file_bytes(bin_path))
    write_video(decoded_path, decoded.frames, fps=decoded.fps)
    decode_seconds = time.perf_counter() - start
    measured_frames = read_video(decoded_path).frames
    measured = psnr(measured_frames, source.frames)

    anchor = X264(preset="medium", pix_fmt="yuv444p", version_sei=False)  # as in enerv-bench
    point = match_size(anchor, SourceClip(source.frames, source.info.fps, CLIP), result.bytes)
    rows = [
        ("E-NeRV (this tool)", result.bytes, result.bpp, measured, ms_ssim_mean(measured_frames, source.frames),
         encode_seconds, decode_seconds),
        (f"x264 {anchor.describe_setting()} crf {point.knob_value}", point.bytes, point.bpp, point.psnr_rgb,
         point.ms_ssim, point.encode_seconds, point.decode_seconds),
    ]
    print("\n| codec | bytes | bpp | PSNR (dB, RGB) | MS-SSIM | encode s | decode s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, size, bpp, p, m, enc, dec in rows:
        ms = f"{m:.4f}" if m is not None else "n/a"
        print(f"| {name} | {size:,} | {bpp:.4f} | {p:.2f} | {ms} | {enc:.1f} | {dec:.2f} |")
    print(f"\nE-NeRV against x264 at about the same size: {measured - point.psnr_rgb:+.2f} dB PSNR "
          f"(x264's file {point.bytes / result.bytes - 1:+.1%} the size of E-NeRV's)")
    print(f"\nPSNR of {decoded_path.name}, measured independently: {measured:.2f} dB "
          f"(the encoder reported {result.psnr:.2f} dB)")
    print(f"files in {OUT}/; whole file sizes, container included, for both codecs")
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, sys.argv[1:]))
