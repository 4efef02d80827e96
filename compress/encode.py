"""The encoder: frames in, ``.bin`` bytes out, through fit -> prune -> quantize -> entropy-code.

:func:`compress_frames` is the library entry point (frames in memory, bytes out);
:func:`compress_video` reads a file, calls it and writes the result atomically.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from compress.fit import Clip, FitInterrupted, fit_network, save_checkpoint, train
from compress.plan import estimate_seconds, lay_over_budget, measure_step_seconds, plan_lines
from compress.prune import apply_masks, masked_weights, prune_by_magnitude
from compress.quantize import (
    NOISE,
    ROUND,
    STEP_LR,
    LearnedQuantizer,
    code_tensor,
    quantize_network,
    quantized_weights,
    scaled_steps,
)
from compress.ratecontrol import RatePlan, RateTarget, plan_for_target, step_multiplier
from pipeline.bitstream import CodedTensor, SegmentSpan, StreamHeader, read_bitstream, write_bitstream
from pipeline.config import CodecPreset, NetworkConfig, lambda_for_quality, override, section_to_dict
from pipeline.errors import InputError
from pipeline.geometry import resolve_network
from pipeline.metrics import bits_per_pixel, ms_ssim_mean, psnr, psnr_per_frame
from pipeline.networks import build_network, count_parameters, network_with_weights
from pipeline.presets import with_width
from pipeline.quantization import QuantParams, dequantize
from pipeline.render import render_frames, resolve_device
from pipeline.stages import StageTimer

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
    epochs: list[int] = field(default_factory=list)  # fit, prune, rate-distortion, rounding: as run
    estimated_seconds: float = 0.0  # the plan's estimate, from steps timed before fitting
    time_budget: float | None = None
    segments: int = 1
    target_bytes: int | None = None  # the rate target, when one was asked for
    step_multiplier: float = 1.0  # the factor on every step that brought the file to the target
    target_asked: str = ""  # how the target was asked for ("0.05 bpp", "250,000 bytes"...)
    width_factor: float = 1.0  # rate control's factor on the preset's channels

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


def _planned_epochs(checkpoint: Path | None) -> tuple[int, ...] | None:
    """The epochs a resumable run planned for its time budget, from its checkpoint's tag."""
    if checkpoint is None or not checkpoint.exists():
        return None
    with contextlib.suppress(Exception):
        state = torch.load(checkpoint, map_location="cpu", weights_only=False)
        epochs = (state.get("tag") or {}).get("epochs")
        if isinstance(epochs, list) and len(epochs) == 4 and all(isinstance(e, int) and e >= 0 for e in epochs):
            return tuple(epochs)
    return None


def _with_epochs(preset: CodecPreset, epochs: tuple[int, ...]) -> CodecPreset:
    fit, prune, rd, qat = epochs
    return override(preset, fit=override(preset.fit, epochs=fit),
                    codec=override(preset.codec, prune_epochs=prune, rd_epochs=rd, qat_epochs=qat))


def _epochs(preset: CodecPreset) -> tuple[int, int, int, int]:
    return preset.fit.epochs, preset.codec.prune_epochs, preset.codec.rd_epochs, preset.codec.qat_epochs


def _fit_stage(model: torch.nn.Module, clip: Clip, preset: CodecPreset, *, state: dict | None, cache_file: Path | None,
               fingerprint: str, tag: dict, checkpoint: Path | None, progress: bool,
               deadline: float | None) -> tuple[list[dict], float, bool]:
    """Fits ``model`` (or takes the fit from a checkpoint or the fit cache): (history, seconds, reused)."""
    dev = clip.frames.device
    if state is not None and state.get("stage") == "fitted":
        model.load_state_dict(state["model"])
        return state["history"], float(state.get("fit_seconds", 0.0)), bool(state.get("fit_reused", False))
    if (cache_file is not None and (cached := _load_cached_fit(cache_file, fingerprint, dev)) is not None
            and _load_weights(model, cached["model"])):
        history, seconds, reused = cached["history"], cached["seconds"], True
        if progress:
            print(f"fitted network taken from {cache_file} (the fit took {seconds:.1f} s)", file=sys.stderr)
    else:
        started = time.perf_counter()
        result = fit_network(model, clip, preset.fit, progress=progress, checkpoint=checkpoint, checkpoint_tag=tag,
                             resume_state=state, deadline=deadline)
        history, seconds, reused = result.history, time.perf_counter() - started, False
        if cache_file is not None and deadline is None:  # a fit cut short by a deadline is no one else's fit
            _store_fit(cache_file, fingerprint, dev, model, history, seconds)
    if checkpoint is not None:
        save_checkpoint(checkpoint, {"tag": tag, "stage": "fitted", "model": model.state_dict(), "history": history,
                                     "fit_seconds": seconds, "fit_reused": reused})
    return history, seconds, reused


def _quantize_stage(model: torch.nn.Module, clip: Clip, preset: CodecPreset, masks: dict, *, progress: bool,
                    deadline: float | None, size_of=None, target_bytes: int | None = None
                    ) -> tuple[LearnedQuantizer, float, float]:
    """Fine-tunes ``model`` on the file's grid with the rate term; returns the quantizer, lambda and
    the step multiplier applied before the rounding phase.

    With ``target_bytes`` (and ``size_of``: coded tensors -> file bytes), every step is scaled by
    one factor after the rate-distortion phase so that the file lands on the target, and the
    steps stay fixed through the rounding phase, which then adapts the weights to that grid.
    """
    codec, dev = preset.codec, clip.frames.device
    pixels = clip.num_frames * clip.height * clip.width
    quantizer = LearnedQuantizer(dict(model.named_parameters()), masks, bits=codec.bits,
                                 learn_steps=codec.learn_steps).to(dev)
    lam = lambda_for_quality(codec.quality) if codec.quality is not None else 0.0
    multiplier = 1.0
    phases = [(NOISE, codec.rd_epochs if lam else 0, "rate-distortion fine-tune"),
              (ROUND, codec.qat_epochs, "quantization fine-tune")]
    for mode, epochs, desc in phases:
        if mode == ROUND and target_bytes is not None:
            multiplier = step_multiplier(lambda m: size_of(_requantized(model, quantizer, m)), target_bytes)
            with torch.no_grad():
                quantizer.log_steps += math.log(multiplier)
            quantizer.log_steps.requires_grad_(False)
        if epochs:
            train(model, clip, preset.fit, epochs=epochs, lr=codec.finetune_lr,
                  transform=quantized_weights(quantizer, mode, lam, pixels), companion=quantizer,
                  companion_lr=STEP_LR, desc=desc, progress=progress, deadline=deadline)
    return quantizer, lam, multiplier


def _requantized(model: torch.nn.Module, quantizer: LearnedQuantizer, multiplier: float) -> list[CodedTensor]:
    coded = quantize_network(model, quantizer)
    if multiplier == 1.0:
        return coded
    steps = scaled_steps(np.array([c.params.scales[0] for c in coded], np.float16), multiplier)
    return [code_tensor(_masked_weight(model, quantizer, name), s, quantizer.max_symbol, c.mask)
            for name, s, c in zip(quantizer.names, steps, coded)]


def _masked_weight(model: torch.nn.Module, quantizer: LearnedQuantizer, name: str) -> np.ndarray:
    param = dict(model.named_parameters())[name]
    return quantizer._masked(name, param).detach().float().cpu().numpy()


@dataclass
class SegmentEncoding:
    """One segment encoded: its network's coded tensors and what happened on the way."""

    span: SegmentSpan
    coded: list[CodedTensor]
    parameters: int
    fit_psnr: float
    fit_history: list[dict]
    fit_seconds: float
    fit_reused: bool
    fit_key: str
    rate_lambda: float
    estimated_bits: float
    epochs: tuple[int, int, int, int]
    estimated_seconds: float
    stage_seconds: dict[str, float]
    # What a rate controller needs to move every step by one factor after training: the final
    # weights (masked, float32), the learned float16 steps and the symbol bound.
    weights: list[np.ndarray] = field(default_factory=list)
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float16))
    max_symbol: int = 0

    def coded_at(self, multiplier: float) -> list[CodedTensor]:
        """The tensors quantized with every step times ``multiplier`` (1: as trained)."""
        if multiplier == 1.0:
            return self.coded
        steps = scaled_steps(self.steps, multiplier)
        return [code_tensor(w, s, self.max_symbol, c.mask) for w, s, c in zip(self.weights, steps, self.coded)]


def segment_seed(seed: int, index: int) -> int:
    """The seed of segment ``index``: the preset's own for the first (so that a one-segment file is
    what it always was), and a different one for each other, whatever process encodes it."""
    return seed if index == 0 else seed + 1_000_003 * index


def encode_segment(
    frames: np.ndarray,
    preset: CodecPreset,
    network: NetworkConfig,
    span: SegmentSpan,
    *,
    index: int = 0,
    device: torch.device,
    progress: bool = True,
    fit_cache: Path | None = None,
    checkpoint: Path | None = None,
    resume: bool = False,
    source_id: str = "",
    time_budget: float | None = None,
    size_of=None,
    target_bytes: int | None = None,
) -> SegmentEncoding:
    """Fits, prunes and quantizes one network to ``frames`` (the segment ``span`` of a video).

    ``network`` is resolved for the video's size and the nominal segment length, the same for
    every segment. ``target_bytes`` (with ``size_of``, coded tensors -> file bytes): calibrate
    the steps to that size before the rounding phase. See :func:`compress_frames` for the other
    arguments.
    """
    started = time.perf_counter()
    T, H, W = frames.shape[:3]
    timer = StageTimer()
    torch.manual_seed(segment_seed(preset.fit.seed, index))
    model = build_network(network).to(device)
    clip = Clip.from_numpy(frames, device)

    with timer.stage("plan"):
        steps = measure_step_seconds(model, clip, preset)
        planned = _planned_epochs(checkpoint) if resume and time_budget is not None else None
        if planned is not None:
            preset = _with_epochs(preset, planned)
        elif time_budget is not None:
            preset = lay_over_budget(preset, steps, T, time_budget)
        estimate = estimate_seconds(preset, steps, T)
    if progress:
        for line in plan_lines(preset, count_parameters(model), T, W, H, device, steps, estimate, time_budget):
            print(line, file=sys.stderr)
    deadline = fit_deadline = None
    if time_budget is not None:  # the fit's share of the budget, by the planned epochs
        deadline = started + time_budget
        fit_epoch, _ = steps.epoch_seconds(preset, T)
        fit_deadline = started + time_budget * fit_epoch * preset.fit.epochs / max(estimate, 1e-9)

    fingerprint = _run_fingerprint(preset, source_id, frames)
    tag = {"fingerprint": fingerprint, "epochs": list(_epochs(preset))}
    state = _load_checkpoint(checkpoint, fingerprint) if resume else None
    cache_file = _fit_cache_file(fit_cache, fingerprint, device) if fit_cache is not None else None
    with timer.stage("fit"):
        fit_history, fit_seconds, fit_reused = _fit_stage(
            model, clip, preset, state=state, cache_file=cache_file, fingerprint=fingerprint, tag=tag,
            checkpoint=checkpoint, progress=progress, deadline=fit_deadline)
    with timer.stage("evaluate-fit"):
        fit_psnr = psnr(render_frames(model, range(T), T, H, W), frames)

    codec = preset.codec
    with timer.stage("prune"), _resumable_from(checkpoint):
        masks = prune_by_magnitude(model, codec.prune_ratio)
        if masks:
            apply_masks(model, masks)
            if codec.prune_epochs:
                train(model, clip, preset.fit, epochs=codec.prune_epochs, lr=codec.finetune_lr,
                      transform=masked_weights(masks), desc="prune fine-tune", progress=progress, deadline=deadline)
                apply_masks(model, masks)

    with timer.stage("quantize"), _resumable_from(checkpoint):
        quantizer, lam, _ = _quantize_stage(model, clip, preset, masks, progress=progress, deadline=deadline,
                                            size_of=size_of, target_bytes=target_bytes)
        coded = quantize_network(model, quantizer)
        estimated_bits = quantizer.estimated_bits(dict(model.named_parameters()))
        weights = [_masked_weight(model, quantizer, name) for name in quantizer.names]
    return SegmentEncoding(span, coded, count_parameters(model), fit_psnr, fit_history, fit_seconds, fit_reused,
                           fingerprint[:16], lam, estimated_bits, _epochs(preset), estimate,
                           dict(timer.seconds), weights, np.array([c.params.scales[0] for c in coded], np.float16),
                           quantizer.max_symbol)


def segment_spans(num_frames: int, segment_frames: int | None) -> list[SegmentSpan]:
    """Consecutive segments of ``segment_frames`` frames (the last one shorter); one without a length."""
    if segment_frames is None or segment_frames >= num_frames:
        return [SegmentSpan(0, num_frames)]
    if segment_frames < 1:
        raise InputError(f"a segment needs at least one frame, got {segment_frames}")
    return [SegmentSpan(first, min(segment_frames, num_frames - first))
            for first in range(0, num_frames, segment_frames)]


def overhead_bytes(network: NetworkConfig, width: int, height: int, num_frames: int, segments: int = 1) -> int:
    """What a file of this network costs besides its weights' symbols: the header (measured on a
    file of zero weights) and about 55 bytes of count tables per coded tensor (measured on the
    grid presets' files: 2,016 bytes of header and side information for 28 tensors)."""
    model = build_network(network)
    coded = [CodedTensor(QuantParams(np.ones(1, np.float16)), np.zeros(p.shape, np.int32), None)
             for p in model.parameters()]
    header = StreamHeader(network, width, height, num_frames, 24.0, ENCODER_NAME, 0.0)
    spans = segment_spans(num_frames, -(-num_frames // segments))
    data = (write_bitstream(header, coded)[0] if len(spans) == 1
            else write_bitstream(header, [coded] * len(spans), spans)[0])
    return len(data) + 55 * len(coded) * len(spans)


def preset_for_target(preset: CodecPreset, target: RateTarget, width: int, height: int, segment_frames: int,
                      segments: int = 1, scale_width: bool = True) -> tuple[CodecPreset, RatePlan]:
    """The preset with the width and the quality that rate control chose for ``target``."""
    base = preset.network

    def parameters_at(factor: float) -> int:
        return count_parameters(build_network(resolve_network(with_width(preset, factor).network, width, height,
                                                              segment_frames)))

    scalable = scale_width and base.kind == "enerv-grid"
    overhead = overhead_bytes(resolve_network(base, width, height, segment_frames), width, height,
                              segment_frames * segments, segments)
    plan = plan_for_target(preset, target, parameters_at, overhead, segments, scalable)
    chosen = with_width(preset, plan.width)
    return override(chosen, codec=replace(chosen.codec, quality=plan.quality)), plan


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
    time_budget: float | None = None,
    segment_frames: int | None = None,
    target: RateTarget | None = None,
    scale_width: bool = True,
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
    taken for another source's. ``time_budget`` (seconds): every epoch count is scaled so that
    the whole encode fits in it, from steps timed on this device, and each stage stops at the
    last epoch boundary before its deadline. ``segment_frames``: cut the clip into segments of
    that many frames, each its own network (None: one segment). ``target``: a file size to
    land on (:mod:`compress.ratecontrol`): the network's width (unless not ``scale_width``) and
    the quality knob are chosen for it, and every quantization step is then scaled by one
    factor so that the file lands on it.
    """
    started = time.perf_counter()
    frames = _checked_frames(frames, fps)
    if resume:
        _require_checkpoint(checkpoint)
    if time_budget is not None and not (time_budget > 0 and np.isfinite(time_budget)):
        raise InputError(f"the time budget must be a positive number of seconds, got {time_budget!r}")
    T, H, W = frames.shape[:3]
    spans = segment_spans(T, segment_frames)
    if len(spans) > 1 and checkpoint is not None:
        raise ValueError("checkpoints are kept per segment by compress_video; compress_frames takes none with segments")
    rate_plan = None
    if target is not None:
        preset, rate_plan = preset_for_target(preset, target, W, H, spans[0].count, len(spans), scale_width)
        if progress:
            print(f"rate: target {target.asked} = {target.bytes:,} bytes; network width x{rate_plan.width:g} "
                  f"({rate_plan.parameters:,} parameters), quality {rate_plan.quality:g}", file=sys.stderr)
    target_bytes = target.bytes if target is not None else None
    network = resolve_network(preset.network, W, H, spans[0].count)
    dev = resolve_device(device)
    segments = []
    header = StreamHeader(network, W, H, T, fps, ENCODER_NAME)
    one = len(spans) == 1 and target_bytes is not None
    for index, span in enumerate(spans):
        left = None if time_budget is None else time_budget * span.count / T
        segments.append(encode_segment(
            frames[span.first : span.stop], preset, network, span, index=index, device=dev, progress=progress,
            fit_cache=fit_cache, checkpoint=checkpoint, resume=resume, source_id=source_id, time_budget=left,
            size_of=(lambda coded: len(write_bitstream(header, coded)[0])) if one else None,
            target_bytes=target_bytes if one else None))
    data, result = assemble(segments, network, W, H, T, fps, lambda span: frames[span.first : span.stop], dev,
                            target_bytes=target_bytes)
    codec = preset.codec
    if rate_plan is not None:
        result = replace(result, width_factor=rate_plan.width, target_asked=target.asked)
    return data, replace(result, preset=preset.name, quality=codec.quality, bits=codec.bits,
                         prune_ratio=codec.prune_ratio, seconds=time.perf_counter() - started, time_budget=time_budget)


def assemble(segments: list[SegmentEncoding], network: NetworkConfig, width: int, height: int, num_frames: int,
             fps: float, frames_of, device: torch.device, target_bytes: int | None = None
             ) -> tuple[bytes, CompressResult]:
    """The file of encoded segments, checked against the encoder's symbols and measured on the
    frames decoded from its own bytes.

    ``frames_of(span)``: the source frames of a segment, or ``frames_of`` None not to measure.
    ``target_bytes``: first scale every step of every segment by one factor so that the whole
    file lands on this size (segments keep their share as equal lambda made it).
    """
    timer = StageTimer()
    multiplier = 1.0
    spans = [s.span for s in segments]

    def write(coded: list[list[CodedTensor]]) -> tuple[bytes, object]:
        estimate = round(sum(s.estimated_bits for s in segments) / 8, 1)
        header = StreamHeader(network, width, height, num_frames, fps, ENCODER_NAME, estimate)
        return write_bitstream(header, coded[0]) if len(coded) == 1 else write_bitstream(header, coded, spans)

    with timer.stage("entropy-code"):
        if target_bytes is not None:
            multiplier = step_multiplier(lambda m: len(write([s.coded_at(m) for s in segments])[0]), target_bytes)
        chosen = [s.coded_at(multiplier) for s in segments]
        data, split = write(chosen)
        estimate = round(sum(s.estimated_bits for s in segments) / 8, 1)
        # Check our own output: the decoder's weights must be the encoder's, bit for bit.
        parsed = read_bitstream(data)
        for coded, decoded in zip(chosen, parsed.segments):
            for ours, theirs in zip(coded, decoded.tensors):
                if not (np.array_equal(ours.symbols, theirs.symbols)
                        and np.array_equal(ours.params.scales, theirs.params.scales)):
                    raise RuntimeError("the bitstream does not decode to the encoder's weights")
    quality = similarity = math.nan
    if frames_of is not None:
        with timer.stage("evaluate"):
            per_frame, ssim_sum, ssim_frames = [], 0.0, 0
            for decoded in parsed.segments:
                span = decoded.span
                model = network_with_weights(network, [dequantize(t.symbols, t.params) for t in decoded.tensors],
                                             device)
                rendered = render_frames(model, range(span.count), span.count, height, width)
                source = frames_of(span)
                per_frame.append(psnr_per_frame(rendered, source))
                ssim = ms_ssim_mean(rendered, source)
                if ssim is not None:
                    ssim_sum, ssim_frames = ssim_sum + ssim * span.count, ssim_frames + span.count
            quality = float(np.mean(np.concatenate(per_frame)))
            similarity = ssim_sum / ssim_frames if ssim_frames == num_frames else None
    stages: dict[str, float] = {}
    for segment in segments:
        for name, seconds in segment.stage_seconds.items():
            stages[name] = stages.get(name, 0.0) + seconds
    stages.update(timer.seconds)
    first = segments[0]
    return data, CompressResult(
        output="",
        bytes=len(data),
        bpp=bits_per_pixel(len(data), width, height, num_frames),
        psnr=quality,
        ms_ssim=similarity,
        frames=num_frames,
        width=width,
        height=height,
        fps=fps,
        parameters=sum(s.parameters for s in segments),
        preset="",
        bits=None,
        prune_ratio=0.0,
        seconds=sum(stages.values()),
        stage_seconds={k: round(v, 3) for k, v in stages.items()},
        fit_psnr=float(np.mean([s.fit_psnr for s in segments])) if len(segments) > 1 else first.fit_psnr,
        size_split={"header": split.header, "side_info": split.side_info, "masks": split.masks,
                    "payload": split.payload},
        device=device.type,
        fit_history=first.fit_history if len(segments) == 1 else [],
        fit_seconds=sum(s.fit_seconds for s in segments),
        fit_reused=all(s.fit_reused for s in segments),
        fit_key=first.fit_key if len(segments) == 1 else "",
        rate_lambda=first.rate_lambda,
        estimated_weight_bytes=estimate,
        coded_weight_bytes=split.payload + split.masks,
        epochs=list(first.epochs),
        estimated_seconds=round(sum(s.estimated_seconds for s in segments), 1),
        segments=len(segments),
        target_bytes=target_bytes,
        step_multiplier=round(multiplier, 6),
    )


def plan_encode(frames: np.ndarray, preset: CodecPreset, *, device: str = "auto", time_budget: float | None = None,
                target: RateTarget | None = None, segments: int = 1, total_frames: int | None = None) -> list[str]:
    """The plan of an encode, from steps timed on this device; no fitting. ``frames``: the clip, or
    its first segment when it has ``segments`` of them (``total_frames`` in all)."""
    T, H, W = frames.shape[:3]
    total = total_frames or T
    spans = [SegmentSpan(0, T)] * segments
    lines = []
    if target is not None:
        preset, plan = preset_for_target(preset, target, W, H, T, segments)
        lines.append(f"plan: rate target {target.asked} = {target.bytes:,} bytes; network width x{plan.width:g}, "
                     f"quality {plan.quality:g}")
    dev = resolve_device(device)
    torch.manual_seed(preset.fit.seed)
    model = build_network(resolve_network(preset.network, W, H, spans[0].count)).to(dev)
    count = spans[0].count
    clip = Clip.from_numpy(frames[:count], dev)
    steps = measure_step_seconds(model, clip, preset)
    if time_budget is not None:
        preset = lay_over_budget(preset, steps, count, time_budget * count / total)
    estimate = estimate_seconds(preset, steps, count) * len(spans)
    lines += plan_lines(preset, count_parameters(model), count, W, H, dev, steps, estimate, time_budget)
    if len(spans) > 1:
        lines.append(f"plan: {len(spans)} segments of up to {count} frames, each its own network")
    return lines
