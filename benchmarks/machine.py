"""The machine a benchmark runs on: platform, CPU, library and encoder versions."""

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


def machine_info(device: str) -> dict[str, str]:
    """Platform, CPU, library and encoder versions; "unknown" where they cannot be found."""
    import torch

    from benchmarks.anchors import encoder_version
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
    try:
        info["ffmpeg"] = f"{ffmpeg_version().split(' Copyright')[0]} ({ffmpeg_binary()})"
    except Exception:  # noqa: BLE001
        info["ffmpeg"] = "unknown"
    for name, encoder in (("x264 (libx264)", "libx264"), ("x265 (libx265)", "libx265")):
        try:
            info[name] = encoder_version(encoder)
        except Exception:  # noqa: BLE001
            info[name] = "unknown"
    for module in ("numpy", "pandas", "matplotlib", "bjontegaard", "ffmpeg-python", "pytorch-msssim"):
        info[module] = version(module)
    return info
