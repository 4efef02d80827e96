import numpy as np
import pytest
import torch

from compress.quantize import quantize_tensor
from pipeline.quantization import choose_scales, dequantize, fake_quantize, qmax, quantize


@pytest.mark.parametrize("bits", [2, 4, 8, 12, 16])
@pytest.mark.parametrize("per_channel", [False, True])
def test_symbols_stay_in_range_and_error_is_half_a_step(bits, per_channel):
    w = np.random.default_rng(bits).normal(0, 0.1, (8, 5, 3, 3)).astype(np.float32)
    params = choose_scales(w, bits, per_channel)
    symbols = quantize(w, params)
    assert symbols.dtype == np.int32
    assert np.abs(symbols).max() <= qmax(bits)
    step = params.scales.astype(np.float32).reshape(-1, 1, 1, 1) if per_channel else params.scales.astype(np.float32)
    assert np.all(np.abs(dequantize(symbols, params) - w) <= step / 2 + 1e-7)


def test_zero_stays_exactly_zero():
    w = np.array([[0.0, 0.5, -0.25], [0.0, 0.0, 1e-3]], np.float32)
    params = choose_scales(w, 8, True)
    out = dequantize(quantize(w, params), params)
    assert out[0, 0] == 0.0 and out[1, 0] == 0.0 and out[1, 1] == 0.0


def test_all_zero_tensor():
    w = np.zeros((4, 4), np.float32)
    params = choose_scales(w, 8, False)
    assert np.all(dequantize(quantize(w, params), params) == 0)


def test_per_tensor_wins_on_weight_error():
    # With entropy coding, one step for all channels is what minimizes the weights' error.
    rng = np.random.default_rng(0)
    w = (rng.normal(0, 1, (16, 256)) * np.logspace(-2, 0, 16)[:, None]).astype(np.float32)
    assert not quantize_tensor(w, 6, None).params.per_channel


def test_per_channel_wins_when_small_channels_matter_downstream():
    # A layer whose small channels are amplified later: the output error weighs each
    # channel's error by the inverse of its scale, and per-channel steps then win.
    rng = np.random.default_rng(0)
    gains = np.logspace(-2, 0, 16)[:, None]
    w = (rng.normal(0, 1, (16, 256)) * gains).astype(np.float32)

    def output_error(q: np.ndarray) -> float:
        return float(np.sum(((q - w) / gains) ** 2))

    assert quantize_tensor(w, 6, None, output_error).params.per_channel


def test_masked_positions_are_zero_symbols():
    rng = np.random.default_rng(1)
    w = rng.normal(0, 1, (8, 8)).astype(np.float32)
    mask = np.abs(w) > 0.5
    coded = quantize_tensor(w, 6, mask)
    assert np.all(coded.symbols[~mask] == 0)


def test_fake_quantize_matches_values_and_passes_gradients():
    w = torch.randn(6, 4, requires_grad=True)
    out = fake_quantize(w, 4, per_channel=True)
    step = w.detach().abs().amax(dim=1, keepdim=True) / qmax(4)
    assert torch.allclose(out / step, torch.round(out / step), atol=1e-4)
    out.sum().backward()
    assert torch.all(w.grad == 1)
