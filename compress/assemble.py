"""The file of encoded segments: rate control over all of them, the container, the encoder's
check of its own bytes, and the measurement of the frames decoded from them.

The measurement streams: each segment's network renders a few frames at a time, which are
compared with the source frames and dropped, so that memory is bounded by one segment's source
frames (read again through ``frames_of``), not by the clip.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from compress.encode import SegmentEncoding
from compress.ratecontrol import step_multiplier
from compress.result import ENCODER_NAME, CompressResult
from pipeline.bitstream import CodedTensor, StreamHeader, read_bitstream, write_bitstream
from pipeline.config import NetworkConfig
from pipeline.metrics import bits_per_pixel, ms_ssim_mean, psnr_per_frame
from pipeline.networks import network_with_weights
from pipeline.quantization import dequantize
from pipeline.render import render_frames
from pipeline.stages import StageTimer


def write_segments(network: NetworkConfig, width: int, height: int, num_frames: int, fps: float,
                   segments: list[SegmentEncoding], coded: list[list[CodedTensor]]):
    """The container of these segments' ``coded`` tensors: (bytes, size split)."""
    estimate = round(sum(s.estimated_bits for s in segments) / 8, 1)
    header = StreamHeader(network, width, height, num_frames, fps, ENCODER_NAME, estimate)
    if len(coded) == 1:
        return write_bitstream(header, coded[0])
    return write_bitstream(header, coded, [s.span for s in segments])


def _check_own_bytes(data: bytes, chosen: list[list[CodedTensor]]):
    """The decoder's weights must be the encoder's, bit for bit; returns the parsed file."""
    parsed = read_bitstream(data)
    for coded, decoded in zip(chosen, parsed.segments):
        for ours, theirs in zip(coded, decoded.tensors):
            if not (np.array_equal(ours.symbols, theirs.symbols)
                    and np.array_equal(ours.params.scales, theirs.params.scales)):
                raise RuntimeError("the bitstream does not decode to the encoder's weights")
    return parsed


MEASURE_CHUNK = 8  # frames rendered, then measured, at a time


def measure(parsed, network: NetworkConfig, width: int, height: int, num_frames: int, frames_of,
            device: torch.device) -> tuple[float, float | None]:
    """Mean per-frame PSNR and MS-SSIM (None for frames too small) of the decoded file, with
    :data:`MEASURE_CHUNK` rendered frames in memory at a time besides one segment's source frames.

    Each chunk is rendered (one thread a frame, as the decoder does), then measured with all
    the threads; the renderer's frames do not depend on the chunking.
    """
    per_frame, ssim_sum, ssim_frames = [], 0.0, 0
    for decoded in parsed.segments:
        span = decoded.span
        model = network_with_weights(network, [dequantize(t.symbols, t.params) for t in decoded.tensors], device)
        source = frames_of(span)
        for first in range(0, span.count, MEASURE_CHUNK):
            chunk = range(first, min(first + MEASURE_CHUNK, span.count))
            rendered = render_frames(model, chunk, span.count, height, width)
            reference = source[chunk.start : chunk.stop]
            per_frame.append(psnr_per_frame(rendered, reference))
            ssim = ms_ssim_mean(rendered, reference)
            if ssim is not None:
                ssim_sum, ssim_frames = ssim_sum + ssim * len(chunk), ssim_frames + len(chunk)
            del rendered
        del source, model
    quality = float(np.mean(np.concatenate(per_frame)))
    return quality, (ssim_sum / ssim_frames if ssim_frames == num_frames else None)


def _multiplier_bounds(segments) -> tuple[float, float]:
    """The range every segment's steps may be scaled in (the narrowest of theirs)."""
    ranges = [s.quantized.multiplier_bounds(s.steered) for s in segments if s.quantized is not None]
    if not ranges:
        return 1 / 64, 64.0
    return max(r[0] for r in ranges), min(r[1] for r in ranges)


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

    def write(coded):
        return write_segments(network, width, height, num_frames, fps, segments, coded)

    with timer.stage("entropy-code"):
        if target_bytes is not None:
            bounds = _multiplier_bounds(segments)
            multiplier = step_multiplier(lambda m: len(write([s.coded_at(m) for s in segments])[0]), target_bytes,
                                         bounds=bounds)
        chosen = [s.coded_at(multiplier) for s in segments]
        data, split = write(chosen)
        parsed = _check_own_bytes(data, chosen)
    quality = similarity = math.nan
    if frames_of is not None:
        with timer.stage("evaluate"):
            quality, similarity = measure(parsed, network, width, height, num_frames, frames_of, device)
    stages: dict[str, float] = {}
    for segment in segments:
        for name, seconds in segment.stage_seconds.items():
            stages[name] = stages.get(name, 0.0) + seconds
    stages.update(timer.seconds)
    first, one = segments[0], len(segments) == 1
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
        fit_psnr=first.fit_psnr if one else float(np.mean([s.fit_psnr for s in segments])),
        size_split={"header": split.header, "side_info": split.side_info, "masks": split.masks,
                    "payload": split.payload, "latents": split.latents},
        device=device.type,
        fit_history=first.fit_history if one else [],
        fit_seconds=sum(s.fit_seconds for s in segments),
        fit_reused=all(s.fit_reused for s in segments),
        fit_key=first.fit_key if one else "",
        rate_lambda=first.rate_lambda,
        estimated_weight_bytes=round(sum(s.estimated_bits for s in segments) / 8, 1),
        coded_weight_bytes=split.payload + split.masks,
        epochs=first.epochs.as_list(),
        estimated_seconds=round(sum(s.estimated_seconds for s in segments), 1),
        segments=len(segments),
        target_bytes=target_bytes,
        step_multiplier=round(multiplier, 6),
    )
