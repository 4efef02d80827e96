"""VMAF of decoded frames against the source: libvmaf through ffmpeg, its built-in model.

Both frame sets are converted to Y' exactly as PSNR-YUV converts them
(:func:`pipeline.metrics.rgb_to_yuv709`: BT.709, 8-bit limited range), rounded to 8 bits and
handed to libvmaf as 4:4:4 Y'CbCr with neutral chroma (the model reads luma only), so that
no scaler or range conversion of ffmpeg's stands between the two metrics.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from pipeline.ffmpeg import ffmpeg_binary, has_filter, last_line, run_ffmpeg
from pipeline.metrics import rgb_to_yuv709

VMAF_MODEL = "vmaf_v0.6.1"  # built into libvmaf: no model file to ship


@dataclass(frozen=True)
class VmafScore:
    mean: float  # the mean over frames of the per-frame score (0..100)
    model: str  # 'vmaf_v0.6.1 (libvmaf 86da14d)'


def vmaf_unavailable() -> str:
    """Why VMAF cannot be measured here ('' when it can)."""
    if not has_filter("libvmaf"):
        return f"this ffmpeg ({ffmpeg_binary()}) has no libvmaf filter (it is built without --enable-libvmaf)"
    return ""


def _write_luma(frames: np.ndarray, path: Path) -> None:
    """Each frame as 8-bit 4:4:4 Y'CbCr: the BT.709 luma of the RGB frame, chroma at 128."""
    chroma = np.full((2, *frames.shape[1:3]), 128, np.uint8)
    with open(path, "wb") as out:
        for frame in frames:
            luma = np.clip(np.rint(rgb_to_yuv709(frame)[..., 0]), 0, 255).astype(np.uint8)
            out.write(luma.tobytes())
            out.write(chroma.tobytes())


def _threads() -> int:
    try:
        return max(1, min(4, len(os.sched_getaffinity(0))))
    except AttributeError:
        return 1


def measure_vmaf(decoded: np.ndarray, reference: np.ndarray, fps: float) -> VmafScore:
    """VMAF (model :data:`VMAF_MODEL`) of uint8 RGB frames [T,H,W,3] against the reference frames."""
    if decoded.shape != reference.shape:
        raise ValueError(f"shape mismatch: {decoded.shape} vs {reference.shape}")
    T, H, W = decoded.shape[:3]
    with tempfile.TemporaryDirectory(prefix="vmaf-") as tmp:
        paths = [Path(tmp) / "decoded.yuv", Path(tmp) / "reference.yuv"]
        _write_luma(decoded, paths[0])
        _write_luma(reference, paths[1])
        log = Path(tmp) / "vmaf.json"
        inputs = [ffmpeg.input(str(p), format="rawvideo", pix_fmt="yuv444p", s=f"{W}x{H}", r=fps) for p in paths]
        scored = ffmpeg.filter(inputs, "libvmaf", model=f"version={VMAF_MODEL}", log_fmt="json", log_path=str(log),
                               n_threads=_threads())
        cmd = (ffmpeg.output(scored, "-", format="null")
               .global_args("-nostdin", "-hide_banner", "-loglevel", "error").compile(cmd=ffmpeg_binary()))
        proc = run_ffmpeg(cmd)
        if proc.returncode != 0:
            raise RuntimeError(f"libvmaf failed: {last_line(proc.stderr)}")
        report = json.loads(log.read_text())
    frames = report.get("frames") or []
    if len(frames) != T:
        raise RuntimeError(f"libvmaf scored {len(frames)} frames of {T}")
    mean = float(np.mean([f["metrics"]["vmaf"] for f in frames]))
    return VmafScore(mean=mean, model=f"{VMAF_MODEL} (libvmaf {report.get('version', 'unknown')})")
