"""The one training step: fitting, the fine-tunes and the speed benchmark all run it."""

from __future__ import annotations

import torch
from conftest import smooth_clip

from benchmarks import speed
from compress import fit as fitting
from compress.fit import Clip, train, training_step
from pipeline.config import load_preset, override
from pipeline.geometry import resolve_network
from pipeline.networks import build_network


def _model_and_clip():
    preset = load_preset("test-tiny")
    torch.manual_seed(0)
    model = build_network(resolve_network(preset.network, 48, 32))
    return preset, model, Clip.from_numpy(smooth_clip(8, 32, 48), torch.device("cpu"))


def _counting(monkeypatch, module) -> list:
    calls = []
    real = fitting.training_step

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, "training_step", counting)
    return calls


def test_a_step_lowers_the_loss_and_reports_it():
    preset, model, clip = _model_and_clip()
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=preset.fit.lr, betas=preset.fit.betas)
    idx = torch.arange(2)
    losses = [training_step(model, params, optimizer, clip, idx, preset.fit) for _ in range(20)]
    assert all(step is not None for step in losses)
    assert losses[-1].loss < losses[0].loss and 0 < losses[-1].mse < losses[0].mse


def test_a_non_finite_loss_changes_nothing():
    preset, model, clip = _model_and_clip()
    params = dict(model.named_parameters())
    with torch.no_grad():
        next(iter(params.values())).fill_(float("nan"))
    before = {k: v.detach().clone() for k, v in params.items()}
    optimizer = torch.optim.Adam(params.values(), lr=preset.fit.lr)
    assert training_step(model, params, optimizer, clip, torch.arange(2), preset.fit) is None
    assert not optimizer.state
    for name, value in params.items():
        assert torch.equal(value.nan_to_num(), before[name].nan_to_num()), name


def test_train_runs_one_training_step_per_batch(monkeypatch):
    calls = _counting(monkeypatch, fitting)
    preset, model, clip = _model_and_clip()
    result = train(model, clip, override(preset.fit, batch_size=3), epochs=2, lr=1e-3, progress=False)
    assert result.epochs == 2 and len(calls) == 2 * 3  # 8 frames in batches of 3: 3 steps an epoch


def test_the_speed_benchmark_times_the_training_step(monkeypatch):
    calls = _counting(monkeypatch, speed)
    preset = load_preset("test-tiny")
    result = speed.measure(preset, smooth_clip(4, 32, 48), torch.device("cpu"), repeats=3)
    assert len(calls) == 2 + 3  # warm-up, then the timed repeats
    assert result["fit_frames_per_second"] > 0 and result["render_frames_per_second"] > 0
    assert result["batch_size"] == preset.fit.batch_size
