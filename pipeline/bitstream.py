"""The ``.bin`` container: both halves (write and read) of format version 2, and the reader of version 1.

Layout, little-endian throughout::

    magic "ENRV" | u16 version | u32 header length | header | u32 payload length | payload | u32 CRC-32

The CRC covers every byte before it. The header starts with a zlib-compressed JSON object: the
network config, the video geometry and, in version 2, the segment table (the first frame and the
frame count of each segment, in order; the segments tile the video). Then, for each segment, its
symbol models and one record per transmitted tensor, in the order the network declares its
parameters: flags, float16 step(s), model index, kept count and payload lengths. The payload holds,
segment after segment, each tensor's range-coded pruning mask, then its range-coded values. The
records give every segment's payload length, so a reader decodes only the segments it needs.

Version 1 (read only) has one segment, a bit depth per tensor (``|symbol| <= 2^(bits-1) - 1``) and
no model kinds; its files decode exactly as they always did.

Every length and count is checked against the bytes that are really there before anything is
allocated, so a damaged or hostile file is refused with a :class:`BitstreamError`, never decoded
into wrong weights.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np
import torch

# ByteReader, ByteWriter, choose_models, SegmentSpan, StreamHeader, CodedTensor and SizeSplit are
# also importable from here, where they were defined before.
from pipeline.byteio import ByteReader, ByteWriter
from pipeline.config import NetworkConfig
from pipeline.entropy import MAX_ALPHABET, SymbolModel, choose_models, mask_model, read_models, write_models
from pipeline.errors import BitstreamError
from pipeline.kinds import network_kind
from pipeline.latent_coding import LatentContext, decode_latents, encode_latents
from pipeline.networks import build_network
from pipeline.quantization import MAX_SYMBOL, QuantParams, qmax
from pipeline.segments import SegmentSpan, check_tiling, segment_index
from pipeline.stream_header import CodedTensor, SizeSplit, StreamHeader, compact_json, expand_json

MAGIC = b"ENRV"
FORMAT_VERSION = 2  # networks of weights alone
LATENT_VERSION = 3  # networks with context-coded latents (pipeline.latent_coding)
READABLE_VERSIONS = (1, 2, 3)
MAX_HEADER_JSON = 1 << 22  # the segment table of a long video is part of it
MAX_PARAMETERS = 1 << 26  # 67 M weights per segment: five times the paper's largest network
MAX_SEGMENTS = 1 << 16

_FLAG_PER_CHANNEL = 1
_FLAG_MASKED = 2
_FLAG_CONTEXT = 4  # version 3: a latent grid, coded with its context model instead of a symbol model


# --- what the file describes ----------------------------------------------------------


def transmitted_shapes(network: NetworkConfig) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the tensors a network transmits, in file order.

    The network is built on the meta device: no memory is spent on weights.
    """
    with torch.device("meta"):
        model = build_network(network)
    return [(name, tuple(p.shape)) for name, p in model.named_parameters()]


def _check_size(shapes: list[tuple[str, tuple[int, ...]]]) -> None:
    total = sum(math.prod(s) for _, s in shapes)
    if total > MAX_PARAMETERS:
        raise BitstreamError(f"the header describes a network of {total} parameters, more than {MAX_PARAMETERS}")


def _kept_values(t: CodedTensor) -> np.ndarray:
    return t.symbols[t.mask] if t.mask is not None else t.symbols.ravel()


# --- writing (version 2) ---------------------------------------------------------------


def write_bitstream(header: StreamHeader, tensors: list[CodedTensor] | list[list[CodedTensor]],
                    spans: list[SegmentSpan] | None = None) -> tuple[bytes, SizeSplit]:
    """Serializes a header and the coded tensors into file bytes: format version 3 for a network
    with latent grids (every latent tensor carries its context model), version 2 otherwise.

    ``tensors`` is one network's tensors in parameter order, or, with ``spans``, one such list
    per segment.
    """
    header.validate()
    if spans is None:
        segments = [tensors]
        spans = [SegmentSpan(0, header.num_frames)]
    else:
        segments = tensors
        if len(segments) != len(spans):
            raise ValueError("one list of tensors per segment")
    check_tiling(spans, header.num_frames)
    shapes = transmitted_shapes(header.network)
    kind = network_kind(header.network.kind)
    version = LATENT_VERSION if kind.latent_prefix is not None else FORMAT_VERSION
    split = SizeSplit()
    meta = header.to_json(version)
    meta["segments"] = [[s.first, s.count] for s in spans]
    if version >= LATENT_VERSION:
        meta = compact_json(meta)
    h = ByteWriter()
    blob = zlib.compress(json.dumps(meta, separators=(",", ":"), sort_keys=True).encode(), 9)
    h.varint(len(blob))
    h.raw(blob)
    payload = ByteWriter()
    for si, coded in enumerate(segments):
        if [s for _, s in shapes] != [t.symbols.shape for t in coded]:
            raise ValueError("the tensors do not match the network's transmitted parameters")
        for (name, _), t in zip(shapes, coded):
            if t.params.bits is not None or int(np.abs(t.symbols).max(initial=0)) > MAX_SYMBOL:
                raise ValueError("tensors of versions 2 and 3 have no bit depth and symbols within +-MAX_SYMBOL")
            if (t.context is not None) != kind.is_latent(name):
                raise ValueError(f"{name}: latent grids, and only they, carry a context model")
            if t.context is not None and (t.mask is not None or t.params.per_channel):
                raise ValueError(f"{name}: a latent grid is neither pruned nor quantized per channel")
        values = [_kept_values(t) for t in coded]
        weights = [i for i, t in enumerate(coded) if t.context is None]
        models, weight_models = choose_models([values[i] for i in weights], tables=version >= LATENT_VERSION)
        model_index = dict(zip(weights, weight_models))
        before = h.size
        write_models(h, models)
        split.side_info += h.size - before
        h.varint(len(coded))
        for ti, ((name, shape), t, v) in enumerate(zip(shapes, coded, values)):
            flags = (_FLAG_PER_CHANNEL if t.params.per_channel else 0) | (_FLAG_MASKED if t.mask is not None else 0)
            if t.context is not None:
                flags |= _FLAG_CONTEXT
            h.pack("B", flags)
            h.raw(t.params.scales.astype("<f2").tobytes())
            split.side_info += 2 * t.params.scales.size
            if t.context is not None:
                before = h.size
                t.context.write(h)
                h.varint(t.symbols.size)  # checked against the shape the header gives
                split.side_info += h.size - before
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
    data = _envelope(version, h.getvalue(), payload.getvalue())
    split.header = len(data) - split.side_info - split.masks - split.payload - split.latents
    return data, split


def _envelope(version: int, header_bytes: bytes, payload_bytes: bytes) -> bytes:
    out = ByteWriter()
    out.raw(MAGIC)
    out.pack("HI", version, len(header_bytes))
    out.raw(header_bytes)
    out.pack("I", len(payload_bytes))
    out.raw(payload_bytes)
    body = out.getvalue()
    return body + struct.pack("<I", zlib.crc32(body))


# --- reading ------------------------------------------------------------------------------


@dataclass
class ParsedSegment:
    span: SegmentSpan
    tensors: list[CodedTensor] | None  # None: not decoded (outside the frames asked for)


@dataclass
class ParsedStream:
    header: StreamHeader
    segments: list[ParsedSegment]
    shapes: list[tuple[str, tuple[int, ...]]]
    split: SizeSplit
    version: int = FORMAT_VERSION

    @property
    def tensors(self) -> list[CodedTensor]:
        """The tensors of a one-segment file (every file of version 1, short clips of version 2)."""
        if len(self.segments) != 1:
            raise ValueError("this file has several segments; use .segments")
        return self.segments[0].tensors

    def segment_of(self, frame: int) -> int:
        """Index of the segment that renders ``frame``."""
        return segment_index([s.span for s in self.segments], frame)


def _check_envelope(data: bytes) -> tuple[int, bytes, bytes]:
    """Checks magic, version, lengths and CRC; returns (version, header bytes, payload bytes)."""
    if len(data) == 0:
        raise BitstreamError("the file is empty")
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError("not an E-NeRV bitstream (bad magic bytes)")
    r = ByteReader(data, "file")
    r.raw(4)
    (version,) = r.unpack("H")
    if version not in READABLE_VERSIONS:
        raise BitstreamError(
            f"unsupported bitstream format version {version} (this decoder reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    (header_len,) = r.unpack("I")
    if header_len + 8 > r.remaining:
        raise BitstreamError("truncated file: the header is cut short")
    header_bytes = r.raw(header_len)
    (payload_len,) = r.unpack("I")
    if payload_len + 4 != r.remaining:
        raise BitstreamError(
            f"truncated or padded file: {r.remaining} bytes follow the header, {payload_len + 4} expected"
        )
    payload = r.raw(payload_len)
    (crc,) = r.unpack("I")
    if zlib.crc32(memoryview(data)[:-4]) != crc:
        raise BitstreamError("checksum mismatch: the file is corrupt")
    return version, header_bytes, payload


def _read_json(r: ByteReader) -> dict:
    meta_len = r.varint(MAX_HEADER_JSON)
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(r.raw(meta_len), MAX_HEADER_JSON)
        if inflater.unconsumed_tail:
            raise BitstreamError("corrupt header: metadata too large")
        meta = json.loads(text)
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise BitstreamError("corrupt header: unreadable metadata") from None
    if not isinstance(meta, dict):
        raise BitstreamError("corrupt header: metadata is not an object")
    return meta


def _parse_header(version: int, meta: dict) -> tuple[StreamHeader, list[SegmentSpan]]:
    if version >= LATENT_VERSION:
        meta = expand_json(meta)
    header = StreamHeader.from_json(meta, version)
    if version == 1:
        return header, [SegmentSpan(0, header.num_frames)]
    table = meta.get("segments")
    if not isinstance(table, list) or not 1 <= len(table) <= min(MAX_SEGMENTS, header.num_frames):
        raise BitstreamError("corrupt header: a bad segment table")
    for entry in table:
        if (not isinstance(entry, list) or len(entry) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) for v in entry)):
            raise BitstreamError("corrupt header: a bad segment table")
    spans = [SegmentSpan(first, count) for first, count in table]
    try:
        check_tiling(spans, header.num_frames)
    except ValueError as exc:
        raise BitstreamError(f"corrupt header: {exc}") from None
    return header, spans


def read_header(data: bytes) -> StreamHeader:
    """Checks the envelope and returns the header (no weights decoded)."""
    version, header_bytes, _ = _check_envelope(data)
    return _parse_header(version, _read_json(ByteReader(header_bytes, "header")))[0]


@dataclass
class _Record:
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


def _read_records(r: ByteReader, version: int, shapes, payload_left: int, is_latent
                  ) -> tuple[list[SymbolModel], list[_Record], int]:
    """One segment's models and records; also the bytes of side information they took.
    ``is_latent(name)``: whether the network's tensor ``name`` is a latent grid."""
    models_start = r.remaining
    if version == 1:
        models = read_models(r, MAX_ALPHABET, MAX_PARAMETERS, with_kind=False)
    else:
        models = read_models(r, MAX_SYMBOL, MAX_PARAMETERS, tables=version >= LATENT_VERSION)
    n_models = len(models)
    side = models_start - r.remaining
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
        side += 2 * n_scales
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
            side += before - r.remaining
            value_len = r.varint(payload_left)
            payload_left -= value_len
            records.append(_Record(name, shape, flags, None, scales, -1, numel, 0, value_len, context))
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
        records.append(_Record(name, shape, flags, bits, scales, mi, kept, mask_len, value_len))
    return models, records, side


def _decode_tensors(p: ByteReader, models: list[SymbolModel], records: list[_Record]) -> list[CodedTensor]:
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


def read_bitstream(data: bytes, frames: range | None = None) -> ParsedStream:
    """Parses a whole file and entropy-decodes the segments that render ``frames`` (all by default).

    The inverse of :func:`write_bitstream`; also reads version-1 files.
    """
    version, header_bytes, payload = _check_envelope(data)
    r = ByteReader(header_bytes, "header")
    header, spans = _parse_header(version, _read_json(r))
    shapes = transmitted_shapes(header.network)
    _check_size(shapes)
    kind = network_kind(header.network.kind)
    if (version >= LATENT_VERSION) != (kind.latent_prefix is not None):
        raise BitstreamError(f"corrupt header: a {kind.name} network in a file of format version {version}")
    split = SizeSplit()
    p = ByteReader(payload, "payload")
    segments = []
    for si, span in enumerate(spans):
        models, records, side = _read_records(r, version, shapes, p.remaining, kind.is_latent)
        split.side_info += side
        if frames is None or span.overlaps(frames):
            tensors = _decode_tensors(p, models, records)
        else:
            p.raw(sum(rec.mask_len + rec.value_len for rec in records))
            tensors = None
        segments.append(ParsedSegment(span, tensors))
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
    if r.remaining or p.remaining:
        raise BitstreamError("corrupt file: unexplained bytes after the last tensor")
    split.header = len(data) - split.side_info - split.masks - split.payload - split.latents
    return ParsedStream(header, segments, shapes, split, version)
