"""Renders frames from a network: the decoder's job, and the encoder's final check.

A frame's pixels depend only on the network, the frame's index and the device (and, on
the CPU, the kind of processor), never on which other frames are rendered, in what order,
or how many threads there are:

- every frame is rendered alone, by a forward pass of batch one, so no other frame can
  change the floating-point path (a batch of a different composition may round a pixel
  the other way);
- on the CPU, each frame is computed by a single thread and frames are spread over
  threads instead, so the thread count changes the speed, not the result;
- on CUDA, cuDNN is held to deterministic, non-benchmarked algorithms, and convolutions
  and matrix products to full float32 precision (no TF32), whatever the calling process
  set globally, which keeps GPU frames close to CPU frames;
- autocast is off: frames are rendered in float32.

The encoder measures its reported quality with these same functions, so the PSNR it
prints is that of the frames the decoder writes.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import torch
from torch import nn

from pipeline.errors import InputError
from pipeline.networks import frame_times, stage_widths


def cpu_activation_budget() -> int:
    """Bytes of activations the frames rendered at once on the CPU may hold together: a
    quarter of the machine's memory, at least 2 GiB. More threads than this allows render
    fewer frames at a time (never fewer than one)."""
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        physical = 0
    return max(2 << 30, physical // 4)


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` picks CUDA when present, otherwise the CPU."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda asked for, but no CUDA device is available")
    return torch.device(name)


def to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """[B,3,H,W] floats in [0,1] -> [B,H,W,3] uint8, rounding to nearest."""
    return (frames.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)


def frame_activation_bytes(model: nn.Module) -> int:
    """A generous estimate of the memory one frame's forward pass holds at its peak.

    The largest feature map is a stage's output; its input, the convolution's output
    before the pixel shuffle and the activation's output live beside it.
    """
    config = getattr(model, "config", None)
    if config is None or not getattr(config, "has_geometry", False):
        return 0
    h, w, largest = config.fc_h, config.fc_w, 0
    for (c_in, c_out), stride in zip(stage_widths(config), config.strides):
        before = c_in * h * w
        h, w = h * stride, w * stride
        largest = max(largest, before + 3 * c_out * h * w)
    return 4 * largest


@contextlib.contextmanager
def _pinned_settings(device: torch.device) -> Iterator[None]:
    """Process-wide settings that make a frame reproducible on ``device``, restored afterwards."""
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        if device.type == "cuda":
            # No TF32: its 10-bit products would move GPU frames far from CPU frames.
            with torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=True, allow_tf32=False):
                yield
        else:
            yield
    finally:
        torch.set_float32_matmul_precision(precision)


class FrameRenderer:
    """Renders single frames of one network, cropped to the video size, as uint8 [H,W,3].

    ``num_frames`` is the number of frames the network was fitted to: frame ``i`` is the
    network's output at time ``i / (num_frames - 1)``. ``threads`` (CPU only) is how many
    frames render at once, one thread each; by default PyTorch's intra-op thread count,
    lowered where their activations would exceed :func:`cpu_activation_budget`.
    """

    def __init__(self, model: nn.Module, num_frames: int, height: int, width: int, threads: int | None = None):
        self.model = model.eval()
        self.num_frames, self.height, self.width = num_frames, height, width
        self.device = next(model.parameters()).device
        self._times = frame_times(torch.arange(num_frames), num_frames).to(self.device)
        threads = threads or torch.get_num_threads()
        per_frame = frame_activation_bytes(model)
        self.threads = max(1, min(threads, cpu_activation_budget() // per_frame if per_frame else threads))

    def _forward(self, index: int) -> torch.Tensor:
        """The frame as uint8 [H,W,3] on the model's device (queued, not waited for, on CUDA)."""
        if not 0 <= index < self.num_frames:
            raise IndexError(f"frame {index} is outside the network's {self.num_frames} frames")
        t = self._times[index : index + 1]  # a view: no copy from the host, which would wait for the GPU
        # Thread-local modes, so entered in the thread that renders.
        with torch.inference_mode(), torch.autocast(self.device.type, enabled=False):
            out = self.model(t)[:, :, : self.height, : self.width]
            return to_uint8(out.float())[0].contiguous()

    def frames(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        """Yields each requested frame, in the order asked, as soon as it is ready.

        Close the iterator (or exhaust it) to release the threads; ``with
        contextlib.closing(...)`` does so when the consumer stops early.
        """
        with _pinned_settings(self.device):
            if self.device.type == "cuda":
                yield from self._frames_cuda(indices)
            else:
                yield from self._frames_cpu(indices)

    def _frames_cpu(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        threads = torch.get_num_threads()
        # Worker threads read the intra-op thread count when they first run an operator:
        # set it before they start, so that each frame is computed by one thread.
        torch.set_num_threads(1)
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="render")
        pending: deque[Future] = deque()
        try:
            for index in indices:
                pending.append(pool.submit(self._forward, index))
                if len(pending) > self.threads:
                    yield pending.popleft().result().numpy()
            while pending:
                yield pending.popleft().result().numpy()
        finally:
            for future in pending:
                future.cancel()
            pool.shutdown(wait=True)
            torch.set_num_threads(threads)

    def _frames_cuda(self, indices: Sequence[int]) -> Iterator[np.ndarray]:
        # One frame ahead: the next frame's kernels are queued before waiting for the copy
        # of the previous one, so the GPU never idles while a frame is handed on.
        ready: tuple[torch.Tensor, torch.cuda.Event] | None = None
        with torch.cuda.device(self.device):
            stream = torch.cuda.current_stream(self.device)
            for index in indices:
                frame = self._forward(index)
                host = torch.empty(frame.shape, dtype=torch.uint8, pin_memory=True)
                host.copy_(frame, non_blocking=True)
                copied = torch.cuda.Event()
                copied.record(stream)
                if ready is not None:
                    ready[1].synchronize()
                    yield ready[0].numpy()
                ready = (host, copied)
            if ready is not None:
                ready[1].synchronize()
                yield ready[0].numpy()


def iter_rendered(model: nn.Module, indices: Sequence[int], num_frames: int, height: int, width: int,
                  threads: int | None = None) -> Iterator[np.ndarray]:
    """Yields uint8 [H,W,3] frames for the given indices, in order (see :class:`FrameRenderer`).

    Each frame depends only on its own index, so any subset renders on its own (random
    access): rendering frames 10..11 costs two frames, not eleven.
    """
    return FrameRenderer(model, num_frames, height, width, threads).frames(indices)


def render_frames(model: nn.Module, indices: Sequence[int], num_frames: int, height: int, width: int,
                  threads: int | None = None) -> np.ndarray:
    """All the requested frames as one uint8 [N,H,W,3] array, identical to any subset's."""
    out = np.empty((len(indices), height, width, 3), np.uint8)
    with contextlib.closing(iter_rendered(model, indices, num_frames, height, width, threads)) as frames:
        for i, frame in enumerate(frames):
            out[i] = frame
    return out
