"""Command-line entry points: parse, build a config, call the package, map errors to exit codes.

Exit codes: 0 success; 1 unexpected internal error; 2 bad input or options (one line
``error: ...`` on stderr); 130 interrupted (a checkpoint is kept for ``--resume``).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline.cli_common import (
    EXIT_INPUT,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    OneLineErrorParser,
    non_negative_int,
)

DEFAULT_PRESET = "enerv-cpu-s"


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt


def _run(main: Callable[[Sequence[str] | None], int], argv: Sequence[str] | None) -> int:
    """Runs a command body and turns every failure into one line and an exit code."""
    from pipeline.errors import InputError

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt) if in_main_thread else None
    try:
        return main(argv)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the last line of defence
        if os.environ.get("ENERV_DEBUG"):
            traceback.print_exc()
        message = " ".join(str(exc).split()) or type(exc).__name__
        print(f"error: internal error ({type(exc).__name__}): {message}", file=sys.stderr)
        return EXIT_INTERNAL
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)


# --- enerv-compress -------------------------------------------------------------------------


def _compress_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="enerv-compress", description="Compress a video into an E-NeRV bitstream (.bin).")
    p.add_argument("input", help="video file, PNG pattern (frames/%%05d.png) or folder of PNGs")
    p.add_argument("-o", "--output", required=True, help="bitstream file to write")
    p.add_argument("--preset", default=None, help=f"a preset of cfgs/ (default {DEFAULT_PRESET})")
    p.add_argument("--config", default=None, help="a YAML config file (instead of --preset)")
    p.add_argument("--epochs", type=non_negative_int, help="fitting epochs (fine-tune epochs scale along)")
    p.add_argument("--prune-epochs", type=non_negative_int, help="fine-tuning epochs after pruning")
    p.add_argument("--qat-epochs", type=non_negative_int, help="quantization-aware fine-tuning epochs")
    p.add_argument("--no-qat", action="store_true", help="skip the quantization-aware fine-tune")
    p.add_argument("--prune", type=float, help="fraction of weights to prune, in [0, 1)")
    p.add_argument("--bits", type=int, help="quantization bits, 2..16")
    p.add_argument("--batch-size", type=non_negative_int, help="frames per training step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--frames", help="frame range A:B (half-open) to encode")
    p.add_argument("--size", help="resize to WxH while reading")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--json", help="also write the summary to this JSON file")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def build_preset(args: argparse.Namespace):
    """The preset with the command-line overrides applied (all validated here)."""
    from pipeline.config import load_config, load_preset, override
    from pipeline.errors import InputError

    if args.preset and args.config:
        raise InputError("give --preset or --config, not both")
    preset = load_config(args.config) if args.config else load_preset(args.preset or DEFAULT_PRESET)
    fit, codec = preset.fit, preset.codec
    if args.epochs is not None and fit.epochs:
        scale = args.epochs / fit.epochs
        codec = override(codec, prune_epochs=round(codec.prune_epochs * scale),
                         qat_epochs=round(codec.qat_epochs * scale))
    fit = override(fit, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    codec = override(codec, prune_ratio=args.prune, bits=args.bits, prune_epochs=args.prune_epochs,
                     qat_epochs=0 if args.no_qat else args.qat_epochs)
    return override(preset, fit=fit, codec=codec)


def _compress(argv: Sequence[str] | None) -> int:
    args = _compress_parser().parse_args(argv)
    from compress.encode import compress_video
    from compress.fit import FitInterrupted
    from pipeline.files import check_output_path, write_atomically
    from pipeline.video_io import parse_frame_range, parse_size

    preset = build_preset(args)
    frame_range = parse_frame_range(args.frames) if args.frames else None
    size = parse_size(args.size) if args.size else None
    if args.json:
        check_output_path(Path(args.json), [Path(args.input), Path(args.output)])
    try:
        result = compress_video(args.input, args.output, preset, frame_range=frame_range, size=size,
                                device=args.device, resume=args.resume, progress=not args.quiet)
    except FitInterrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in result.stage_seconds.items())
    ms = f"{result.ms_ssim:.4f}" if result.ms_ssim is not None else "n/a (frames under 161 px)"
    print(f"wrote {result.output}: {result.bytes:,} bytes, {result.bpp:.4f} bpp "
          f"({result.frames} frames of {result.width}x{result.height}, {result.parameters:,} parameters, "
          f"{result.bits}-bit, pruned {result.prune_ratio:.0%})")
    print(f"quality of the decoded frames: PSNR {result.psnr:.2f} dB, MS-SSIM {ms} "
          f"(fitted before pruning/quantization: {result.fit_psnr:.2f} dB)")
    print(f"time: {stages}; total {result.seconds:.1f} s on {result.device}")
    if args.json:
        write_atomically(Path(args.json), (json.dumps(result.to_json(), indent=2) + "\n").encode())
    return EXIT_OK


# --- enerv-decompress -----------------------------------------------------------------------


def _decompress_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="enerv-decompress", description="Decode an E-NeRV bitstream (.bin) into frames.")
    p.add_argument("input", help="bitstream file")
    p.add_argument("-o", "--output", help="output: .mkv (lossless FFV1), .y4m, .mp4 (lossy H.264), "
                                          "a PNG pattern (out/%%05d.png) or a folder/ (default: INPUT.decoded.mkv)")
    p.add_argument("--frames", help="decode only frames A:B (half-open)")
    p.add_argument("--info", action="store_true", help="print the header and the byte split as JSON, render nothing")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--threads", type=non_negative_int,
                   help="CPU: frames rendered at once, one thread each (default: PyTorch's thread count); "
                        "changes the speed, never the frames")
    return p


def _decompress(argv: Sequence[str] | None) -> int:
    args = _decompress_parser().parse_args(argv)
    from decompress.decode import bitstream_info, decode_frames, read_file_bytes
    from pipeline.errors import InputError
    from pipeline.files import check_output_path
    from pipeline.render import resolve_device
    from pipeline.video_io import parse_frame_range, write_video

    source = Path(args.input)
    if args.info:
        print(json.dumps(bitstream_info(read_file_bytes(source)), indent=2))
        return EXIT_OK
    # By default beside the input, under a name that cannot be the original video's.
    output = Path(args.output) if args.output else source.with_name(source.stem + ".decoded.mkv")
    to_folder = args.output is not None and (args.output.endswith(("/", os.sep)) or output.is_dir())
    if to_folder:
        parent = output.parent if str(output.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"output folder {parent} does not exist")
    else:
        check_output_path(output, [source])
    frame_range = parse_frame_range(args.frames) if args.frames else None
    device = resolve_device(args.device)
    if args.threads == 0:
        raise InputError("--threads must be at least 1")
    decoded = decode_frames(read_file_bytes(source), frame_range, device, args.threads)
    write_video(args.output if to_folder else output, decoded.frames, fps=decoded.fps)
    n = len(decoded.frames)
    fps = n / decoded.seconds if decoded.seconds > 0 else float("inf")
    print(f"wrote {output}: frames {decoded.indices.start}:{decoded.indices.stop} "
          f"({n} frames of {decoded.frames.shape[2]}x{decoded.frames.shape[1]}), rendered at {fps:.1f} fps on {device.type}")
    if output.suffix.lower() == ".mp4":
        print("note: .mp4 output is re-encoded with H.264 (lossy); use .mkv for the exact decoded frames",
              file=sys.stderr)
    return EXIT_OK


# --- entry points -----------------------------------------------------------------------------


def compress_main(argv: Sequence[str] | None = None) -> int:
    return _run(_compress, argv)


def decompress_main(argv: Sequence[str] | None = None) -> int:
    return _run(_decompress, argv)


def bench_main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.rd import main as bench

    return _run(bench, argv)


if __name__ == "__main__":
    sys.exit(compress_main())
