"""The per-tensor records and payloads of format versions 1, 2 and 3 (both halves of 2 and 3, the
reader of 1); :mod:`pipeline.bitstream` puts them in the container.

Per segment the header holds its symbol models, then one record per transmitted tensor, in the
order the network declares its parameters: flags, float16 step(s), model index, kept count and
payload lengths (version 1: a bit depth too). The payload holds each tensor's range-coded mask,
then its range-coded values, each padded to 32-bit words. A version-3 latent grid's record has
flag 4, its step, its context model and its element count; its payload is context-coded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.byteio import ByteReader, ByteWriter
from pipeline.entropy import MAX_ALPHABET, SymbolModel, choose_models, mask_model, read_models, write_models
from pipeline.errors import BitstreamError
from pipeline.latent_coding import LatentContext, decode_latents, encode_latents
from pipeline.quantization import MAX_SYMBOL, QuantParams, qmax
from pipeline.stream_header import CodedTensor, SizeSplit

LATENT_VERSION = 3
MAX_PARAMETERS = 1 << 26  # 67 M weights per segment: five times the paper's largest network

_FLAG_PER_CHANNEL = 1
_FLAG_MASKED = 2
_FLAG_CONTEXT = 4  # version 3: a latent grid, coded with its context model instead of a symbol model


def _kept_values(t: CodedTensor) -> np.ndarray:
    return t.symbols[t.mask] if t.mask is not None else t.symbols.ravel()


def _add_side(split: SizeSplit, part: str, n: int) -> None:
    split.side_parts[part] = split.side_parts.get(part, 0) + n


def write_records(h: ByteWriter, payload: ByteWriter, version: int, si: int, shapes, coded: list[CodedTensor],
                  split: SizeSplit) -> None:
    """Appends segment ``si``'s models and records to ``h`` and its coded masks and values to
    ``payload`` (version 2, or 3 for a network with latent grids)."""
    values = [_kept_values(t) for t in coded]
    weights = [i for i, t in enumerate(coded) if t.context is None]
    models, weight_models = choose_models([values[i] for i in weights], tables=version >= LATENT_VERSION)
    model_index = dict(zip(weights, weight_models))
    before = h.size
    write_models(h, models)
    _add_side(split, "models", h.size - before)
    h.varint(len(coded))
    for ti, ((name, shape), t, v) in enumerate(zip(shapes, coded, values)):
        flags = (_FLAG_PER_CHANNEL if t.params.per_channel else 0) | (_FLAG_MASKED if t.mask is not None else 0)
        if t.context is not None:
            flags |= _FLAG_CONTEXT
        h.pack("B", flags)
        h.raw(t.params.scales.astype("<f2").tobytes())
        _add_side(split, "steps", 2 * t.params.scales.size)
        if t.context is not None:
            before = h.size
            t.context.write(h)
            h.varint(t.symbols.size)  # checked against the shape the header gives
            _add_side(split, "contexts", h.size - before)
            value_bytes = encode_latents(t.symbols, t.context)
            h.varint(len(value_bytes))
            payload.raw(value_bytes)
            split.latents += len(value_bytes)
            split.per_tensor.append({
                "segment": si, "name": name, "shape": list(shape), "per_channel": False, "kept": int(v.size),
                "model": "context", "value_bytes": len(value_bytes), "mask_bytes": 0,
            })
            continue
        mi = model_index[ti]
        h.varint(mi)
        mask_bytes = b""
        if t.mask is not None:
            kept = int(t.mask.sum())
            mask_bytes = mask_model(t.mask.size, kept).encode(t.mask.ravel().astype(np.int32))
            h.varint(kept)
            h.varint(len(mask_bytes))
        value_bytes = models[mi].encode(v)
        h.varint(len(value_bytes))
        payload.raw(mask_bytes)
        payload.raw(value_bytes)
        split.masks += len(mask_bytes)
        split.payload += len(value_bytes)
        split.per_tensor.append({
            "segment": si, "name": name, "shape": list(shape), "per_channel": t.params.per_channel,
            "kept": int(v.size), "model": mi, "value_bytes": len(value_bytes), "mask_bytes": len(mask_bytes),
        })


@dataclass
class Record:
    name: str
    shape: tuple[int, ...]
    flags: int
    bits: int | None
    scales: np.ndarray
    model: int
    kept: int
    mask_len: int
    value_len: int
    context: LatentContext | None = None


def read_records(r: ByteReader, version: int, shapes, payload_left: int, is_latent, split: SizeSplit
                 ) -> tuple[list[SymbolModel], list[Record]]:
    """One segment's models and records; the side information they take is added to ``split.side_parts``.
    ``is_latent(name)``: whether the network's tensor ``name`` is a latent grid."""
    before = r.remaining
    if version == 1:
        models = read_models(r, MAX_ALPHABET, MAX_PARAMETERS, with_kind=False)
    else:
        models = read_models(r, MAX_SYMBOL, MAX_PARAMETERS, tables=version >= LATENT_VERSION)
    n_models = len(models)
    _add_side(split, "models", before - r.remaining)
    n_tensors = r.varint(len(shapes) + 1)
    if n_tensors != len(shapes):
        raise BitstreamError(f"the file has {n_tensors} tensors, the network declares {len(shapes)}")
    records = []
    for name, shape in shapes:
        numel = math.prod(shape)
        if version == 1:
            flags, bits = r.unpack("BB")
            if not 2 <= bits <= 16:
                raise BitstreamError(f"corrupt record for {name}: bits {bits}")
        else:
            (flags,) = r.unpack("B")
            bits = None
        known = _FLAG_PER_CHANNEL | _FLAG_MASKED | (_FLAG_CONTEXT if version >= LATENT_VERSION else 0)
        if flags & ~known:
            raise BitstreamError(f"corrupt record for {name}: flags {flags}")
        n_scales = shape[0] if flags & _FLAG_PER_CHANNEL else 1
        scales = np.frombuffer(r.raw(2 * n_scales), dtype="<f2").astype(np.float16)
        if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            raise BitstreamError(f"corrupt record for {name}: invalid steps")
        _add_side(split, "steps", 2 * n_scales)
        if bool(flags & _FLAG_CONTEXT) != (version >= LATENT_VERSION and is_latent(name)):
            raise BitstreamError(f"corrupt record for {name}: latent grids, and only they, are context-coded")
        if flags & _FLAG_CONTEXT:
            if flags != _FLAG_CONTEXT or len(shape) != 4:
                raise BitstreamError(f"corrupt record for {name}: a latent grid is a plain 4-d tensor")
            before = r.remaining
            try:
                context = LatentContext.read(r)
            except ValueError:
                raise BitstreamError(f"corrupt record for {name}: a bad context model") from None
            if r.varint(MAX_PARAMETERS) != numel:
                raise BitstreamError(f"corrupt record for {name}: the latent grid's size does not match the network")
            _add_side(split, "contexts", before - r.remaining)
            value_len = r.varint(payload_left)
            payload_left -= value_len
            records.append(Record(name, shape, flags, None, scales, -1, numel, 0, value_len, context))
            continue
        if n_models == 0:
            raise BitstreamError("corrupt header: no symbol models")
        mi = r.varint(n_models - 1)
        model = models[mi]
        bound = qmax(bits) if bits is not None else MAX_SYMBOL
        if model.offset < -bound or model.offset + model.alphabet - 1 > bound:
            raise BitstreamError(f"corrupt record for {name}: symbol model outside the tensor's range")
        kept, mask_len = numel, 0
        if flags & _FLAG_MASKED:
            kept = r.varint(numel)
            mask_len = r.varint(payload_left)
            payload_left -= mask_len
        value_len = r.varint(payload_left)
        payload_left -= value_len
        if model.is_constant and value_len:
            raise BitstreamError(f"corrupt record for {name}: payload for a constant tensor")
        records.append(Record(name, shape, flags, bits, scales, mi, kept, mask_len, value_len))
    return models, records


def decode_tensors(p: ByteReader, models: list[SymbolModel], records: list[Record]) -> list[CodedTensor]:
    tensors = []
    for rec in records:
        numel = math.prod(rec.shape)
        mask = None
        if rec.context is not None:
            symbols = decode_latents(p.raw(rec.value_len), rec.shape, rec.context)
            tensors.append(CodedTensor(QuantParams(rec.scales), symbols, None, rec.context))
            continue
        if rec.flags & _FLAG_MASKED:
            mask_symbols = mask_model(numel, rec.kept).decode(p.raw(rec.mask_len), numel) if numel else np.zeros(0)
            mask = mask_symbols.astype(bool)
            if int(mask.sum()) != rec.kept:
                raise BitstreamError(f"corrupt payload for {rec.name}: the mask does not match its count")
        values = models[rec.model].decode(p.raw(rec.value_len), rec.kept)
        if mask is None:
            symbols = values.reshape(rec.shape)
        else:
            symbols = np.zeros(numel, np.int32)
            symbols[mask] = values
            symbols = symbols.reshape(rec.shape)
            mask = mask.reshape(rec.shape)
        tensors.append(CodedTensor(QuantParams(rec.scales, rec.bits), symbols, mask))
    return tensors


def account_records(split: SizeSplit, records: list[Record], version: int, si: int) -> None:
    """Adds a segment's payload bytes and per-tensor entries to ``split``."""
    for rec in records:
        split.masks += rec.mask_len
        if rec.context is not None:
            split.latents += rec.value_len
        else:
            split.payload += rec.value_len
        entry = {"name": rec.name, "shape": list(rec.shape), "per_channel": rec.scales.size > 1,
                 "kept": int(rec.kept), "model": "context" if rec.context is not None else rec.model,
                 "value_bytes": rec.value_len, "mask_bytes": rec.mask_len}
        if version == 1:
            entry["bits"] = rec.bits
        else:
            entry["segment"] = si
        split.per_tensor.append(entry)
