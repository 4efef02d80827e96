"""The module graph: every module imports on its own, nothing imports cli.py but the console
scripts, no import cycle anywhere, and the benchmark package stays in small files."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("pipeline", "compress", "decompress", "benchmarks", "cfgs")


def _modules() -> dict[str, Path]:
    found = {"cli": ROOT / "cli.py"}
    for package in PACKAGES:
        for path in sorted((ROOT / package).glob("*.py")):
            found[package if path.stem == "__init__" else f"{package}.{path.stem}"] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Project modules that ``path`` imports anywhere (at the top or inside a function)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in known and t != name}
    return out


def test_every_module_imports_alone_and_no_library_module_imports_cli():
    names = [n for n in _modules() if n != "cli"]
    code = ("import importlib, sys\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "assert 'cli' not in sys.modules, 'a library or benchmark module imported cli'\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for name, path in _modules().items():
        if name != "cli":
            assert "cli" not in _imports(name, path, set(_modules())), name


def test_the_project_has_no_import_cycle():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    state: dict[str, str] = {}

    def visit(name: str, trail: list[str]) -> None:
        state[name] = "open"
        for other in sorted(graph[name]):
            assert state.get(other) != "open", "import cycle: " + " -> ".join(trail + [name, other])
            if other not in state:
                visit(other, trail + [name])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [])
    assert graph["benchmarks.rd"] and "benchmarks.rd" in graph["cli"]  # the graph is not empty by mistake


def test_benchmark_files_stay_small():
    sizes = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "benchmarks").glob("*.py")}
    assert max(sizes.values()) <= 350, sizes
