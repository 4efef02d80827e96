"""The ffmpeg command-line tool: which binary, what it was built with, and running it.

Only the ``ffmpeg`` binary is needed (no ffprobe): the system one when it is on PATH, otherwise
the one bundled with imageio-ffmpeg. Video reading and writing (:mod:`pipeline.video_io`,
:mod:`pipeline.video_writer`) and the benchmark's anchor codecs run it through this module.
"""

from __future__ import annotations

import functools
import re
import shutil
import subprocess

from pipeline.errors import InputError


class FFmpegFailed(RuntimeError):
    """An ffmpeg run that exited with an error; the message is ffmpeg's last line."""


@functools.cache
def ffmpeg_binary() -> str:
    """The system ffmpeg when on PATH (it may be newer or better equipped), else imageio-ffmpeg's."""
    system = shutil.which("ffmpeg")
    if system:
        return system
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as exc:
        raise InputError("ffmpeg not found: install ffmpeg or the imageio-ffmpeg package") from exc


def run_ffmpeg(cmd: list[str], stdin: bytes | memoryview | None = None) -> subprocess.CompletedProcess[bytes]:
    """Run ffmpeg with stdin fed from memory or /dev/null, so it can never wait for a terminal."""
    try:
        if stdin is None:
            return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, check=False)
        return subprocess.run(cmd, input=stdin, capture_output=True, check=False)
    except OSError as exc:
        raise InputError(f"cannot run ffmpeg ({cmd[0]}): {exc}") from exc


def run_checked(cmd: list[str], stdin: bytes | memoryview | None = None) -> bytes:
    """ffmpeg's standard output; :class:`FFmpegFailed` with its last line when it fails."""
    proc = run_ffmpeg(cmd, stdin)
    if proc.returncode != 0:
        raise FFmpegFailed(f"ffmpeg failed: {last_line(proc.stderr)}")
    return proc.stdout


def run_text(cmd: list[str]) -> str:
    """Everything ffmpeg printed (standard output, then standard error), as text."""
    proc = run_ffmpeg(cmd)
    return (proc.stdout + proc.stderr).decode(errors="replace")


def last_line(stderr: bytes) -> str:
    """ffmpeg's final complaint, which names the actual problem; never the whole dump."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "no message"


def ffmpeg_version() -> str:
    """First line of ``ffmpeg -version``, for benchmark reports."""
    lines = run_text([ffmpeg_binary(), "-hide_banner", "-version"]).splitlines()
    return lines[0].strip() if lines else "unknown"


# --- what the build has ----------------------------------------------------------------------


def _table(listing: str) -> str:
    """The rows of an ``-encoders``/``-filters`` listing, after its legend."""
    return listing.split("------", 1)[-1] if "------" in listing else listing


@functools.cache
def _encoders() -> frozenset[str]:
    listing = run_text([ffmpeg_binary(), "-hide_banner", "-encoders"])
    # Each row is "<6 capability flags> <name> <description>".
    return frozenset(m[1] for m in re.finditer(r"^\s*[VAS][A-Z.]{5}\s+(\S+)", _table(listing), re.M))


@functools.cache
def _filters() -> frozenset[str]:
    listing = run_text([ffmpeg_binary(), "-hide_banner", "-filters"])
    # Each row is "<2-3 flags> <name> <in->out> <description>", e.g. " .. libvmaf  VV->V  ...".
    return frozenset(m[1] for m in re.finditer(r"^\s*[A-Z.|]{2,3}\s+(\S+)\s+\S*->\S*", listing, re.M))


def has_encoder(name: str) -> bool:
    """Whether the ffmpeg in use was built with encoder ``name`` (builds differ, e.g. libx264)."""
    return name in _encoders()


def has_filter(name: str) -> bool:
    """Whether the ffmpeg in use has filter ``name`` (e.g. libvmaf, only with --enable-libvmaf)."""
    return name in _filters()


@functools.cache
def encoder_pix_fmts(name: str) -> tuple[str, ...]:
    """The pixel formats encoder ``name`` accepts in this build (``-h encoder=NAME``); () if it says none."""
    text = run_text([ffmpeg_binary(), "-hide_banner", "-h", f"encoder={name}"])
    match = re.search(r"Supported pixel formats:([^\n]*)", text)
    return tuple(match[1].split()) if match else ()


@functools.cache
def fps_mode_option() -> str:
    """'fps_mode' where available (ffmpeg >= 5.1), else its old name 'vsync' (gone in newer builds)."""
    help_text = run_text([ffmpeg_binary(), "-hide_banner", "-h", "long"])
    return "fps_mode" if "-fps_mode" in help_text else "vsync"
