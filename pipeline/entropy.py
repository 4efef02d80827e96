"""Entropy coding of integer symbols with constriction's range coder, and the models' life in the file.

A :class:`SymbolModel` is built from integer counts, which is all the bitstream
stores of it; encoder and decoder turn the counts into float64 the same way and
build the categorical model with ``perfect=False``, so both sides get bit-identical
probabilities on any machine.

Beside the coder pair (:meth:`SymbolModel.encode`, :meth:`SymbolModel.decode`) live the
models' serialization (:func:`write_models`, :func:`read_models`) and the choice of which
model codes which tensor (:func:`choose_models`), as format versions 1-3 use them; the container
(``pipeline.bitstream``) only says where in the file they go. Version 4 codes every tensor of a
segment into one stream, with the models of :mod:`pipeline.segment_coding` (stored counts as
written here, or tables of the bank).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import constriction
import numpy as np

from pipeline.byteio import ByteReader, ByteWriter
from pipeline.errors import BitstreamError
from pipeline.latent_coding import RESIDUAL_BOUND, SCALES, table_bank

MAX_ALPHABET = 1 << 16  # enough for 16-bit symbols


@dataclass(frozen=True, eq=False)
class SymbolModel:
    """Counts of the symbols ``offset, offset+1, ...`` (an empirical distribution)."""

    offset: int
    counts: np.ndarray  # int64, at least one nonzero
    table: int | None = None  # a table of the fixed Laplace bank (format version 3): stored as its index

    @classmethod
    def from_symbols(cls, symbols: np.ndarray) -> SymbolModel:
        if symbols.size == 0:
            return cls(0, np.ones(1, np.int64))
        low, high = int(symbols.min()), int(symbols.max())
        counts = np.bincount((symbols.astype(np.int64) - low).ravel(), minlength=high - low + 1)
        return cls(low, counts.astype(np.int64))

    @property
    def alphabet(self) -> int:
        return int(self.counts.shape[0])

    @property
    def is_constant(self) -> bool:
        """A one-symbol alphabet: every symbol is known, nothing needs coding."""
        return self.alphabet == 1

    def covers(self, symbols: np.ndarray) -> bool:
        if symbols.size == 0:
            return True
        return int(symbols.min()) >= self.offset and int(symbols.max()) < self.offset + self.alphabet

    @cached_property
    def _categorical(self):
        return constriction.stream.model.Categorical(self.counts.astype(np.float64), perfect=False)

    def ideal_bits(self, symbols: np.ndarray) -> float:
        """Code length in bits of ``symbols`` under this model (the cross-entropy)."""
        if self.is_constant or symbols.size == 0:
            return 0.0
        # Symbols with zero count still get a tiny probability in the coder.
        p = np.maximum(self.counts, 1e-3) / self.counts.sum()
        return float(-np.log2(p[symbols.ravel() - self.offset]).sum())

    def encode(self, symbols: np.ndarray) -> bytes:
        """Codes int symbols (all covered by the model) into little-endian 32-bit words."""
        if self.is_constant or symbols.size == 0:
            return b""
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode((symbols.ravel() - self.offset).astype(np.int32), self._categorical)
        return encoder.get_compressed().astype("<u4").tobytes()

    def decode(self, data: bytes, count: int) -> np.ndarray:
        """The inverse of :meth:`encode`: ``count`` int32 symbols."""
        if self.is_constant or count == 0:
            return np.full(count, self.offset, np.int32)
        if len(data) % 4:
            raise ValueError("a range-coded payload is a whole number of 32-bit words")
        words = np.frombuffer(data, dtype="<u4").astype(np.uint32)
        decoder = constriction.stream.queue.RangeDecoder(words)
        try:
            symbols = decoder.decode(self._categorical, count)
        except (AssertionError, ValueError, RuntimeError):  # constriction's ways of refusing invalid data
            raise BitstreamError("corrupt payload: not a valid range-coded stream for its model") from None
        return symbols.astype(np.int32) + np.int32(self.offset)


def empirical_entropy_bits(symbols: np.ndarray) -> float:
    """``n * H(p)`` with ``p`` the symbols' own histogram: the bound a coder aims at."""
    return SymbolModel.from_symbols(symbols).ideal_bits(symbols)


# --- serialization: what the file stores of a model ---------------------------------------------
#
# A model is stored as its integer counts: ``svarint offset | varint alphabet | varint count...``.
# Files of format version 2 put a one-byte model kind before that (``MODEL_COUNTS``, the only
# kind so far); version 1 has no kind byte.

MODEL_COUNTS = 0
MODEL_TABLE = 1  # version 3: table k of pipeline.latent_coding's integer-built Laplace bank, symbols -126..126


def table_model(k: int) -> SymbolModel:
    """The zero-mean model of table ``k`` of the Laplace bank (nothing but its index is stored)."""
    return SymbolModel(-RESIDUAL_BOUND, table_bank()[k].astype(np.int64), table=k)


def best_table(symbols: np.ndarray) -> tuple[SymbolModel, float] | None:
    """The bank table that codes ``symbols`` shortest, and its code length in bits; None when
    some symbol lies outside the bank's alphabet."""
    if symbols.size == 0 or int(np.abs(symbols).max()) > RESIDUAL_BOUND:
        return None
    hist = np.bincount(symbols.astype(np.int64).ravel() + RESIDUAL_BOUND, minlength=2 * RESIDUAL_BOUND + 1)
    bank = table_bank()
    bits = -(np.log2(bank / bank.sum(axis=1, keepdims=True)) @ hist)
    k = int(np.argmin(bits))
    return table_model(k), float(bits[k])


def write_counts(w: ByteWriter, model: SymbolModel) -> None:
    w.svarint(model.offset)
    w.varint(model.alphabet)
    for count in model.counts.tolist():
        w.varint(count)


def read_counts(r: ByteReader, bound: int, max_count: int) -> SymbolModel:
    offset = r.svarint(bound)
    alphabet = r.varint(min(MAX_ALPHABET, 2 * bound + 1))
    if alphabet < 1 or alphabet > r.remaining:  # each count takes at least a byte
        raise BitstreamError("corrupt symbol model: bad alphabet size")
    counts = np.array([r.varint(max_count) for _ in range(alphabet)], dtype=np.int64)
    if counts.sum() == 0:
        raise BitstreamError("corrupt symbol model: all counts are zero")
    if offset < -bound or offset + alphabet - 1 > bound:
        raise BitstreamError("corrupt symbol model: symbols outside the format's range")
    return SymbolModel(offset, counts)


def write_model(w: ByteWriter, model: SymbolModel) -> None:
    """Stores one model as the file does (kind byte, then its counts or its table's index)."""
    if model.table is not None:
        w.pack("B", MODEL_TABLE)
        w.varint(model.table)
        return
    w.pack("B", MODEL_COUNTS)
    write_counts(w, model)


def read_model(r: ByteReader, bound: int, max_count: int, with_kind: bool = True,
               tables: bool = False) -> SymbolModel:
    """The inverse of :func:`write_model` (``with_kind=False``: a version-1 model, counts only;
    ``tables``: bank tables allowed, as in version 3).

    ``bound`` limits the symbols (``|symbol| <= bound``) and ``max_count`` each count.
    """
    if with_kind:
        (kind,) = r.unpack("B")
        if kind == MODEL_TABLE and tables:
            return table_model(r.varint(SCALES - 1))
        if kind != MODEL_COUNTS:
            raise BitstreamError(f"corrupt symbol model: unknown kind {kind}")
    return read_counts(r, bound, max_count)


def model_bytes(model: SymbolModel) -> int:
    """What storing ``model`` costs in the file."""
    w = ByteWriter()
    write_model(w, model)
    return w.size


def write_models(w: ByteWriter, models: list[SymbolModel]) -> None:
    """A segment's model table: how many, then each model."""
    w.varint(len(models))
    for model in models:
        write_model(w, model)


def read_models(r: ByteReader, bound: int, max_count: int, with_kind: bool = True,
                tables: bool = False) -> list[SymbolModel]:
    """The inverse of :func:`write_models`."""
    n_models = r.varint(r.remaining)
    return [read_model(r, bound, max_count, with_kind, tables) for _ in range(n_models)]


# --- which model codes which tensor ---------------------------------------------------------------


def choose_models(values: list[np.ndarray], tables: bool = False) -> tuple[list[SymbolModel], list[int]]:
    """Gives each tensor its own symbol model or a shared one, whichever codes smaller.

    ``values`` are the symbols each tensor transmits. Returns the models to store (the shared
    one first, when there is one) and, per tensor, the index of the one it uses. The cost of a
    model is its ideal code length plus what storing it takes; a shared model's storage is
    split among its users. With ``tables`` (version 3) a tensor's own model may also be a table
    of the Laplace bank, which costs two bytes to store.
    """
    own = [SymbolModel.from_symbols(v) for v in values]
    own_cost = [m.ideal_bits(v) + 8 * model_bytes(m) for m, v in zip(own, values)]
    if tables:
        for i, v in enumerate(values):
            found = best_table(v) if not own[i].is_constant else None
            if found is not None and found[1] + 8 * model_bytes(found[0]) < own_cost[i]:
                own[i], own_cost[i] = found[0], found[1] + 8 * model_bytes(found[0])
    use_shared = [True] * len(values)
    shared = None
    for _ in range(3):  # the shared model depends on who uses it: iterate to a fixed point
        members = [v for v, s in zip(values, use_shared) if s]
        if not members:
            break
        shared = SymbolModel.from_symbols(np.concatenate([m.ravel() for m in members]))
        shared_cost = 8 * model_bytes(shared) / len(members)
        new = [shared.covers(v) and shared.ideal_bits(v) + shared_cost < c for v, c in zip(values, own_cost)]
        if new == use_shared:
            break
        use_shared = new
    models: list[SymbolModel] = []
    index = []
    if shared is not None and any(use_shared) and all(shared.covers(v) for v, s in zip(values, use_shared) if s):
        models.append(shared)
    else:
        use_shared = [False] * len(values)
    for m, s in zip(own, use_shared):
        if s:
            index.append(0)
        else:
            index.append(len(models))
            models.append(m)
    return models, index


def mask_model(numel: int, kept: int) -> SymbolModel:
    """The model of a pruning mask of ``numel`` entries, ``kept`` of them ones: the file stores only
    ``kept``, so this model is never written."""
    return SymbolModel(0, np.array([numel - kept, kept], dtype=np.int64))
