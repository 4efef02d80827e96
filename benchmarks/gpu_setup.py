"""The GPU check's set-up: the packages a CUDA machine lacks, installed from prepared wheels, and
its GPU tests (see :mod:`benchmarks.gpu_check`)."""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import InputError

ROOT = Path(__file__).resolve().parent.parent
WHEELS = ROOT / "wheels"
SITE = Path(tempfile.gettempdir()) / "enerv-gpu-check-site"


# --- packages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requirement:
    """A distribution the check needs, and a module whose presence says it is installed."""

    module: str
    distribution: str
    needed: bool = True  # False: used by the benchmarks only; installed when a wheel is there


# Everything the encoder, the decoder and the GPU tests import, with the dependencies of those
# that the GPU machines lack (wheels are installed with --no-deps so that pip never reaches for
# torch). PyTorch is not here: the machine's own CUDA build is the point of the check.
REQUIREMENTS = (
    Requirement("numpy", "numpy"),
    Requirement("yaml", "pyyaml"),
    Requirement("tqdm", "tqdm"),
    Requirement("constriction", "constriction"),
    Requirement("ffmpeg", "ffmpeg-python"),
    Requirement("past", "future"),  # ffmpeg-python's dependency
    Requirement("imageio_ffmpeg", "imageio-ffmpeg"),
    Requirement("pytorch_msssim", "pytorch-msssim"),
    Requirement("pytest", "pytest"),
    Requirement("iniconfig", "iniconfig"),
    Requirement("pluggy", "pluggy"),
    Requirement("packaging", "packaging"),
    Requirement("pygments", "pygments"),
    Requirement("pytest_timeout", "pytest-timeout"),
    Requirement("bjontegaard", "bjontegaard", needed=False),
)


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them (``PyYAML``, ``pyyaml`` and ``py_yaml``... alike)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def wheels_in(folder: Path) -> dict[str, Path]:
    """The wheel files of ``folder`` by normalized distribution name (the newest name wins)."""
    found: dict[str, Path] = {}
    for path in sorted(folder.glob("*.whl")) if folder.is_dir() else []:
        found[normalized(path.name.split("-", 1)[0])] = path
    return found


@dataclass(frozen=True)
class InstallPlan:
    install: tuple[Path, ...]  # wheels to install
    unavailable: tuple[str, ...]  # needed distributions missing here with no wheel for them

    @property
    def ready(self) -> bool:
        return not self.unavailable


def missing(requirements: Iterable[Requirement] = REQUIREMENTS,
            find_spec: Callable[[str], object] = importlib.util.find_spec) -> list[Requirement]:
    """The requirements whose module cannot be found by this interpreter."""
    return [r for r in requirements if find_spec(r.module) is None]


def plan_install(absent: Iterable[Requirement], wheels: dict[str, Path]) -> InstallPlan:
    install, unavailable = [], []
    for requirement in absent:
        wheel = wheels.get(normalized(requirement.distribution))
        if wheel is not None:
            install.append(wheel)
        elif requirement.needed:
            unavailable.append(requirement.distribution)
    return InstallPlan(tuple(install), tuple(unavailable))


def install_command(plan: InstallPlan, wheels: Path, site: Path) -> list[str]:
    """pip, offline, from ``wheels`` only, each wheel alone (no dependency resolution), into ``site``."""
    return [sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--find-links", str(wheels),
            "--no-deps", "--no-compile", "--disable-pip-version-check", "--upgrade", "--target", str(site),
            *(str(w) for w in plan.install)]


def use_site(site: Path) -> None:
    """Puts ``site`` first on this process's path and on its children's (pytest)."""
    if str(site) not in sys.path:
        sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH")) if p)
    importlib.invalidate_caches()


def ensure_packages(wheels: Path, site: Path) -> list[str]:
    """Installs what is missing from ``wheels``; returns the distributions installed."""
    if site.is_dir():  # installed by an earlier run on this machine
        use_site(site)
    plan = plan_install(missing(), wheels_in(wheels))
    if not plan.ready:
        raise InputError(f"missing here and no wheel for it in {wheels}: {', '.join(plan.unavailable)}; "
                         "prepare the wheels with `make gpu-wheels` on a machine that reaches PyPI")
    if plan.install:
        site.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(install_command(plan, wheels, site), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise InputError(f"pip could not install the wheels: {(proc.stderr or proc.stdout).strip()[-500:]}")
        use_site(site)
    return [w.name.split("-", 1)[0] for w in plan.install]


# --- GPU tests -------------------------------------------------------------------------------


def gpu_test_files(tests: Path = ROOT / "tests") -> list[Path]:
    """Test files that mark GPU tests; only these are collected, so the benchmark tests' imports
    (pandas, matplotlib, hypothesis) are not needed."""
    return [p for p in sorted(tests.glob("test_*.py")) if "mark.gpu" in p.read_text()]


def run_gpu_tests(timeout: float = 240.0) -> tuple[bool, str]:
    files = [str(p.relative_to(ROOT)) for p in gpu_test_files()]
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *files]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return False, f"pytest did not finish in {timeout:g} s"
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-2000:])
    return proc.returncode == 0, lines[-1] if lines else proc.stderr.strip()[-300:]


# --- the clip --------------------------------------------------------------------------------
