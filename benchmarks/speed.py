"""Speed benchmark: fit and render throughput, entropy decoding rate, peak memory.

    python -m benchmarks.speed [--preset NAME | --config FILE] [--input VIDEO] [--device auto]
    python -m benchmarks.speed --decode-only --preset NAME --size WxH [--device auto]
    python -m benchmarks.speed --decode-only --file FILE.bin [--device auto]

Prints one JSON object on stdout (also written to ``--json PATH``) and, on stderr, a table of
where a training step's time goes. Times are medians over repeated runs after a warm-up. The fit
throughput times :func:`compress.fit.training_step`, the step that fitting runs, as the preset's
fit runs it (with ``codec.rate_from_start``, on the noisy quantizer's weights with the rate
term); ``step_parts`` splits that step into its parts (:mod:`benchmarks.step_parts`). The
``decode`` part times the decoder's own steps on a file of the preset at the given size
(entropy decoding, network build, batch-invariant rendering), beside a batched forward
pass of 8 frames for comparison. With ``--file``, the decoder's steps are timed on that file
(every frame), and the whole ``enerv-decompress FILE -o -`` command beside the start of a process
that only imports the decoder, so that frames per second are given with and without it.
"""

from __future__ import annotations

import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.machine import machine_info
from benchmarks.step_parts import StepParts, fit_step_for, measure_step_parts, step_parts_table
from compress.fit import Clip, training_step
from compress.prune import apply_masks, prune_by_magnitude
from compress.quantize import LATENT_STEP, quantize_network, quantizer_for
from decompress.frame_source import load_network
from pipeline.bitstream import StreamHeader, read_bitstream, write_bitstream
from pipeline.cli_common import OneLineErrorParser, run_command
from pipeline.config import load_config, load_preset
from pipeline.geometry import resolve_network
from pipeline.kinds import network_kind
from pipeline.networks import build_network, count_parameters, frame_times
from pipeline.render import FrameRenderer, resolve_device
from pipeline.stages import median_seconds
from pipeline.video_io import probe_video, read_video

DEFAULT_INPUT = Path(__file__).resolve().parent.parent / "data" / "bunny_320x180_48f.mkv"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_seconds(fn, device: torch.device, repeats: int, warmup: int = 2) -> float:
    """pipeline.stages.median_seconds, with the device's queue drained around each timed call."""
    return median_seconds(fn, repeats=repeats, warmup=warmup, sync=(lambda: _sync(device)))


def measure(preset, frames: np.ndarray, device: torch.device, repeats: int, reference_size: int = 256) -> dict:
    """The fit, render and entropy-decoding figures of ``preset`` on ``frames``; ``step_parts``
    holds :class:`benchmarks.step_parts.StepParts` (its reference convolution at ``reference_size``)."""
    T, H, W = frames.shape[:3]
    network = resolve_network(preset.network, W, H, T)
    torch.manual_seed(0)
    model = build_network(network).to(device)
    clip = Clip.from_numpy(frames, device)
    batch = preset.fit.batch_size
    idx = torch.arange(min(batch, T), device=device)
    # The step, weight transform and optimizer that fitting runs, at the preset's learning rates.
    step = fit_step_for(preset, model, clip, idx)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def fit_step():
        if training_step(model, step.params, step.optimizer, clip, idx, preset.fit, step.transform) is None:
            raise RuntimeError("the loss is not finite; the timing would not be of a training step")

    fit_s = _median_seconds(fit_step, device, repeats)
    parts = measure_step_parts(step, repeats, reference_size=reference_size)
    render_batch = torch.arange(min(8, T), device=device)
    model.eval()

    def render():
        with torch.inference_mode():
            model(frame_times(render_batch, T))

    render_s = _median_seconds(render, device, repeats)

    coded = quantize_network(model, step.quantizer or quantizer_for(model, preset.codec))
    data, _ = write_bitstream(StreamHeader(network, W, H, T, 24.0), coded)
    symbols = sum(c.symbols.size for c in coded)
    decode_s = _median_seconds(lambda: read_bitstream(data), torch.device("cpu"), max(3, repeats // 2), warmup=1)

    peak = (torch.cuda.max_memory_allocated() if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {
        "preset": preset.name,
        "device": device.type,
        "parameters": count_parameters(model),
        "frames": T,
        "width": W,
        "height": H,
        "batch_size": batch,
        "fit_frames_per_second": len(idx) / fit_s,
        "fit_seconds_per_epoch": T / (len(idx) / fit_s),
        "fit_rate_term": step.transform is not None,
        "step_parts": parts,
        "render_frames_per_second": len(render_batch) / render_s,
        "entropy_decode_symbols_per_second": symbols / decode_s,
        "bitstream_bytes": len(data),
        "peak_memory_bytes": int(peak),
        "peak_memory_kind": "cuda max allocated" if device.type == "cuda" else "process max RSS",
        "repeats": repeats,
        "machine": machine_info(device.type, codecs=False),
    }


def _fill_latents(model: torch.nn.Module) -> None:
    """The latent grids of ``model`` (if its kind has them) set to noise of about two latent steps."""
    kind = network_kind(model.config.kind)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if kind.is_latent(name):
                p.normal_(0.0, 2 * LATENT_STEP)


def _emit(result: dict, json_path: str | None, parts: StepParts | None) -> None:
    """The JSON on stdout (and in ``json_path``), the step's table on stderr."""
    text = json.dumps(result, indent=2, default=lambda o: o.as_dict())
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")
    if parts is not None:
        print(step_parts_table(parts), file=sys.stderr)


def measure_decode(preset, width: int, height: int, device: torch.device, frames: int, repeats: int) -> dict:
    """The decoder's steps on a file of ``preset`` at ``width`` x ``height``, ``frames`` long.

    The weights are random (pruned and quantized as the preset says): the speed of dense
    layers does not depend on their values. Latent grids (which the network starts at zero) are
    filled with noise of about two steps, so that their context coder decodes symbols of some
    variety, and carry the quantizer's context models as in a real file. Rendering goes through
    the decoder's renderer, one frame per forward pass, each frame on the host when timed; the
    batched forward pass beside it (8 frames at once, output left on the device) is what
    rendering cost before it was made batch-invariant, timed alternately in the same process.
    """
    network = resolve_network(preset.network, width, height, frames)
    torch.manual_seed(0)
    model = build_network(network)
    _fill_latents(model)
    masks = prune_by_magnitude(model, preset.codec.prune_ratio)
    apply_masks(model, masks)
    coded = quantize_network(model, quantizer_for(model, preset.codec, masks))
    data, _ = write_bitstream(StreamHeader(network, width, height, frames, 24.0), coded)
    symbols = sum(c.symbols.size for c in coded)
    entropy_s = _median_seconds(lambda: read_bitstream(data), torch.device("cpu"), max(3, repeats // 2), warmup=1)
    parsed = read_bitstream(data)
    build_s = _median_seconds(lambda: load_network(parsed, device), device, max(3, repeats // 2), warmup=1)

    decoded = load_network(parsed, device)
    renderer = FrameRenderer(decoded, frames, height, width)
    batch = torch.arange(min(8, frames), device=device)

    def render_each():
        for _ in renderer.frames(range(frames)):
            pass

    def forward_batched():
        with torch.inference_mode():
            for start in range(0, frames, len(batch)):
                decoded(frame_times(batch + start, frames))

    render_each()  # warm-up
    forward_batched()
    _sync(device)
    times: dict[str, list[float]] = {"each": [], "batched": []}
    for i in range(repeats):
        order = (("each", render_each), ("batched", forward_batched))
        for name, fn in order if i % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    batched_frames = len(batch) * -(-frames // len(batch))
    each_fps = frames / statistics.median(times["each"])
    batched_fps = batched_frames / statistics.median(times["batched"])
    return {
        "preset": preset.name,
        "device": device.type,
        "width": width,
        "height": height,
        "parameters": count_parameters(model),
        "bitstream_bytes": len(data),
        "entropy_decode_seconds": entropy_s,
        "entropy_decode_symbols_per_second": symbols / entropy_s,
        "network_build_seconds": build_s,
        "render_frames": frames,
        "render_threads": renderer.threads if device.type == "cpu" else None,
        "render_frames_per_second": each_fps,
        "batched_forward_frames_per_second": batched_fps,
        "render_vs_batched": each_fps / batched_fps,
        "repeats": repeats,
        "machine": machine_info(device.type, codecs=False),
    }


def _wall_seconds(command: list[str], repeats: int) -> float:
    """The median wall time of running ``command`` (its output discarded)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def measure_file_decode(path: Path, device: torch.device, repeats: int) -> dict:
    """The decoder's steps on a real file (every frame), and the whole command against a process
    that only starts and imports the decoder."""
    from decompress.decode import read_file_bytes

    data = read_file_bytes(path)
    parsed = read_bitstream(data)
    header = parsed.header
    frames = header.num_frames
    entropy_s = _median_seconds(lambda: read_bitstream(data), torch.device("cpu"), max(3, repeats // 2), warmup=1)
    build_s = _median_seconds(lambda: load_network(parsed, device), device, max(3, repeats // 2), warmup=1)
    decoded = load_network(parsed, device)
    renderer = FrameRenderer(decoded, frames, header.height, header.width)

    def render_all():
        for _ in renderer.frames(range(frames)):
            pass

    render_s = _median_seconds(render_all, device, max(3, repeats // 2), warmup=1)
    python = sys.executable
    start_s = _wall_seconds([python, "-c", "import decompress.decode, pipeline.video_writer"], 3)
    command_s = _wall_seconds([python, "-c", "import sys, cli; sys.exit(cli.decompress_main(sys.argv[1:]))",
                               str(path), "-o", "-", "--device", device.type], 3)
    return {
        "file": str(path),
        "format_version": parsed.version,
        "kind": header.network.kind,
        "device": device.type,
        "width": header.width,
        "height": header.height,
        "frames": frames,
        "bitstream_bytes": len(data),
        "entropy_decode_seconds": entropy_s,
        "network_build_seconds": build_s,
        "render_seconds": render_s,
        "render_threads": renderer.threads if device.type == "cpu" else None,
        "decode_frames_per_second": frames / (entropy_s + build_s + render_s),
        "process_start_seconds": start_s,
        "command_seconds": command_s,
        "command_frames_per_second": frames / command_s,
        "command_frames_per_second_after_start": frames / max(command_s - start_s, 1e-9),
        "repeats": repeats,
        "machine": machine_info(device.type, codecs=False),
    }


def main(argv: list[str] | None = None) -> int:
    p = OneLineErrorParser(prog="python -m benchmarks.speed", description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="enerv-cpu-s")
    p.add_argument("--config")
    p.add_argument("--input", default=str(DEFAULT_INPUT))
    p.add_argument("--frames", default="0:16", help="frame range to load (A:B)")
    p.add_argument("--size", help="resize to WxH")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--decode-only", action="store_true", help="only the decoder's figures (no fitting)")
    p.add_argument("--decode-frames", type=int, default=16, help="frames rendered per decode run")
    p.add_argument("--file", help="with --decode-only: time the decoder on this .bin file instead")
    p.add_argument("--reference-size", type=int, default=256, metavar="N",
                   help="side of the reference 3x3 convolution (64->64, batch 4) (default: 256)")
    p.add_argument("--json", metavar="PATH", help="also write the JSON object to PATH")
    args = p.parse_args(argv)
    from pipeline.video_io import parse_frame_range, parse_frame_size

    preset = load_config(args.config) if args.config else load_preset(args.preset)
    device = resolve_device(args.device)
    if args.decode_only and args.file:
        _emit({"decode": measure_file_decode(Path(args.file), device, args.repeats)}, args.json, None)
        return 0
    if args.decode_only:
        if args.size:
            width, height = parse_frame_size(args.size)
        else:
            info = probe_video(args.input)
            width, height = info.width, info.height
        decode = measure_decode(preset, width, height, device, args.decode_frames, args.repeats)
        _emit({"decode": decode}, args.json, None)
        return 0
    video = read_video(args.input, frame_range=parse_frame_range(args.frames),
                       size=parse_frame_size(args.size) if args.size else None)
    result = measure(preset, video.frames, device, args.repeats, args.reference_size)
    # After the fitting figures, so that its memory does not count in their peak.
    result["decode"] = measure_decode(preset, video.info.width, video.info.height, device, args.decode_frames,
                                      args.repeats)
    _emit(result, args.json, result["step_parts"])
    return 0


if __name__ == "__main__":
    sys.exit(run_command(main, sys.argv[1:]))
