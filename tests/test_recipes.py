"""The recipe knobs: the optimizers, the latents' learning rate, the rate term's warm-up, the
context-coded grids of enerv-ctx, and the harness that compares them (benchmarks/recipes.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.recipes import RECIPES, Recipe, gap_to_anchor, recipe_config
from compress.fit import Clip, FitInterrupted, train
from compress.optimizers import OPTIMIZERS, OptimizerSet, build_optimizer, parameter_groups
from compress.quantize import NOISE, quantized_weights, quantizer_for
from compress.video import compress_frames
from decompress.decode import bitstream_info, decode_frames
from pipeline import config as config_module
from pipeline.bitstream import read_bitstream
from pipeline.config import CodecConfig, FitConfig, load_preset, section_from_dict
from pipeline.errors import InputError
from pipeline.geometry import resolve_network
from pipeline.kinds import network_kind
from pipeline.latent_coding import RESIDUAL_BOUND
from pipeline.metrics import psnr
from pipeline.networks import build_network
from pipeline.render import render_frames
from tests.conftest import smooth_clip

TINY = load_preset("test-tiny-latent")


def _tiny_latent(fit: FitConfig, frames: np.ndarray):
    network = network_kind(TINY.network.kind).resolve_clip(resolve_network(TINY.network, 48, 32), len(frames))
    torch.manual_seed(fit.seed)
    return build_network(network)


def test_the_config_knows_the_optimizers_the_registry_builds():
    assert set(config_module.OPTIMIZERS) == set(OPTIMIZERS)


@pytest.mark.parametrize("section, values", [
    (FitConfig, {"optimizer": "sgd"}), (FitConfig, {"latent_lr": 0}), (FitConfig, {"latent_lr": -1.0}),
    (CodecConfig, {"rate_warmup": 1.0}), (CodecConfig, {"rate_warmup": -0.1}),
])
def test_bad_recipe_settings_are_refused_in_one_line(section, values):
    with pytest.raises(InputError) as err:
        section_from_dict(section, values, "preset")
    assert "\n" not in str(err.value)


def test_the_latents_get_their_own_learning_rate():
    fit = replace(TINY.fit, latent_lr=4.0)
    model = _tiny_latent(fit, smooth_clip(8, 32, 48))
    params = dict(model.named_parameters())
    groups = parameter_groups(params, 0.01, fit)
    latents = {id(p) for name, p in params.items() if name.startswith("latents.")}
    assert latents and {id(p) for p in groups[1]["params"]} == latents
    assert groups[0]["base_lr"] == 0.01 and groups[1]["base_lr"] == pytest.approx(0.04)
    assert not latents & {id(p) for p in groups[0]["params"]}


def test_soap_preconditions_the_kernels_and_leaves_the_rest_to_adam():
    fit = replace(TINY.fit, optimizer="soap")
    model = _tiny_latent(fit, smooth_clip(8, 32, 48))
    optimizer = build_optimizer(parameter_groups(dict(model.named_parameters()), 0.01, fit), fit)
    assert isinstance(optimizer, OptimizerSet)
    soap, adam = optimizer.optimizers
    assert type(soap).__name__ == "SOAP" and isinstance(adam, torch.optim.Adam)
    assert all(p.dim() >= 2 for g in soap.param_groups for p in g["params"])
    assert {id(p) for p in model.latents.parameters()} <= {id(p) for g in adam.param_groups for p in g["params"]}


@pytest.mark.parametrize("optimizer", ["adam", "soap"])
def test_a_tiny_fit_improves_with_each_optimizer(optimizer):
    torch.set_num_threads(1)
    frames = smooth_clip(8, 32, 48)
    fit = replace(TINY.fit, optimizer=optimizer, latent_lr=3.0)
    model = _tiny_latent(fit, frames)
    before = psnr(render_frames(model, range(8), 8, 32, 48), frames)
    train(model, Clip.from_numpy(frames, torch.device("cpu")), fit, epochs=20, lr=fit.lr, progress=False)
    after = psnr(render_frames(model, range(8), 8, 32, 48), frames)
    assert after > before + 3 and after > 17, (before, after)  # a flat grey clip scores 14.1 dB here


def _fit_with_rate(fit: FitConfig, frames: np.ndarray, tmp_path, stop_at: int | None = None, resume=None):
    """Fits the tiny latent network with the noisy quantizer and a warming rate term (as the
    encoder's fit runs), interrupted before step ``stop_at`` or resumed from ``resume``."""
    model = _tiny_latent(fit, frames)
    quantizer = quantizer_for(model, replace(TINY.codec, rate_warmup=0.5))
    transform = quantized_weights(quantizer, NOISE, 0.01, frames[..., 0].size)
    schedule = transform.warm_up(0.5)

    def on_step(step: int, total: int) -> bool:
        if step == stop_at:
            raise KeyboardInterrupt
        return schedule(step, total)

    torch.manual_seed(7)
    train(model, Clip.from_numpy(frames, torch.device("cpu")), fit, epochs=8, lr=fit.lr, progress=False,
          transform=transform, companion=quantizer, companion_lr=0.01, on_step=on_step,
          checkpoint=tmp_path / "fit.ckpt", resume_state=resume)
    return model, quantizer


@pytest.mark.parametrize("optimizer", ["adam", "soap"])
def test_resume_with_each_optimizer_repeats_the_uninterrupted_fit_exactly(optimizer, tmp_path):
    torch.set_num_threads(1)
    frames = smooth_clip(8, 32, 48)
    fit = replace(TINY.fit, optimizer=optimizer, latent_lr=3.0)
    whole, whole_q = _fit_with_rate(fit, frames, tmp_path / "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(FitInterrupted):
        _fit_with_rate(fit, frames, tmp_path / "b", stop_at=13)  # in epoch 4 of 8 (4 steps an epoch)
    state = torch.load(tmp_path / "b" / "fit.ckpt", weights_only=False)
    assert state["epoch"] == 3
    resumed, resumed_q = _fit_with_rate(fit, frames, tmp_path / "b", resume=state)
    for a, b in zip(list(whole.parameters()) + list(whole_q.parameters()),
                    list(resumed.parameters()) + list(resumed_q.parameters())):
        assert torch.equal(a, b)


def test_the_rate_term_warms_up_and_says_when_it_has():
    model = _tiny_latent(TINY.fit, smooth_clip(8, 32, 48))
    transform = quantized_weights(quantizer_for(model, TINY.codec), NOISE, 0.01, 1000)
    assert transform.warm_up(0.0) is None
    schedule = transform.warm_up(0.25)
    assert schedule(0, 100) is False and transform.scale == 0.0
    assert schedule(10, 100) is False and transform.scale == pytest.approx(0.4)
    assert schedule(25, 100) is True and transform.scale == 1.0
    params = dict(model.named_parameters())
    transform.scale = 0.0
    assert float(transform(params)[1].detach()) == 0.0
    transform.scale = 1.0
    assert float(transform(params)[1].detach()) > 0


def test_while_the_objective_moves_the_latest_state_is_kept():
    """With the rate term growing, a later epoch's loss is higher and still the state to keep."""
    frames = smooth_clip(8, 32, 48)
    fit = TINY.fit
    model = _tiny_latent(fit, frames)
    result = train(model, Clip.from_numpy(frames, torch.device("cpu")), fit, epochs=3, lr=fit.lr, progress=False,
                   on_step=lambda step, total: False)
    last = {k: v.clone() for k, v in model.state_dict().items()}
    assert result.epochs == 3
    model2 = _tiny_latent(fit, frames)
    train(model2, Clip.from_numpy(frames, torch.device("cpu")), fit, epochs=3, lr=fit.lr, progress=False,
          on_step=lambda step, total: False)
    assert all(torch.equal(last[k], v) for k, v in model2.state_dict().items())
    assert result.final_loss == float("inf")  # no epoch was comparable, none was called best


def test_enerv_ctx_codes_every_grid_with_context_and_decodes_to_what_the_encoder_measured():
    torch.set_num_threads(1)
    frames = smooth_clip(8, 32, 48)
    preset = replace(TINY, network=replace(TINY.network, kind="enerv-ctx"))
    data, result = compress_frames(frames, 24.0, preset, progress=False)
    parsed = read_bitstream(data)
    assert parsed.version == 4
    kind = network_kind("enerv-ctx")
    for segment in parsed.segments:
        for (name, _), t in zip(parsed.shapes, segment.tensors):
            coded_with_context = t.context is not None
            assert coded_with_context == (name.startswith(("latents.", "time_grids.", "space_grids."))), name
            assert coded_with_context == kind.is_latent(name)
    decoded = decode_frames(data).frames
    assert psnr(decoded, frames) == pytest.approx(result.psnr, abs=1e-6)
    assert result.psnr > 17  # learned: a flat grey clip scores 14.1 dB here
    assert bitstream_info(data)["network"]["kind"] == "enerv-ctx"


def test_the_harness_scores_a_point_against_the_reference_curve():
    anchor = pd.DataFrame({"bpp": [0.01, 0.1], "psnr_rgb": [30.0, 40.0]})
    gap, excess = gap_to_anchor(10 ** -1.5, 33.0, anchor)
    assert gap == pytest.approx(-2.0)  # the reference gives 35 dB at 10^-1.5 bpp
    assert excess == pytest.approx(10 ** 0.2 - 1)  # it reaches 33 dB at 10^-1.7 bpp
    assert np.isnan(gap_to_anchor(1.0, 33.0, anchor)[0])  # no extrapolation


def test_a_recipe_changes_only_what_it_names():
    recipe = Recipe("t", "", {"network": {"kind": "enerv-latent"}, "fit": {"latent_lr": 5.0},
                              "codec": {"rate_warmup": 0.3}})
    data = recipe_config("enerv-latent-xs", recipe, 40.0)
    base = recipe_config("enerv-latent-xs", RECIPES["base"], 40.0)
    assert data["network"]["kind"] == "enerv-latent" and data["fit"]["latent_lr"] == 5.0
    assert data["codec"]["rate_warmup"] == 0.3 and data["codec"]["quality"] == 40.0
    changed = {(s, k) for s in data for k in data[s] if data[s][k] != base[s].get(k)}
    assert changed == {("network", "kind"), ("fit", "latent_lr"), ("codec", "rate_warmup")}


def test_table_symbols_keep_every_weight_within_the_bank_and_decode_exactly():
    torch.set_num_threads(1)
    frames = smooth_clip(8, 32, 48)
    preset = replace(TINY, codec=replace(TINY.codec, table_symbols=True))
    data, result = compress_frames(frames, 24.0, preset, progress=False)
    parsed = read_bitstream(data)
    for segment in parsed.segments:
        for t in segment.tensors:
            if t.context is None:
                assert int(np.abs(t.symbols).max(initial=0)) <= RESIDUAL_BOUND
    assert psnr(decode_frames(data).frames, frames) == pytest.approx(result.psnr, abs=1e-6)
    assert result.psnr > 15.5  # learned (a flat grey clip scores 14.1 dB); its worth is measured in benchmarks
