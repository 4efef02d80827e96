import numpy as np
import pytest

from pipeline.entropy import SymbolModel, empirical_entropy_bits


def _round_trip(symbols: np.ndarray) -> tuple[np.ndarray, bytes]:
    model = SymbolModel.from_symbols(symbols)
    data = model.encode(symbols)
    rebuilt = SymbolModel(model.offset, model.counts.copy())  # only the integers travel
    return rebuilt.decode(data, symbols.size), data


@pytest.mark.parametrize(
    "symbols",
    [
        np.zeros(1000, np.int32),  # all-zero tensor
        np.full(7, -3, np.int32),  # single symbol
        np.array([], np.int32),  # empty
        np.array([5], np.int32),
        np.array([-32767, 32767, 0, 1, -1], np.int32),  # 16-bit alphabet extremes
        np.random.default_rng(0).integers(-32767, 32768, 5000).astype(np.int32),  # wide alphabet
        np.rint(np.random.default_rng(1).laplace(0, 4, 20000)).astype(np.int32),
        np.array([0, 1] * 50 + [1] * 900, np.int32),  # skewed binary (a mask)
    ],
)
def test_round_trip_is_exact(symbols):
    decoded, _ = _round_trip(symbols)
    assert decoded.dtype == np.int32
    np.testing.assert_array_equal(decoded, symbols)


def test_constant_tensor_costs_no_payload():
    _, data = _round_trip(np.zeros(4096, np.int32))
    assert data == b""


def test_coded_size_is_within_one_percent_of_entropy():
    symbols = np.rint(np.random.default_rng(2).laplace(0, 6, 50_000)).astype(np.int32)
    data = SymbolModel.from_symbols(symbols).encode(symbols)
    entropy_bytes = empirical_entropy_bits(symbols) / 8
    assert entropy_bytes <= len(data) <= 1.01 * entropy_bytes + 8


def test_all_zero_mask_with_one_kept_value():
    mask = np.zeros(10_000, np.int32)
    mask[1234] = 1
    model = SymbolModel(0, np.array([9999, 1]))
    np.testing.assert_array_equal(model.decode(model.encode(mask), mask.size), mask)


def test_cross_model_ideal_bits_exceeds_own_entropy():
    a = np.rint(np.random.default_rng(3).normal(0, 2, 5000)).astype(np.int32)
    b = np.rint(np.random.default_rng(4).normal(0, 20, 5000)).astype(np.int32)
    shared = SymbolModel.from_symbols(np.concatenate([a, b]))
    assert shared.ideal_bits(a) > empirical_entropy_bits(a)
