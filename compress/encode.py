"""The encoder: video in, ``.bin`` out, through fit -> prune -> quantize -> entropy-code."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from compress.fit import Clip, FitInterrupted, fit_network, save_checkpoint, train
from compress.prune import apply_masks, masked_weights, prune_by_magnitude
from compress.quantize import fake_quantized_weights, load_dequantized, quantize_network
from pipeline.bitstream import StreamHeader, read_bitstream, write_bitstream
from pipeline.config import CodecPreset, section_to_dict
from pipeline.errors import InputError
from pipeline.files import check_output_path, write_atomically
from pipeline.geometry import resolve_network
from pipeline.metrics import ms_ssim_mean, psnr
from pipeline.networks import build_network, count_parameters
from pipeline.render import render_frames, resolve_device
from pipeline.stages import StageTimer
from pipeline.video_io import probe_video, read_video

ENCODER_NAME = "enerv-codec 0.1.0"


@dataclass
class CompressResult:
    """What ``enerv-compress`` reports; also written as JSON with ``--json``."""

    output: str
    bytes: int
    bpp: float
    psnr: float
    ms_ssim: float | None
    frames: int
    width: int
    height: int
    fps: float
    parameters: int
    preset: str
    bits: int
    prune_ratio: float
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    fit_psnr: float | None = None  # before pruning and quantization, on 8-bit output
    size_split: dict[str, int] = field(default_factory=dict)
    device: str = "cpu"
    fit_history: list[dict] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def bits_per_pixel(num_bytes: int, width: int, height: int, frames: int) -> float:
    return 8.0 * num_bytes / (width * height * frames)


@contextlib.contextmanager
def _resumable_from(checkpoint: Path):
    """An interruption after fitting can resume from the fitted network's checkpoint."""
    try:
        yield
    except FitInterrupted:
        raise FitInterrupted(checkpoint) from None


def _run_fingerprint(preset: CodecPreset, source: Path, frames: np.ndarray) -> str:
    """Identifies a run, so that --resume never continues someone else's checkpoint."""
    h = hashlib.sha256()
    # Not the codec section: a fitted network can be pruned and quantized in other ways.
    h.update(json.dumps({k: section_to_dict(getattr(preset, k)) for k in ("network", "fit")},
                        sort_keys=True).encode())
    h.update(str(source.resolve()).encode())
    h.update(np.ascontiguousarray(frames[:: max(1, len(frames) // 8)]).tobytes())
    h.update(str(frames.shape).encode())
    return h.hexdigest()


def _load_checkpoint(path: Path, fingerprint: str) -> dict | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception:
        raise InputError(f"checkpoint {path} is unreadable; delete it to start over") from None
    if not isinstance(state, dict) or (state.get("tag") or {}).get("fingerprint") != fingerprint:
        raise InputError(f"checkpoint {path} belongs to a different input or configuration; delete it to start over")
    return state


def compress_video(
    source: str | Path,
    output: str | Path,
    preset: CodecPreset,
    *,
    frame_range: tuple[int, int | None] | None = None,
    size: tuple[int, int] | None = None,
    device: str = "auto",
    resume: bool = False,
    progress: bool = True,
) -> CompressResult:
    """Compresses a video into a ``.bin`` file and returns the measured result.

    The reported quality is measured on the frames rendered from the weights decoded
    from the file's own bytes, exactly what ``enerv-decompress`` will produce. The
    fitting checkpoint (``OUTPUT.ckpt``) is removed at the end; resuming from a finished
    fit with other codec settings re-runs only the codec stages.
    """
    source, output = Path(source), Path(output)
    check_output_path(output, [source])
    checkpoint = output.with_name(output.name + ".ckpt")
    if resume and not checkpoint.exists():
        raise InputError(f"--resume: no checkpoint {checkpoint} to resume from")
    timer = StageTimer()
    dev = resolve_device(device)

    with timer.stage("read"):
        probed = probe_video(source)
        # An unservable size is refused before the whole clip is decoded.
        resolve_network(preset.network, *(size or (probed.width, probed.height)))
        video = read_video(source, frame_range=frame_range, size=size)
    frames = video.frames
    T, H, W = frames.shape[:3]
    network = resolve_network(preset.network, W, H)
    fingerprint = _run_fingerprint(preset, source, frames)
    tag = {"fingerprint": fingerprint}
    state = _load_checkpoint(checkpoint, fingerprint) if resume else None

    torch.manual_seed(preset.fit.seed)
    model = build_network(network).to(dev)
    clip = Clip.from_numpy(frames, dev)
    fit_history: list[dict] = []
    if progress:
        print(f"fitting {count_parameters(model):,} parameters to {T} frames of {W}x{H} on {dev.type} "
              f"({preset.fit.epochs} epochs)", file=sys.stderr)

    with timer.stage("fit"):
        if state is not None and state.get("stage") == "fitted":
            model.load_state_dict(state["model"])
            fit_history = state["history"]
        else:
            result = fit_network(model, clip, preset.fit, progress=progress, checkpoint=checkpoint,
                                 checkpoint_tag=tag, resume_state=state)
            fit_history = result.history
            save_checkpoint(checkpoint, {"tag": tag, "stage": "fitted", "model": model.state_dict(),
                                         "history": fit_history})
    with timer.stage("evaluate-fit"):
        fit_psnr = psnr(render_frames(model, range(T), T, H, W), frames)

    codec = preset.codec
    with timer.stage("prune"), _resumable_from(checkpoint):
        masks = prune_by_magnitude(model, codec.prune_ratio)
        if masks:
            apply_masks(model, masks)
            if codec.prune_epochs:
                train(model, clip, preset.fit, epochs=codec.prune_epochs, lr=codec.finetune_lr,
                      transform=masked_weights(masks), desc="prune fine-tune", progress=progress)
                apply_masks(model, masks)

    with timer.stage("quantize"), _resumable_from(checkpoint):
        coded = quantize_network(model, codec.bits, masks, num_frames=T)
        if codec.qat_epochs:
            per_channel = {name: t.params.per_channel for (name, _), t in zip(model.named_parameters(), coded)}
            train(model, clip, preset.fit, epochs=codec.qat_epochs, lr=codec.finetune_lr,
                  transform=fake_quantized_weights(codec.bits, masks, per_channel), desc="quantization fine-tune",
                  progress=progress)
            apply_masks(model, masks)
            coded = quantize_network(model, codec.bits, masks, num_frames=T)

    with timer.stage("entropy-code"):
        header = StreamHeader(network, W, H, T, video.info.fps, ENCODER_NAME)
        data, split = write_bitstream(header, coded)
        # Check our own output: the decoder's weights must be the encoder's, bit for bit.
        parsed = read_bitstream(data)
        for ours, theirs in zip(coded, parsed.tensors):
            if not (np.array_equal(ours.symbols, theirs.symbols) and np.array_equal(ours.params.scales, theirs.params.scales)):
                raise RuntimeError("the bitstream does not decode to the encoder's weights")

    with timer.stage("evaluate"):
        decoded_model = build_network(network).to(dev)
        load_dequantized(decoded_model, parsed.tensors)
        rendered = render_frames(decoded_model, range(T), T, H, W)
        quality = psnr(rendered, frames)
        similarity = ms_ssim_mean(rendered, frames)

    with timer.stage("write"):
        write_atomically(output, data)
    checkpoint.unlink(missing_ok=True)

    return CompressResult(
        output=str(output),
        bytes=len(data),
        bpp=bits_per_pixel(len(data), W, H, T),
        psnr=quality,
        ms_ssim=similarity,
        frames=T,
        width=W,
        height=H,
        fps=video.info.fps,
        parameters=count_parameters(model),
        preset=preset.name,
        bits=codec.bits,
        prune_ratio=codec.prune_ratio,
        seconds=timer.total,
        stage_seconds={k: round(v, 3) for k, v in timer.seconds.items()},
        fit_psnr=fit_psnr,
        size_split={"header": split.header, "side_info": split.side_info, "masks": split.masks,
                    "payload": split.payload},
        device=dev.type,
        fit_history=fit_history,
    )

