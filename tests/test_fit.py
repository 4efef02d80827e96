import math

import numpy as np
import torch

from compress.fit import Clip, lr_factor, reconstruction_loss, train
from compress.prune import apply_masks, masked_weights, prune_by_magnitude
from pipeline.config import load_preset, override
from pipeline.geometry import resolve_network
from pipeline.metrics import psnr
from pipeline.networks import build_network
from pipeline.render import render_frames
from tests.conftest import smooth_clip


def _setup(epochs=30):
    preset = load_preset("test-tiny")
    frames = smooth_clip(8, 32, 48)
    network = resolve_network(preset.network, 48, 32)
    torch.manual_seed(preset.fit.seed)
    model = build_network(network)
    return preset, override(preset.fit, epochs=epochs), model, frames


def test_short_fit_raises_psnr_clearly():
    preset, fit, model, frames = _setup()
    before = psnr(render_frames(model, range(8), 8, 32, 48), frames)
    result = train(model, Clip.from_numpy(frames, torch.device("cpu")), fit, epochs=fit.epochs, lr=fit.lr,
                   progress=False)
    after = psnr(render_frames(model, range(8), 8, 32, 48), frames)
    assert result.epochs == fit.epochs and len(result.history) == fit.epochs
    assert after > before + 5, (before, after)


def test_fit_is_reproducible_with_the_same_seed():
    states = []
    for _ in range(2):
        preset, fit, model, frames = _setup(epochs=3)
        train(model, Clip.from_numpy(frames, torch.device("cpu")), fit, epochs=3, lr=fit.lr, progress=False)
        states.append([p.detach().clone() for p in model.parameters()])
    for a, b in zip(*states):
        assert torch.equal(a, b)


def test_non_finite_loss_goes_back_to_the_best_state():
    preset, fit, model, frames = _setup(epochs=6)
    clip = Clip.from_numpy(frames, torch.device("cpu"))
    calls = {"n": 0}

    def poison_once(params):
        calls["n"] += 1
        if calls["n"] == 10:  # one step in the third epoch returns NaN weights
            return {k: v * float("nan") for k, v in params.items()}
        return params

    result = train(model, clip, fit, epochs=6, lr=fit.lr, transform=poison_once, progress=False)
    assert result.recoveries == 1
    assert result.epochs == 6
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert math.isfinite(result.final_loss)


def test_pruned_weights_stay_zero_through_fine_tuning():
    preset, fit, model, frames = _setup(epochs=2)
    masks = prune_by_magnitude(model, 0.5)
    kept = sum(int(m.sum()) for m in masks.values())
    total = sum(m.numel() for m in masks.values())
    assert abs(kept / total - 0.5) < 0.02
    apply_masks(model, masks)
    train(model, Clip.from_numpy(frames, torch.device("cpu")), fit, epochs=2, lr=fit.lr,
          transform=masked_weights(masks), progress=False)
    apply_masks(model, masks)
    params = dict(model.named_parameters())
    for name, mask in masks.items():
        assert torch.all(params[name][~mask] == 0)


def test_lr_schedule_warms_up_then_decays_to_zero():
    assert lr_factor(0, 100, 0.2) == 0.1
    assert lr_factor(20, 100, 0.2) == 1.0
    assert lr_factor(100, 100, 0.2) < 1e-9
    values = [lr_factor(s, 100, 0.2) for s in range(20, 101)]
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_loss_is_zero_for_a_perfect_prediction():
    x = torch.rand(2, 3, 32, 48)
    assert float(reconstruction_loss(x, x, 0.7, 0.3)) < 1e-6
    assert float(reconstruction_loss(x, 1 - x, 0.7, 0.3)) > 0.1
