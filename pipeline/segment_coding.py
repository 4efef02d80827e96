"""Format version 4: one segment's records and its single range-coder stream.

A segment is ``records | stream``::

    varint flags               bit 0: some weights are pruned; bit 1: some have a step per channel
    [bit 0] bit set            which weights are pruned (one bit per weight, in order, low bit first)
    [bit 1] bit set            which weights have a step per output channel
    per tensor, in the network's parameter order:
      latent grid              float16 step | 9 signed varints (its context model)
      weight                   float16 step(s) | [pruned] varint kept | varint model code | model's integers
    stream                     32-bit little-endian words: the rest of the segment

Model codes (:class:`WeightModel`): 0, a constant (signed varint: every symbol); 1, stored counts
(signed varint offset, varint alphabet, varint counts); ``2 + b * SCALES + k``: table ``k`` of the
Laplace bank of :mod:`pipeline.latent_coding` codes ``symbol >> b`` and the ``b`` low bits follow,
each of its ``2^b`` values equally likely. Tables are built from integers, so, like stored counts,
they give the same probabilities on every machine (float64 counts, ``perfect=False``).

The stream holds, tensor after tensor: a latent grid's symbols (context-coded); a pruned weight's
mask (when some but not all entries are kept; the model is the counts ``[numel - kept, kept]``),
then the weight's kept symbols (for a table: all high parts, then all low bits). Nothing separates
the tensors: the records say how many symbols each takes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import constriction
import numpy as np

from pipeline.byteio import ByteReader, ByteWriter
from pipeline.entropy import SymbolModel, mask_model, read_counts, write_counts
from pipeline.errors import BitstreamError
from pipeline.latent_coding import (
    ALPHABET,
    RESIDUAL_BOUND,
    SCALES,
    LatentContext,
    bank_log2,
    decode_latent_diagonals,
    encode_latent_diagonals,
    latent_bits,
    table_bank,
)
from pipeline.quantization import MAX_SYMBOL, QuantParams
from pipeline.stream_header import CodedTensor

MODEL_CONSTANT, MODEL_COUNTS, MODEL_TABLES = 0, 1, 2
MAX_LOW_BITS = 9  # 32767 >> 9 = 63: every symbol's high part fits the bank's +-126
MAX_MODEL_CODE = MODEL_TABLES + (MAX_LOW_BITS + 1) * SCALES - 1
TABLE_SLACK = 1.01  # a table is taken when it codes within 1 % of stored counts (their bytes included)
_PRUNED, _PER_CHANNEL = 1, 2


@cache
def _table(k: int):
    return constriction.stream.model.Categorical(table_bank()[k], perfect=False)


@cache
def _uniform(bits: int):
    return constriction.stream.model.Categorical(np.ones(1 << bits, np.float64), perfect=False)


@dataclass(frozen=True, eq=False)
class WeightModel:
    """How a weight tensor's kept symbols are coded: a constant, stored counts, or a bank table."""

    code: int
    value: int = 0  # MODEL_CONSTANT: the symbol
    counts: SymbolModel | None = None  # MODEL_COUNTS

    @property
    def table(self) -> int:
        return (self.code - MODEL_TABLES) % SCALES

    @property
    def low_bits(self) -> int:
        return (self.code - MODEL_TABLES) // SCALES

    def describe(self) -> str:
        if self.code == MODEL_CONSTANT:
            return "constant"
        if self.code == MODEL_COUNTS:
            return "counts"
        return f"table {self.table}" + (f" + {self.low_bits} low bits" if self.low_bits else "")

    def write(self, w: ByteWriter) -> None:
        w.varint(self.code)
        if self.code == MODEL_CONSTANT:
            w.svarint(self.value)
        elif self.code == MODEL_COUNTS:
            write_counts(w, self.counts)

    @classmethod
    def read(cls, r: ByteReader, max_count: int) -> WeightModel:
        code = r.varint(MAX_MODEL_CODE)
        if code == MODEL_CONSTANT:
            return cls(code, r.svarint(MAX_SYMBOL))
        if code == MODEL_COUNTS:
            return cls(code, counts=read_counts(r, MAX_SYMBOL, max_count))
        return cls(code)

    @property
    def size(self) -> int:
        """Bytes of its record."""
        w = ByteWriter()
        self.write(w)
        return w.size

    def ideal_bits(self, values: np.ndarray) -> float:
        if self.code == MODEL_CONSTANT or values.size == 0:
            return 0.0
        if self.code == MODEL_COUNTS:
            return self.counts.ideal_bits(values)
        high = (values.astype(np.int64).ravel() >> self.low_bits) + RESIDUAL_BOUND
        return float(-bank_log2()[self.table][high].sum()) + self.low_bits * values.size

    def encode(self, encoder, values: np.ndarray) -> None:
        v = values.astype(np.int64).ravel()
        if self.code == MODEL_CONSTANT or v.size == 0:
            return
        if self.code == MODEL_COUNTS:
            if not self.counts.is_constant:
                encoder.encode((v - self.counts.offset).astype(np.int32), self.counts._categorical)
            return
        b = self.low_bits
        encoder.encode(((v >> b) + RESIDUAL_BOUND).astype(np.int32), _table(self.table))
        if b:
            encoder.encode((v & ((1 << b) - 1)).astype(np.int32), _uniform(b))

    def decode(self, decoder, count: int) -> np.ndarray:
        if self.code == MODEL_CONSTANT or count == 0:
            return np.full(count, self.value, np.int32)
        if self.code == MODEL_COUNTS:
            if self.counts.is_constant:
                return np.full(count, self.counts.offset, np.int32)
            return decoder.decode(self.counts._categorical, count).astype(np.int32) + np.int32(self.counts.offset)
        b = self.low_bits
        out = (decoder.decode(_table(self.table), count).astype(np.int64) - RESIDUAL_BOUND) << b
        if b:
            out += decoder.decode(_uniform(b), count)
        if int(np.abs(out).max()) > MAX_SYMBOL:
            raise BitstreamError(f"corrupt stream: a weight symbol beyond +-{MAX_SYMBOL}")
        return out.astype(np.int32)


def choose_model(values: np.ndarray) -> WeightModel:
    """The model of a weight tensor's kept symbols: a constant when they are all one value; else the
    bank table and number of raw low bits that code them shortest, when that codes within
    :data:`TABLE_SLACK` of the tensor's own counts, the bytes of those counts included; else the counts."""
    v = values.astype(np.int64).ravel()
    if v.size == 0 or v.min() == v.max():
        return WeightModel(MODEL_CONSTANT, int(v[0]) if v.size else 0)
    own = WeightModel(MODEL_COUNTS, counts=SymbolModel.from_symbols(v))
    own_cost = own.ideal_bits(v) + 8 * own.size
    best, best_cost = None, math.inf
    for b in range(MAX_LOW_BITS + 1):
        high = v >> b
        if high.min() < -RESIDUAL_BOUND or high.max() > RESIDUAL_BOUND:
            continue
        bits = -(bank_log2() @ np.bincount(high + RESIDUAL_BOUND, minlength=ALPHABET)) + b * v.size
        k = int(np.argmin(bits))
        model = WeightModel(MODEL_TABLES + b * SCALES + k)
        if bits[k] + 8 * model.size < best_cost:
            best, best_cost = model, bits[k] + 8 * model.size
    return best if best_cost <= TABLE_SLACK * own_cost else own


# --- one segment -----------------------------------------------------------------------------------


@dataclass
class SegmentSplit:
    """Where a segment's bytes go. The stream's bytes are shared among masks, weights and latents in
    proportion to their ideal code lengths (one stream codes them all)."""

    side: dict[str, int] = field(default_factory=lambda: {"records": 0, "models": 0, "steps": 0, "contexts": 0})
    masks: int = 0
    payload: int = 0
    latents: int = 0
    per_tensor: list[dict] = field(default_factory=list)


def _share(split: SegmentSplit, stream_bytes: int, bits: dict[str, float]) -> None:
    total = sum(bits.values())
    if total <= 0:
        split.payload = stream_bytes
        return
    split.masks = round(stream_bytes * bits["masks"] / total)
    split.latents = round(stream_bytes * bits["latents"] / total)
    split.payload = stream_bytes - split.masks - split.latents


def _write_bitset(w: ByteWriter, bits: list[bool]) -> None:
    w.raw(bytes(sum(1 << j for j, on in enumerate(bits[i : i + 8]) if on) for i in range(0, len(bits), 8)))


def _read_bitset(r: ByteReader, n: int) -> list[bool]:
    data = r.raw(-(-n // 8))
    bits = [bool(data[i // 8] >> (i % 8) & 1) for i in range(n)]
    if n % 8 and data[-1] >> (n % 8):
        raise BitstreamError("corrupt record: bits set beyond the last weight")
    return bits


def _kept(t: CodedTensor) -> np.ndarray:
    return t.symbols[t.mask] if t.mask is not None else t.symbols.ravel()


def _account(split: SegmentSplit, bits: dict[str, float], name: str, shape, t: CodedTensor,
             model: WeightModel | None) -> None:
    """Adds a tensor's ideal code lengths to ``bits`` and its entry to ``split.per_tensor``."""
    values, mask_bits = _kept(t), 0.0
    if t.context is not None:
        value_bits = latent_bits(t.symbols, t.context) if t.symbols.size else 0.0
        bits["latents"] += value_bits
    else:
        if t.mask is not None and 0 < values.size < t.mask.size:
            mask_bits = mask_model(t.mask.size, values.size).ideal_bits(t.mask.ravel().astype(np.int32))
        value_bits = model.ideal_bits(values)
        bits["payload"] += value_bits
        bits["masks"] += mask_bits
    split.per_tensor.append({
        "name": name, "shape": list(shape), "per_channel": t.params.per_channel, "kept": int(values.size),
        "model": "context" if model is None else model.describe(), "model_bytes": 0 if model is None else model.size,
        "value_bytes": round(value_bits / 8, 1), "mask_bytes": round(mask_bits / 8, 1)})


def encode_segment(shapes, is_latent, coded: list[CodedTensor]) -> tuple[bytes, SegmentSplit]:
    """A segment's bytes (records and stream) and their split; ``is_latent(name)`` as the kind says."""
    split = SegmentSplit()
    weights = [t for (name, _), t in zip(shapes, coded) if not is_latent(name)]
    pruned = [t.mask is not None for t in weights]
    per_channel = [t.params.per_channel for t in weights]
    w = ByteWriter()
    w.varint((_PRUNED if any(pruned) else 0) | (_PER_CHANNEL if any(per_channel) else 0))
    if any(pruned):
        _write_bitset(w, pruned)
    if any(per_channel):
        _write_bitset(w, per_channel)
    split.side["records"] += w.size
    encoder = constriction.stream.queue.RangeEncoder()
    bits = {"masks": 0.0, "payload": 0.0, "latents": 0.0}
    for (name, shape), t in zip(shapes, coded):
        before = w.size
        w.raw(t.params.scales.astype("<f2").tobytes())
        split.side["steps"] += w.size - before
        model = None
        if t.context is not None:
            before = w.size
            t.context.write(w)
            split.side["contexts"] += w.size - before
            encode_latent_diagonals(t.symbols, t.context, encoder)
        else:
            values = _kept(t)
            if t.mask is not None:
                before = w.size
                w.varint(values.size)
                split.side["records"] += w.size - before
                if 0 < values.size < t.mask.size:
                    encoder.encode(t.mask.ravel().astype(np.int32), mask_model(t.mask.size, values.size)._categorical)
            model = choose_model(values)
            before = w.size
            model.write(w)
            split.side["models"] += w.size - before
            model.encode(encoder, values)
        _account(split, bits, name, shape, t, model)
    stream = encoder.get_compressed().astype("<u4").tobytes()
    _share(split, len(stream), bits)
    return w.getvalue() + stream, split


@dataclass
class _Record:
    name: str
    shape: tuple[int, ...]
    scales: np.ndarray
    kept: int
    pruned: bool
    model: WeightModel | None = None
    context: LatentContext | None = None


def _steps(r: ByteReader, name: str, n: int) -> np.ndarray:
    scales = np.frombuffer(r.raw(2 * n), dtype="<f2").astype(np.float16)
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise BitstreamError(f"corrupt record for {name}: invalid steps")
    return scales


def _read_records(r: ByteReader, shapes, is_latent, split: SegmentSplit) -> list[_Record]:
    start = r.remaining
    flags = r.varint(_PRUNED | _PER_CHANNEL)
    n_weights = sum(1 for name, _ in shapes if not is_latent(name))
    pruned = _read_bitset(r, n_weights) if flags & _PRUNED else [False] * n_weights
    per_channel = _read_bitset(r, n_weights) if flags & _PER_CHANNEL else [False] * n_weights
    if (flags & _PRUNED and not any(pruned)) or (flags & _PER_CHANNEL and not any(per_channel)):
        raise BitstreamError("corrupt record: a flag without a tensor it applies to")
    split.side["records"] += start - r.remaining
    records, wi = [], 0
    for name, shape in shapes:
        numel = math.prod(shape)
        if is_latent(name):
            if len(shape) != 4:
                raise BitstreamError(f"corrupt record for {name}: a latent grid is a plain 4-d tensor")
            before = r.remaining
            scales = _steps(r, name, 1)
            split.side["steps"] += before - r.remaining
            before = r.remaining
            try:
                context = LatentContext.read(r)
            except ValueError:
                raise BitstreamError(f"corrupt record for {name}: a bad context model") from None
            split.side["contexts"] += before - r.remaining
            records.append(_Record(name, shape, scales, numel, False, context=context))
            continue
        before = r.remaining
        scales = _steps(r, name, shape[0] if per_channel[wi] else 1)
        split.side["steps"] += before - r.remaining
        before = r.remaining
        kept = r.varint(numel) if pruned[wi] else numel
        split.side["records"] += before - r.remaining
        before = r.remaining
        model = WeightModel.read(r, max(kept, 1))
        split.side["models"] += before - r.remaining
        records.append(_Record(name, shape, scales, kept, pruned[wi], model))
        wi += 1
    return records


def _decode_stream(stream: bytes, records: list[_Record]) -> list[CodedTensor]:
    if len(stream) % 4:
        raise BitstreamError("corrupt segment: its stream is not a whole number of 32-bit words")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(stream, dtype="<u4").astype(np.uint32))
    tensors = []
    for rec in records:
        if rec.context is not None:
            symbols = decode_latent_diagonals(rec.shape, rec.context, decoder)
            tensors.append(CodedTensor(QuantParams(rec.scales), symbols, None, rec.context))
            continue
        numel = math.prod(rec.shape)
        mask = None
        try:
            if rec.pruned:
                mask = np.full(numel, rec.kept == numel)
                if 0 < rec.kept < numel:
                    mask = decoder.decode(mask_model(numel, rec.kept)._categorical, numel).astype(bool)
                    if int(mask.sum()) != rec.kept:
                        raise BitstreamError(f"corrupt stream for {rec.name}: the mask does not match its count")
            values = rec.model.decode(decoder, rec.kept)
        except (AssertionError, ValueError, RuntimeError) as exc:  # constriction's ways of refusing invalid data
            raise BitstreamError(f"corrupt stream for {rec.name}: {exc}") from None
        if mask is None:
            symbols = values.reshape(rec.shape)
        else:
            symbols = np.zeros(numel, np.int32)
            symbols[mask] = values
            symbols, mask = symbols.reshape(rec.shape), mask.reshape(rec.shape)
        tensors.append(CodedTensor(QuantParams(rec.scales), symbols, mask))
    if not decoder.maybe_exhausted() or (stream and not any(map(_codes_symbols, records))):
        raise BitstreamError("corrupt segment: words left in its stream after the last symbol")
    return tensors


def _codes_symbols(rec: _Record) -> bool:
    """Whether a tensor puts anything in the stream (a segment where none does has an empty stream)."""
    numel = math.prod(rec.shape)
    if rec.context is not None or (rec.pruned and 0 < rec.kept < numel):
        return numel > 0
    model = rec.model
    return rec.kept > 0 and model.code != MODEL_CONSTANT and not (model.counts is not None and model.counts.is_constant)


def decode_segment(data: bytes, shapes, is_latent, decode: bool = True
                   ) -> tuple[list[CodedTensor] | None, SegmentSplit]:
    """The inverse of :func:`encode_segment`. The records are always read and checked; the stream
    is decoded only with ``decode`` (otherwise its bytes count as weights in the split)."""
    split = SegmentSplit()
    r = ByteReader(data, "segment")
    records = _read_records(r, shapes, is_latent, split)
    stream = r.raw(r.remaining)
    if not decode:
        split.payload = len(stream)
        return None, split
    tensors = _decode_stream(stream, records)
    bits = {"masks": 0.0, "payload": 0.0, "latents": 0.0}
    for rec, t in zip(records, tensors):
        _account(split, bits, rec.name, rec.shape, t, rec.model)
    _share(split, len(stream), bits)
    return tensors, split
