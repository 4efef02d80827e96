import numpy as np
import pytest
import torch

from compress.quantize import NOISE, ROUND, LearnedQuantizer, load_quantized, quantize_network
from compress.rate import laplace_bits
from pipeline.config import NetworkConfig
from pipeline.geometry import resolve_network
from pipeline.networks import build_network
from pipeline.quantization import (
    QuantParams,
    choose_scales,
    dequantize,
    qmax,
    quantize,
    quantize_dequantize,
)


@pytest.mark.parametrize("bits", [2, 4, 8, 12, 16])
@pytest.mark.parametrize("per_channel", [False, True])
def test_symbols_stay_in_range_and_error_is_half_a_step(bits, per_channel):
    rng = np.random.default_rng(bits)
    w = rng.normal(size=(6, 5, 3, 3)).astype(np.float32)
    params = choose_scales(w, bits, per_channel)
    s = quantize(w, params)
    assert s.dtype == np.int32 and np.abs(s).max() <= qmax(bits)
    step = params.scales.astype(np.float32).reshape((-1, 1, 1, 1) if per_channel else ())
    assert np.all(np.abs(dequantize(s, params) - w) <= step / 2 + 1e-7)


def test_zero_stays_exactly_zero():
    w = np.array([[0.0, 1.0, -2.0], [0.0, 0.0, 3.0]], np.float32)
    params = choose_scales(w, 8, True)
    out = dequantize(quantize(w, params), params)
    assert out[0, 0] == 0 and out[1, 0] == 0 and out[1, 1] == 0


def test_all_zero_tensor():
    w = np.zeros((4, 3), np.float32)
    params = choose_scales(w, 8, False)
    assert np.all(quantize(w, params) == 0) and np.all(np.isfinite(params.scales))


def test_version_2_symbols_are_bounded_by_the_format_not_a_bit_depth():
    w = np.array([0.0, 1.0, -1000.0], np.float32)
    params = QuantParams(np.array([0.01], np.float16))
    assert np.abs(quantize(w, params)).max() == params.max_symbol == (1 << 15) - 1


def _fitted_tiny_network():
    torch.manual_seed(3)
    config = resolve_network(NetworkConfig(fc_dim=16, block_dim=16, mlp_dim=16, stem_dims=(32,), mod_dim=16, heads=2,
                                           head_dim=8, lower_width=8, pe_levels=16, max_stages=3), 48, 32)
    model = build_network(config)
    with torch.no_grad():  # weights of a trained network are not all tiny: spread them out
        for p in model.parameters():
            p.mul_(torch.empty_like(p).uniform_(0.5, 3.0))
    return model


@pytest.mark.parametrize("bits", [None, 6])
def test_training_grid_equals_the_files_grid_bit_for_bit(bits):
    """quantize_dequantize (training, torch) == dequantize(quantize(w)) (the file, numpy), every tensor."""
    model = _fitted_tiny_network()
    quantizer = LearnedQuantizer(dict(model.named_parameters()), bits=bits)
    with torch.no_grad():  # learned steps end anywhere: move them off the starting values
        quantizer.log_steps.add_(torch.linspace(-1.5, 0.7, quantizer.log_steps.numel()))
    coded = quantize_network(model, quantizer)
    weights, _ = quantizer(dict(model.named_parameters()), ROUND)
    for (name, p), tensor in zip(model.named_parameters(), coded):
        from_file = dequantize(tensor.symbols, tensor.params)
        training = weights[name].detach().numpy()
        assert from_file.dtype == training.dtype == np.float32
        np.testing.assert_array_equal(from_file.view(np.int32), training.view(np.int32), err_msg=name)
        direct = quantize_dequantize(p.detach(), torch.from_numpy(tensor.params.scales.astype(np.float32)),
                                     quantizer.max_symbol).numpy()
        np.testing.assert_array_equal(from_file.view(np.int32), direct.view(np.int32), err_msg=name)
    load_quantized(model, quantizer)
    for (name, p), tensor in zip(model.named_parameters(), coded):
        np.testing.assert_array_equal(p.detach().numpy(), dequantize(tensor.symbols, tensor.params), err_msg=name)


def test_steps_are_float16_values_and_receive_gradients():
    model = _fitted_tiny_network()
    quantizer = LearnedQuantizer(dict(model.named_parameters()))
    steps = quantizer.steps()
    assert torch.equal(steps, steps.half().float())
    for mode in (NOISE, ROUND):
        quantizer.zero_grad()
        weights, bits = quantizer(dict(model.named_parameters()), mode)
        loss = sum((w**2).sum() for w in weights.values()) + bits
        loss.backward()
        assert torch.isfinite(quantizer.log_steps.grad).all() and quantizer.log_steps.grad.abs().sum() > 0, mode
        assert quantizer.log_scales.grad.abs().sum() > 0, mode


def test_masked_positions_are_zero_symbols_and_not_counted():
    model = _fitted_tiny_network()
    params = dict(model.named_parameters())
    name = next(n for n, p in params.items() if p.dim() == 2)
    mask = torch.rand_like(params[name]) > 0.5
    quantizer = LearnedQuantizer(params, {name: mask})
    coded = quantize_network(model, quantizer)
    tensor = coded[list(params).index(name)]
    assert np.array_equal(tensor.mask, mask.numpy()) and np.all(tensor.symbols[~tensor.mask] == 0)


def test_laplace_bits_is_a_probability_and_finite_in_its_tails():
    step, scale = torch.tensor(0.1), torch.tensor(0.2)
    grid = torch.arange(-400, 401, dtype=torch.float32) * step
    total = torch.exp2(-laplace_bits(grid, step, scale)).sum()
    assert abs(float(total) - 1.0) < 1e-4  # the bins tile the line
    far = torch.tensor([1e3, -1e3, 0.0], requires_grad=True)
    bits = laplace_bits(far, step, scale)
    bits.sum().backward()
    assert torch.isfinite(bits).all() and torch.isfinite(far.grad).all()
    assert bits[0] > bits[2]  # far values cost more than zero
