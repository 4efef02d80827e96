"""The machine a benchmark runs on: platform, CPU, library and encoder versions.

enerv-bench records it in every row; benchmarks.speed in its output (without the encoders).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(device: str, codecs: bool = True) -> dict[str, str]:
    """Platform, CPU, library versions and, with ``codecs``, ffmpeg's and every anchor library's
    (a few tiny ffmpeg runs); "unknown" where they cannot be found."""
    import torch

    from benchmarks.anchors import encoder_version
    from benchmarks.registry import ANCHORS
    from benchmarks.vmaf import VMAF_MODEL, vmaf_unavailable
    from pipeline.ffmpeg import ffmpeg_binary, ffmpeg_version

    def version(module: str) -> str:
        try:
            from importlib.metadata import version as v

            return v(module)
        except Exception:  # noqa: BLE001 - a missing version is reported as such
            return "unknown"

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    info = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu count": f"{os.cpu_count()} (usable by this process: {usable})",
        "python": platform.python_version(),
        "torch": f"{torch.__version__} ({torch.get_num_threads()} threads)",
        "E-NeRV device": device,
    }
    if device == "cuda" and torch.cuda.is_available():
        info["GPU"] = torch.cuda.get_device_name()
    if codecs:
        try:
            info["ffmpeg"] = f"{ffmpeg_version().split(' Copyright')[0]} ({ffmpeg_binary()})"
        except Exception:  # noqa: BLE001
            info["ffmpeg"] = "unknown"
        for spec in ANCHORS.values():
            try:
                info[f"{spec.name} ({spec.encoder})"] = encoder_version(spec.encoder)
            except Exception:  # noqa: BLE001
                info[f"{spec.name} ({spec.encoder})"] = "unknown"
        info["VMAF"] = vmaf_unavailable() or f"libvmaf through ffmpeg, model {VMAF_MODEL}"
    for module in ("numpy", "pandas", "matplotlib", "bjontegaard", "ffmpeg-python", "pytorch-msssim"):
        info[module] = version(module)
    return info
