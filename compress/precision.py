"""Which precision fitting computes in: bf16 autocast where the device computes it natively."""

from __future__ import annotations

import contextlib
import functools
import re
from pathlib import Path

import torch


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 matrix products in hardware (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def uses_bf16(device: torch.device, precision: str) -> bool:
    """Whether fitting on ``device`` computes in bf16 (autocast) for this ``precision`` setting."""
    if precision == "float32" or device.type not in ("cuda", "cpu"):
        return False
    if precision == "bf16" or device.type == "cuda":
        return True
    return cpu_has_native_bf16()


def autocast_for(device: torch.device, precision: str):
    """bf16 autocast where :func:`uses_bf16` says so; full precision otherwise."""
    if uses_bf16(device, precision):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
