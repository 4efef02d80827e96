"""The encoder: frames in, ``.bin`` bytes out, through fit -> prune -> quantize -> entropy-code.

:func:`compress_frames` is the library entry point (frames in memory, bytes out);
:func:`compress_video` reads a file, calls it and writes the result atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from compress.fit import Clip, FitInterrupted, fit_network, save_checkpoint, train
from compress.prune import apply_masks, masked_weights, prune_by_magnitude
from compress.quantize import NOISE, ROUND, STEP_LR, LearnedQuantizer, quantize_network, quantized_weights
from pipeline.bitstream import StreamHeader, read_bitstream, write_bitstream
from pipeline.config import CodecPreset, lambda_for_quality, section_to_dict
from pipeline.errors import InputError
from pipeline.files import check_output_path, write_atomically
from pipeline.geometry import resolve_network
from pipeline.metrics import bits_per_pixel, ms_ssim_mean, psnr
from pipeline.networks import build_network, count_parameters, network_with_weights
from pipeline.quantization import dequantize
from pipeline.render import render_frames, resolve_device
from pipeline.stages import StageTimer
from pipeline.video_io import probe_video, read_video

ENCODER_NAME = "enerv-codec 0.1.0"


@dataclass
class CompressResult:
    """What ``enerv-compress`` reports; also written as JSON with ``--json``.

    ``seconds`` and ``stage_seconds`` time this call. ``fit_seconds`` is the time the fit
    took where it ran: in this call, or, when ``fit_reused``, in the earlier call that put
    it in the fit cache (``stage_seconds["fit"]`` is then only the time to load it).
    """

    output: str  # the file written; empty when compress_frames only returned the bytes
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
    bits: int | None  # the alphabet's bit depth; None: as wide as the steps need
    prune_ratio: float
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    fit_psnr: float | None = None  # before pruning and quantization, on 8-bit output
    size_split: dict[str, int] = field(default_factory=dict)
    device: str = "cpu"
    fit_history: list[dict] = field(default_factory=list)
    fit_seconds: float = 0.0
    fit_reused: bool = False
    fit_key: str = ""  # identifies the fit (network + fit settings + frames): equal keys, equal fits
    quality: float | None = None  # the rate knob, and the lambda it gave
    rate_lambda: float = 0.0
    # The rate term's estimate (Laplace model of the rounded weights) beside the coded weights
    # (payload and masks, without the header and symbol tables): how well training saw the rate.
    estimated_weight_bytes: float = 0.0
    coded_weight_bytes: int = 0

    def to_json(self) -> dict:
        return asdict(self)


@contextlib.contextmanager
def _resumable_from(checkpoint: Path):
    """An interruption after fitting can resume from the fitted network's checkpoint."""
    try:
        yield
    except FitInterrupted:
        raise FitInterrupted(checkpoint) from None


def _run_fingerprint(preset: CodecPreset, source_id: str, frames: np.ndarray) -> str:
    """Identifies a fit, so that --resume never continues someone else's checkpoint and the
    fit cache never hands out another clip's network."""
    h = hashlib.sha256()
    # Not the codec section: a fitted network can be pruned and quantized in other ways.
    h.update(json.dumps({k: section_to_dict(getattr(preset, k)) for k in ("network", "fit")},
                        sort_keys=True).encode())
    h.update(source_id.encode())
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


def _require_checkpoint(checkpoint: Path | None) -> Path:
    if checkpoint is None:
        raise ValueError("resume needs the checkpoint's path")
    if not checkpoint.exists():
        raise InputError(f"--resume: no checkpoint {checkpoint} to resume from")
    return checkpoint


def _fit_cache_file(folder: Path, fingerprint: str, device: torch.device) -> Path:
    # The device is part of the key: a fit on a GPU (bf16) is not the fit a CPU makes.
    return folder / f"{fingerprint[:32]}-{device.type}.pt"


def _load_cached_fit(path: Path, fingerprint: str, device: torch.device) -> dict | None:
    """The cached fit at ``path`` if it is there, readable and this fit's; None otherwise (fit again)."""
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - missing or damaged: the fit runs and replaces it
        return None
    if (not isinstance(entry, dict) or entry.get("fingerprint") != fingerprint or entry.get("device") != device.type
            or not isinstance(entry.get("model"), dict) or not isinstance(entry.get("history"), list)
            or not isinstance(entry.get("seconds"), float)):
        return None
    return entry


def _load_weights(model: torch.nn.Module, state: dict) -> bool:
    """Loads a cached fit's weights; False, with the model untouched, when they are not this
    code's network (another version of it wrote the cache): the fit then runs."""
    own = model.state_dict()
    if state.keys() != own.keys() or any(not isinstance(state[k], torch.Tensor) or state[k].shape != v.shape
                                         for k, v in own.items()):
        return False
    model.load_state_dict(state)
    return True


def _store_fit(path: Path, fingerprint: str, device: torch.device, model: torch.nn.Module, history: list[dict],
               seconds: float) -> None:
    path.parent.mkdir(exist_ok=True)
    save_checkpoint(path, {"fingerprint": fingerprint, "device": device.type, "seconds": float(seconds),
                           "history": history,
                           "model": {k: v.detach().cpu() for k, v in model.state_dict().items()}})


def _checked_frames(frames: np.ndarray, fps: float) -> np.ndarray:
    if not isinstance(frames, np.ndarray) or frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise InputError(f"expected uint8 RGB frames [T,H,W,3], got {getattr(frames, 'dtype', type(frames))} "
                         f"{getattr(frames, 'shape', '')}")
    if frames.shape[0] < 1:
        raise InputError("no frames to compress")
    if not (fps > 0 and np.isfinite(fps)):
        raise InputError(f"the frame rate must be a positive number, got {fps!r}")
    return frames


def compress_frames(
    frames: np.ndarray,
    fps: float,
    preset: CodecPreset,
    *,
    device: str = "auto",
    progress: bool = True,
    fit_cache: Path | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    source_id: str = "",
) -> tuple[bytes, CompressResult]:
    """Compresses uint8 RGB frames [T,H,W,3] and returns the bitstream's bytes and the measured result.

    Writes no output file. The reported quality is measured on the frames rendered from the
    weights decoded from the returned bytes, exactly what ``enerv-decompress`` will produce.

    ``checkpoint``: where fitting checkpoints go (every minute, and on Ctrl-C or SIGTERM,
    which raise :class:`FitInterrupted`); it is left for the caller to remove once the bytes
    are safely stored. ``resume`` continues from it; resuming from a finished fit with other
    codec settings re-runs only the codec stages. ``fit_cache``: a folder of fitted networks,
    keyed by the fingerprint that ``resume`` checks (network and fit settings, ``source_id``,
    the frames) and the device; a fit found there is not run again (``fit_reused``), and a
    fit that runs is stored there. Calls that differ only in the ``codec`` section thus share
    one fit. ``source_id`` names the source, so that neither a checkpoint nor a cached fit is
    taken for another source's.
    """
    frames = _checked_frames(frames, fps)
    if resume:
        _require_checkpoint(checkpoint)
    T, H, W = frames.shape[:3]
    network = resolve_network(preset.network, W, H, T)
    timer = StageTimer()
    dev = resolve_device(device)
    fingerprint = _run_fingerprint(preset, source_id, frames)
    tag = {"fingerprint": fingerprint}
    state = _load_checkpoint(checkpoint, fingerprint) if resume else None
    cache_file = _fit_cache_file(fit_cache, fingerprint, dev) if fit_cache is not None else None

    torch.manual_seed(preset.fit.seed)
    model = build_network(network).to(dev)
    clip = Clip.from_numpy(frames, dev)
    fit_reused = False
    with timer.stage("fit"):
        if state is not None and state.get("stage") == "fitted":
            model.load_state_dict(state["model"])
            fit_history, fit_seconds = state["history"], float(state.get("fit_seconds", 0.0))
            fit_reused = bool(state.get("fit_reused", False))
        elif (cache_file is not None and (cached := _load_cached_fit(cache_file, fingerprint, dev)) is not None
              and _load_weights(model, cached["model"])):
            fit_history, fit_seconds, fit_reused = cached["history"], cached["seconds"], True
            if progress:
                print(f"fitted network of {count_parameters(model):,} parameters taken from {cache_file} "
                      f"(the fit took {fit_seconds:.1f} s)", file=sys.stderr)
        else:
            if progress:
                print(f"fitting {count_parameters(model):,} parameters to {T} frames of {W}x{H} on {dev.type} "
                      f"({preset.fit.epochs} epochs)", file=sys.stderr)
            started = time.perf_counter()
            result = fit_network(model, clip, preset.fit, progress=progress, checkpoint=checkpoint,
                                 checkpoint_tag=tag, resume_state=state)
            fit_history, fit_seconds = result.history, time.perf_counter() - started
            if cache_file is not None:
                _store_fit(cache_file, fingerprint, dev, model, fit_history, fit_seconds)
        if checkpoint is not None and (state is None or state.get("stage") != "fitted"):
            save_checkpoint(checkpoint, {"tag": tag, "stage": "fitted", "model": model.state_dict(),
                                         "history": fit_history, "fit_seconds": fit_seconds,
                                         "fit_reused": fit_reused})
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
        quantizer = LearnedQuantizer(dict(model.named_parameters()), masks, bits=codec.bits,
                                     learn_steps=codec.learn_steps).to(dev)
        lam = lambda_for_quality(codec.quality) if codec.quality is not None else 0.0
        if codec.rd_epochs and lam:
            train(model, clip, preset.fit, epochs=codec.rd_epochs, lr=codec.finetune_lr,
                  transform=quantized_weights(quantizer, NOISE, lam, T * H * W), companion=quantizer,
                  companion_lr=STEP_LR, desc="rate-distortion fine-tune", progress=progress)
        if codec.qat_epochs:
            train(model, clip, preset.fit, epochs=codec.qat_epochs, lr=codec.finetune_lr,
                  transform=quantized_weights(quantizer, ROUND, lam, T * H * W), companion=quantizer,
                  companion_lr=STEP_LR, desc="quantization fine-tune", progress=progress)
        coded = quantize_network(model, quantizer)
        estimated_bits = quantizer.estimated_bits(dict(model.named_parameters()))

    with timer.stage("entropy-code"):
        header = StreamHeader(network, W, H, T, fps, ENCODER_NAME)
        data, split = write_bitstream(header, coded)
        # Check our own output: the decoder's weights must be the encoder's, bit for bit.
        parsed = read_bitstream(data)
        for ours, theirs in zip(coded, parsed.tensors):
            if not (np.array_equal(ours.symbols, theirs.symbols) and np.array_equal(ours.params.scales, theirs.params.scales)):
                raise RuntimeError("the bitstream does not decode to the encoder's weights")

    with timer.stage("evaluate"):
        decoded_model = network_with_weights(network, [dequantize(t.symbols, t.params) for t in parsed.tensors], dev)
        rendered = render_frames(decoded_model, range(T), T, H, W)
        quality = psnr(rendered, frames)
        similarity = ms_ssim_mean(rendered, frames)

    return data, CompressResult(
        output="",
        bytes=len(data),
        bpp=bits_per_pixel(len(data), W, H, T),
        psnr=quality,
        ms_ssim=similarity,
        frames=T,
        width=W,
        height=H,
        fps=fps,
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
        fit_seconds=fit_seconds,
        fit_reused=fit_reused,
        fit_key=fingerprint[:16],
        quality=codec.quality,
        rate_lambda=lam,
        estimated_weight_bytes=round(estimated_bits / 8, 1),
        coded_weight_bytes=split.payload + split.masks,
    )


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
    fit_cache: Path | None = None,
) -> CompressResult:
    """Reads a video, compresses it with :func:`compress_frames` and writes the ``.bin`` atomically.

    The fitting checkpoint is ``OUTPUT.ckpt`` (``resume`` continues from it); it is removed
    once the file is written.
    """
    source, output = Path(source), Path(output)
    check_output_path(output, [source])
    checkpoint = output.with_name(output.name + ".ckpt")
    if resume:
        _require_checkpoint(checkpoint)
    timer = StageTimer()
    with timer.stage("read"):
        # An unservable size is refused before the whole clip is decoded: from the requested
        # size, or else from the one probe of the source.
        if size is None:
            probed = probe_video(source)
            resolve_network(preset.network, probed.width, probed.height)
        else:
            resolve_network(preset.network, *size)
        video = read_video(source, frame_range=frame_range, size=size)
    data, result = compress_frames(video.frames, video.info.fps, preset, device=device, progress=progress,
                                   fit_cache=fit_cache, checkpoint=checkpoint, resume=resume,
                                   source_id=str(source.resolve()))
    with timer.stage("write"):
        write_atomically(output, data)
    checkpoint.unlink(missing_ok=True)
    stages = {"read": round(timer.seconds["read"], 3), **result.stage_seconds,
              "write": round(timer.seconds["write"], 3)}
    return replace(result, output=str(output), seconds=result.seconds + timer.total, stage_seconds=stages)
