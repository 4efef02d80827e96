"""Command-line entry points: parse, build a config, call the package, map errors to exit codes.

Exit codes (:func:`pipeline.cli_common.run_command`): 0 success; 1 unexpected internal error;
2 bad input or options (one line ``error: ...`` on stderr); 130 interrupted (a checkpoint is
kept for ``--resume``); 141 (``enerv-decompress -o -`` only) the reader of standard output
closed it early.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.cli_common import (
    EXIT_INTERRUPTED,
    EXIT_OK,
    OneLineErrorParser,
    add_version,
    non_negative_int,
    run_command,
)

# The network and recipe of a plain run: per-frame latents and context-coded grids (kind enerv-ctx),
# lambda steered onto the target while fitting.
DEFAULT_PRESET = "enerv-latent-xs"


# --- enerv-compress -------------------------------------------------------------------------


_COMPRESS_EPILOG = """\
long videos: a clip longer than a segment is read and encoded one segment at a time; its
checkpoints are the folder OUTPUT.ckpt.d (one file per finished segment, for --resume).

several processes share out the segments when launched by torchrun (same bytes as one):
  torchrun --standalone --nproc_per_node N $(which enerv-compress) in.mp4 -o out.bin
  (several machines: --nnodes M --rdzv-backend c10d --rdzv-endpoint HOST:PORT instead of --standalone)

exit status: 0 success, 1 internal error, 2 bad input or options, 130 interrupted (rerun with --resume)
"""


def _compress_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="enerv-compress", description="Compress a video into an E-NeRV bitstream (.bin).",
                           epilog=_COMPRESS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("input", help="video file, PNG pattern (frames/%%05d.png) or folder of PNGs")
    p.add_argument("-o", "--output", required=True, help="bitstream file to write")
    p.add_argument("--preset", default=None,
                   help=f"a preset of cfgs/ (default {DEFAULT_PRESET}): a network size and recipe, not a speed")
    p.add_argument("--config", default=None, help="a YAML config file (instead of --preset)")
    p.add_argument("--quality", type=float,
                   help="the rate knob, 0..100 (default from the preset, 50): higher gives a larger file of "
                        "higher quality; 20 points = 10x the weight of the rate in training")
    p.add_argument("--bits", type=int, help="bound the symbols to a BITS-bit alphabet (2..16), steps from each "
                                            "tensor's peak; without --quality, no rate term")
    rate = p.add_argument_group("rate control (one of; without any, and without --preset/--config/--quality/--bits, "
                                "a default target by frame size: 0.05 bpp up to 640x360, 0.03 up to 1280x720, "
                                "0.02 above)")
    rate.add_argument("--target-bpp", type=float, metavar="BPP", help="bits per pixel of the whole file")
    rate.add_argument("--target-size", metavar="BYTES", help="file size: 250000, 250KB, 1.5MB, 64KiB...")
    rate.add_argument("--bitrate", type=float, metavar="KBPS", help="kbit/s at the video's frame rate")
    p.add_argument("--dry-run", action="store_true", help="print the plan (network, rate, epochs, estimated time) "
                                                           "and exit without fitting")
    p.add_argument("--time-budget", type=float, metavar="SECONDS",
                   help="fit the whole encode into this many seconds: the epochs are planned from steps timed on "
                        "this device, and each stage stops at its deadline")
    p.add_argument("--epochs", type=non_negative_int, help="fitting epochs (fine-tune epochs scale along)")
    p.add_argument("--rd-epochs", type=non_negative_int,
                   help="fine-tuning epochs with quantization noise and the rate term")
    p.add_argument("--qat-epochs", type=non_negative_int, help="fine-tuning epochs on the rounded grid")
    p.add_argument("--no-qat", action="store_true", help="skip the fine-tune on the rounded grid")
    p.add_argument("--prune", type=float, help="fraction of weights to prune, in [0, 1)")
    p.add_argument("--prune-epochs", type=non_negative_int, help="fine-tuning epochs after pruning")
    p.add_argument("--batch-size", type=non_negative_int, help="frames per training step")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to fit (auto: CUDA when present, else the CPU)")
    p.add_argument("--frames", help="frame range A:B (half-open) to encode")
    p.add_argument("--segment-frames", type=non_negative_int, metavar="N",
                   help="cut the clip into segments of N frames, each its own network, read from the input one "
                        "at a time (default: one segment when the clip is short, otherwise as many frames as fit "
                        "in 2 GiB as float32 RGB, at most 300)")
    p.add_argument("--scene-cuts", action="store_true",
                   help="place segment boundaries at shot changes (segments of 24 frames to the segment length)")
    p.add_argument("--size", help="resize to WxH while reading")
    p.add_argument("--seed", type=int, help="random seed")
    p.add_argument("--json", help="also write the summary to this JSON file")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run from its checkpoint")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    return p


def build_preset(args: argparse.Namespace):
    """The preset with the command-line overrides applied (all validated here)."""
    from dataclasses import replace

    from pipeline.config import load_config, load_preset, override
    from pipeline.errors import InputError
    from pipeline.presets import with_fit_epochs

    if args.preset and args.config:
        raise InputError("give --preset or --config, not both")
    preset = load_config(args.config) if args.config else load_preset(args.preset or DEFAULT_PRESET)
    preset = with_fit_epochs(preset, args.epochs)
    fit, codec = preset.fit, preset.codec
    fit = override(fit, batch_size=args.batch_size, lr=args.lr, seed=args.seed)
    if args.bits is not None:  # a fixed alphabet; the rate term only when a quality is asked for too
        codec = replace(codec, bits=args.bits, quality=args.quality)
    codec = override(codec, prune_ratio=args.prune, quality=args.quality, prune_epochs=args.prune_epochs,
                     rd_epochs=args.rd_epochs, qat_epochs=0 if args.no_qat else args.qat_epochs)
    return override(preset, fit=fit, codec=codec)


def _compress(argv: Sequence[str] | None) -> int:
    args = _compress_parser().parse_args(argv)
    from compress.fit import FitInterrupted
    from compress.parallel import process_group
    from compress.ratecontrol import RateRequest
    from compress.result import summary_lines
    from compress.video import compress_video
    from pipeline.errors import InputError
    from pipeline.files import check_output_path, write_atomically
    from pipeline.video_io import parse_frame_range, parse_frame_size

    preset = build_preset(args)
    given = any(v is not None for v in (args.preset, args.config, args.quality, args.bits))
    request = RateRequest(bpp=args.target_bpp, size=args.target_size, bitrate=args.bitrate)
    if request == RateRequest() and not given:
        request = RateRequest(default=True)
    elif args.bits is not None and request != RateRequest():
        raise InputError("a rate target chooses the steps; it cannot be combined with --bits")
    if args.time_budget is not None and not (args.time_budget > 0 and math.isfinite(args.time_budget)):
        raise InputError(f"--time-budget must be a positive number of seconds, got {args.time_budget:g}")
    frame_range = parse_frame_range(args.frames) if args.frames else None
    size = parse_frame_size(args.size) if args.size else None
    if args.json:
        check_output_path(Path(args.json), [Path(args.input), Path(args.output)])
    if args.segment_frames == 0:
        raise InputError("--segment-frames must be at least 1")
    try:
        # Under torchrun (WORLD_SIZE > 1) the processes share out the segments; rank 0 reports.
        with process_group(args.device) as (ranks, device):
            result = compress_video(args.input, args.output, preset, frame_range=frame_range, size=size,
                                    device=device, resume=args.resume, progress=not args.quiet,
                                    time_budget=args.time_budget, segment_frames=args.segment_frames, ranks=ranks,
                                    rate=request, dry_run=args.dry_run, scene_cuts=args.scene_cuts)
    except FitInterrupted as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result is None:  # --dry-run (the plan is printed), or a rank other than 0
        return EXIT_OK
    for line in summary_lines(result):
        print(line)
    if args.json:
        write_atomically(Path(args.json), (json.dumps(result.to_json(), indent=2) + "\n").encode())
    return EXIT_OK


# --- enerv-decompress -----------------------------------------------------------------------


# Exit status of a decode whose standard-output reader went away (``| head``): what a shell
# reports for a command killed by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + 13

_DECOMPRESS_EPILOG = """\
outputs (by the form of -o):
  .mkv          FFV1, lossless: the decoded RGB frames exactly (the default: INPUT.decoded.mkv)
  .y4m          raw Y'CbCr 4:4:4, 8-bit, BT.601 matrix, limited range
  .mp4          H.264 yuv420p (lossy re-encoding)
  out/%05d.png  a PNG sequence numbered by the source's frames; out/ (a folder) gives out/00000.png, ...
                (with --frames 10:20: out/00010.png to out/00019.png)
  -             a Y4M stream on standard output (as .y4m), e.g. | ffmpeg -i - ...
                (nothing else goes to standard output; the summary goes to stderr)

Each frame depends only on the file, its index and the device: any --frames range gives
the same frames as the full decode, whatever the thread count.

exit status: 0 success, 1 internal error, 2 bad input or options, 130 interrupted,
141 the reader of standard output closed it early (e.g. | head)
"""


def _decompress_parser() -> argparse.ArgumentParser:
    p = OneLineErrorParser(prog="enerv-decompress", description="Decode an E-NeRV bitstream (.bin) into frames.",
                           epilog=_DECOMPRESS_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_version(p)
    p.add_argument("input", help="bitstream file")
    p.add_argument("-o", "--output", help="output file, PNG pattern, folder/ or - for a Y4M stream on standard "
                                          "output (see below; default: INPUT.decoded.mkv)")
    p.add_argument("--frames", help="decode only frames A:B (half-open)")
    p.add_argument("--info", action="store_true", help="print the header and the byte split as JSON, render nothing")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to render (auto: CUDA when present); the frames are the same on every device kind")
    p.add_argument("--threads", type=non_negative_int,
                   help="CPU: frames rendered at once, one thread each (default: PyTorch's thread count); "
                        "changes the speed, never the frames")
    return p


def _decompress(argv: Sequence[str] | None) -> int:
    from pipeline.errors import OutputClosed

    try:
        return _decode_command(argv)
    except (OutputClosed, BrokenPipeError):
        _detach_stdout()
        return EXIT_BROKEN_PIPE


def _detach_stdout() -> None:
    """Points standard output at /dev/null, so that the interpreter's last flush cannot fail."""
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by a test harness: nothing to do
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


def _decode_command(argv: Sequence[str] | None) -> int:
    args = _decompress_parser().parse_args(argv)
    from decompress.decode import bitstream_info, decode_to_video, info_json, read_file_bytes
    from pipeline.errors import InputError
    from pipeline.files import check_output_path
    from pipeline.render import resolve_device
    from pipeline.video_io import parse_frame_range
    from pipeline.video_writer import STDOUT, Y4M_COLOUR

    source = Path(args.input)
    if args.info:
        print(info_json(bitstream_info(read_file_bytes(source))))
        sys.stdout.flush()  # a closed pipe shows here, not at exit
        return EXIT_OK
    if args.threads == 0:
        raise InputError("--threads must be at least 1")
    to_stdout = args.output == STDOUT
    # By default beside the input, under a name that cannot be the original video's.
    output = Path(args.output) if args.output else source.with_name(source.stem + ".decoded.mkv")
    to_folder = args.output is not None and (args.output.endswith(("/", os.sep)) or output.is_dir())
    if to_stdout:
        if sys.stdout.isatty():
            raise InputError("-o - writes a binary Y4M stream: redirect standard output to a file or a pipe")
    elif to_folder:
        parent = output.parent if str(output.parent) else Path(".")
        if not parent.is_dir():
            raise InputError(f"output folder {parent} does not exist")
    else:
        check_output_path(output, [source])
    frame_range = parse_frame_range(args.frames) if args.frames else None
    device = resolve_device(args.device)
    target = args.output if to_stdout or to_folder else output
    summary = decode_to_video(read_file_bytes(source), target, frame_range, device, args.threads)
    fps = summary.frames / summary.seconds if summary.seconds > 0 else float("inf")
    shown = f"a Y4M stream ({Y4M_COLOUR}) to standard output" if to_stdout else str(output)
    print(f"wrote {shown}: frames {summary.indices.start}:{summary.indices.stop} ({summary.frames} frames of "
          f"{summary.width}x{summary.height}), decoded at {fps:.1f} frames/s on {summary.device}",
          file=sys.stderr if to_stdout else sys.stdout)
    if output.suffix.lower() == ".mp4":
        print("note: .mp4 output is re-encoded with H.264 (lossy); use .mkv for the exact decoded frames",
              file=sys.stderr)
    return EXIT_OK


# --- entry points -----------------------------------------------------------------------------


def compress_main(argv: Sequence[str] | None = None) -> int:
    return run_command(_compress, argv)


def decompress_main(argv: Sequence[str] | None = None) -> int:
    return run_command(_decompress, argv)


def bench_main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.rd import main as bench

    return run_command(bench, argv)


if __name__ == "__main__":
    sys.exit(compress_main())
