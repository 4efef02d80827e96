import math

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

    def poison_once(params, batch=None):
        calls["n"] += 1
        if calls["n"] == 10:  # one step in the third epoch returns NaN weights
            return {k: v * float("nan") for k, v in params.items()}, None
        return params, None

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


def test_an_exploding_loss_goes_back_to_the_best_state_like_a_nan():
    """A collapse with a finite loss (seen with too high a learning rate) is caught too."""
    preset, fit, model, frames = _setup(epochs=5)
    clip = Clip.from_numpy(frames, torch.device("cpu"))
    calls = {"n": 0}

    def explode_in_epoch_four(params, batch=None):
        calls["n"] += 1
        penalty = torch.tensor(100.0) if 13 <= calls["n"] <= 16 else None  # 4 steps per epoch
        return params, penalty

    result = train(model, clip, fit, epochs=5, lr=fit.lr, transform=explode_in_epoch_four, progress=False)
    assert result.recoveries == 1 and result.epochs == 5
    assert max(h["loss"] for h in result.history) < 1.0  # the exploded epoch was not kept


def test_a_deadline_ends_training_at_an_epoch_boundary_before_it():
    preset, fit, model, frames = _setup(epochs=200)
    clip = Clip.from_numpy(frames, torch.device("cpu"))
    import time

    first = train(model, clip, fit, epochs=3, lr=fit.lr, progress=False)
    epoch_seconds = first.history[-1]["seconds"] - first.history[-2]["seconds"]
    deadline = time.perf_counter() + 10 * epoch_seconds
    result = train(model, clip, fit, epochs=200, lr=fit.lr, progress=False, deadline=deadline)
    assert 1 <= result.epochs < 200
    # A generous bound: epochs vary in length on a busy machine.
    assert time.perf_counter() < deadline + 10 * epoch_seconds + 1.0


def test_mse_weight_adds_the_mean_squared_error():
    x, y = torch.zeros(1, 3, 16, 16), torch.full((1, 3, 16, 16), 0.5)
    assert float(reconstruction_loss(x, y, 0.0, 0.0, 1.0)) == 0.25
    assert abs(float(reconstruction_loss(x, y, 1.0, 0.0, 2.0)) - (0.5 + 0.5)) < 1e-7
