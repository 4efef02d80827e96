"""The GPU check (benchmarks/gpu_check.py) where there is no GPU: its package plan, and its smoke mode."""

import json
import re
from pathlib import Path

import torch

from benchmarks import gpu_check
from benchmarks.gpu_check import REQUIREMENTS, Requirement, install_command, missing, plan_install, wheels_in

ROOT = Path(__file__).resolve().parent.parent


def fake_wheels(folder: Path, *names: str) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"")
    return folder


def test_only_missing_modules_are_planned_from_the_wheels_found(tmp_path):
    wheels = fake_wheels(tmp_path / "wheels", "constriction-0.5.0-cp312-cp312-manylinux2014_x86_64.whl",
                         "PyYAML-6.0.4-cp312-cp312-manylinux2014_x86_64.whl", "ffmpeg_python-0.2.0-py3-none-any.whl")
    present = {"numpy", "tqdm", "ffmpeg"}
    requirements = [Requirement("numpy", "numpy"), Requirement("constriction", "constriction"),
                    Requirement("yaml", "pyyaml"), Requirement("ffmpeg", "ffmpeg-python"),
                    Requirement("pytorch_msssim", "pytorch-msssim"), Requirement("bjontegaard", "bjontegaard", False)]
    absent = missing(requirements, find_spec=lambda module: object() if module in present else None)
    assert [r.distribution for r in absent] == ["constriction", "pyyaml", "pytorch-msssim", "bjontegaard"]
    plan = plan_install(absent, wheels_in(wheels))
    assert [w.name.split("-")[0] for w in plan.install] == ["constriction", "PyYAML"]  # ffmpeg-python is present
    assert plan.unavailable == ("pytorch-msssim",)  # needed, no wheel; bjontegaard is optional
    assert not plan.ready


def test_the_install_is_offline_without_dependencies_and_never_torch(tmp_path):
    wheels = fake_wheels(tmp_path / "wheels", "tqdm-4.70.1-py3-none-any.whl")
    plan = plan_install(missing(REQUIREMENTS, find_spec=lambda module: None), wheels_in(wheels))
    command = install_command(plan, wheels, tmp_path / "site")
    assert {"--no-index", "--no-deps", "--target"} <= set(command)
    assert command[-1].endswith("tqdm-4.70.1-py3-none-any.whl")
    assert not any("torch" in part.lower() and "msssim" not in part for part in command)
    assert "numpy" in plan.unavailable and "tqdm" not in plan.unavailable


def test_every_requirement_but_numpy_is_downloaded_by_make_gpu_wheels():
    makefile = (ROOT / "Makefile").read_text()
    listed = re.search(r"^GPU_WHEELS \?=(.*?)(?<!\\)\n", makefile, re.M | re.S)[1]
    names = {gpu_check.normalized(re.split(r"[<>=]", word.strip("'\\"))[0]) for word in listed.split()} - {""}
    assert {gpu_check.normalized(r.distribution) for r in REQUIREMENTS} - names == {"numpy"}
    assert "torch" not in names


def test_the_gpu_tests_are_found_and_frames_compared_span_the_clip():
    assert ROOT / "tests" / "test_gpu.py" in gpu_check.gpu_test_files()
    assert gpu_check.compared_indices(60, 3) == [0, 30, 59]
    assert gpu_check.compared_indices(2, 5) == [0, 1]


def test_without_cuda_one_line_and_status_0(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(gpu_check, "ensure_packages", lambda *a: (_ for _ in ()).throw(AssertionError("installs")))
    assert gpu_check.main([]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "no CUDA device" in out


def test_cpu_smoke_runs_end_to_end_and_prints_the_table(tmp_path, capsys):
    report = tmp_path / "check.json"
    argv = ["--cpu-smoke", "-q", "--skip-tests", "--fit-seconds", "1", "--frames", "3", "--compare-frames", "2",
            "--precision", "float32", "--json", str(report), "--wheels", str(tmp_path / "no-wheels"),
            "--site", str(tmp_path / "site")]
    assert gpu_check.main(argv) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith("|")]
    assert lines[0] == "| " + " | ".join(gpu_check.COLUMNS) + " |"
    assert [line.split(" | ")[0] for line in lines[2:]] == ["| float32"]
    runs = json.loads(report.read_text())["runs"]
    for run in runs:
        assert run["fit_epochs"] > 0 and run["fit_frames_per_second"] > 0 and run["decode_fps"] > 0
        assert run["compared_pixels"] == 2 * 36 * 64 and run["max_difference"] == 0  # CPU against CPU


def test_the_clip_is_the_720p_bunny_else_the_prepared_cut_else_the_small_bunny_upscaled(tmp_path, monkeypatch):
    prepared = tmp_path / "bunny_1280x720_60f.mp4"
    monkeypatch.setattr(gpu_check, "BUNNY_720P", (tmp_path / "absent.mkv", ROOT / "data" / "bunny_320x180_48f.mkv"))
    monkeypatch.setattr(gpu_check, "PREPARED_CLIP", prepared)
    assert gpu_check.choose_clip(None, tmp_path, 60, smoke=False).path.name == "bunny_320x180_48f.mkv"
    monkeypatch.setattr(gpu_check, "BUNNY_720P", (tmp_path / "absent.mkv",))
    prepared.write_bytes(b"")
    assert gpu_check.choose_clip(None, tmp_path, 60, smoke=False).path == prepared
    prepared.unlink()
    fallback = gpu_check.choose_clip(None, tmp_path, 60, smoke=False)
    assert fallback.path == gpu_check.BUNNY_SMALL and fallback.size == (1280, 720)


def test_the_table_has_a_row_per_precision_and_its_columns():
    run = gpu_check.PrecisionRun("bf16", 150.0, 412.5, 165.0, 33.1, 32.4, 612_345, 95.0, 1.5, 12, 2_764_800, 1,
                                 171.0, "cuda")
    lines = gpu_check.format_table([run, gpu_check.PrecisionRun(**{**run.__dict__, "precision": "float32"})])
    header, _, *rows = lines.splitlines()
    assert header.count("|") == len(gpu_check.COLUMNS) + 1 and len(rows) == 2
    assert rows[0].split(" | ")[1:4] == ["150.0", "412", "165.0"] and "12 of 2,764,800 (0.00%)" in rows[0]
