import numpy as np
import pytest

from pipeline.byteio import ByteReader, ByteWriter
from pipeline.entropy import (
    MODEL_COUNTS,
    SymbolModel,
    choose_models,
    empirical_entropy_bits,
    mask_model,
    model_bytes,
    read_model,
    read_models,
    write_model,
    write_models,
)
from pipeline.errors import BitstreamError


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


# --- the models' serialization and the choice of shared models -------------------------------------

BOUND = 32767


def _models_round_trip(models, with_kind=True):
    w = ByteWriter()
    if with_kind:
        write_models(w, models)
    else:  # version 1: counts only, no kind byte
        w.varint(len(models))
        for m in models:
            w.svarint(m.offset)
            w.varint(m.alphabet)
            for c in m.counts.tolist():
                w.varint(c)
    r = ByteReader(w.getvalue(), "test")
    read = read_models(r, BOUND, 1 << 26, with_kind)
    assert r.remaining == 0
    return read, w.size


@pytest.mark.parametrize("with_kind", [True, False])
def test_written_counts_read_back_exactly(with_kind):
    rng = np.random.default_rng(3)
    models = [SymbolModel.from_symbols(np.rint(rng.laplace(0, s, 3000)).astype(np.int32)) for s in (0.3, 2, 40)]
    models.append(SymbolModel(-BOUND, np.array([1, 0, 7], np.int64)))  # the format's edge, a zero count
    read, size = _models_round_trip(models, with_kind)
    assert [(m.offset, m.counts.tolist()) for m in read] == [(m.offset, m.counts.tolist()) for m in models]
    if with_kind:
        assert size == 1 + sum(model_bytes(m) for m in models)
    symbols = np.rint(rng.laplace(0, 2, 3000)).astype(np.int32)
    model = SymbolModel.from_symbols(symbols)
    (rebuilt,), _ = _models_round_trip([model], with_kind)
    np.testing.assert_array_equal(rebuilt.decode(model.encode(symbols), symbols.size), symbols)


@pytest.mark.parametrize("damage", ["kind", "zero counts", "outside bound", "alphabet beyond bytes"])
def test_damaged_models_are_refused(damage):
    w = ByteWriter()
    if damage == "kind":
        w.pack("B", MODEL_COUNTS + 1)
    else:
        w.pack("B", MODEL_COUNTS)
        if damage == "zero counts":
            w.svarint(0), w.varint(2), w.varint(0), w.varint(0)
        elif damage == "outside bound":
            w.svarint(BOUND), w.varint(2), w.varint(1), w.varint(1)
        else:
            w.svarint(0), w.varint(500), w.varint(1)
    with pytest.raises(BitstreamError):
        read_model(ByteReader(w.getvalue(), "test"), BOUND, 1 << 26)


def test_one_model_per_written_model_and_the_kind_byte_first():
    model = SymbolModel(-1, np.array([3, 4, 5], np.int64))
    w = ByteWriter()
    write_model(w, model)
    assert w.getvalue()[0] == MODEL_COUNTS and w.size == model_bytes(model)


def test_alike_tensors_share_one_model_and_unlike_ones_keep_their_own():
    rng = np.random.default_rng(4)
    alike = [np.rint(rng.laplace(0, 3, n)).astype(np.int32) for n in (200, 300, 250)]
    models, index = choose_models(alike)
    assert index == [0, 0, 0] and len(models) == 1 and all(models[0].covers(v) for v in alike)
    unlike = [np.rint(rng.laplace(0, s, 50_000)).astype(np.int32) for s in (1, 100)]
    models, index = choose_models(unlike)
    assert index == [0, 1] and len(models) == 2
    assert [m.counts.tolist() for m in models] == [SymbolModel.from_symbols(v).counts.tolist() for v in unlike]


def test_a_lone_tensor_has_its_own_model_and_empty_input_has_none():
    values = [np.rint(np.random.default_rng(5).laplace(0, 3, 1000)).astype(np.int32)]
    models, index = choose_models(values)
    assert index == [0] and len(models) == 1 and models[0].covers(values[0])
    assert choose_models([]) == ([], [])


def test_the_mask_model_is_the_counts_of_zeros_and_ones():
    model = mask_model(10, 3)
    assert model.offset == 0 and model.counts.tolist() == [7, 3]
