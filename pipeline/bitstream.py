"""The ``.bin`` container: writing and reading every format version.

Every version starts with ``magic "ENRV" | u16 version`` and ends with a u32 CRC-32 of every
byte before it; little-endian throughout.

======= ============================================================================ ================
version what it adds                                                                 written / read
======= ============================================================================ ================
1       one network; zlib JSON header; per tensor a bit depth, float16 step(s), a    read
        symbol model of stored counts, its mask and values range-coded apart
2       the network kind's fields, a segment table (one network per segment, each   on request / read
        decodable alone), per-segment models shared by tensors, learned steps
3       context-coded latent grids (``pipeline.latent_coding``), bank tables as      on request / read
        weight models, a compact JSON header
4       a binary header of the fields that differ from reference values             by default / read
        (``pipeline.binary_header``); per segment compact records and one
        range-coder stream for every mask, weight and latent grid
        (``pipeline.segment_coding``); bank tables with raw low bits
======= ============================================================================ ================

Versions 1-3: ``magic | u16 version | u32 header length | header | u32 payload length | payload | u32 CRC``;
the header is the zlib-compressed JSON, then per segment its models and one record per tensor
(:mod:`pipeline.tensor_records`), each record giving its payload lengths; the payload holds each
tensor's mask and values, each padded to 32-bit words.

Version 4: ``magic | u16 4 | header | per segment: varint length, segment | u32 CRC``. Each
segment holds its records and its stream; its length lets a reader skip it, so a reader decodes
only the segments that render the frames it needs.

The CRC refuses a damaged file; every length and count is checked against the bytes that are
really there before anything is allocated, so a hostile one (a valid CRC over invalid content) is
refused with a :class:`BitstreamError` too, never a crash or an allocation beyond what its network
needs.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass

import torch

# ByteReader, ByteWriter, SegmentSpan, StreamHeader, CodedTensor and SizeSplit are also importable
# from here, where they were defined before.
from pipeline import binary_header
from pipeline.byteio import ByteReader, ByteWriter
from pipeline.config import NetworkConfig
from pipeline.errors import BitstreamError
from pipeline.kinds import network_kind
from pipeline.networks import build_network
from pipeline.quantization import MAX_SYMBOL
from pipeline.segment_coding import decode_segment, encode_segment
from pipeline.segments import SegmentSpan, check_tiling, segment_index
from pipeline.stream_header import CodedTensor, SizeSplit, StreamHeader, compact_json, expand_json
from pipeline.tensor_records import LATENT_VERSION, MAX_PARAMETERS, account_records, decode_tensors, read_records
from pipeline.tensor_records import write_records as write_records_v23

MAGIC = b"ENRV"
FORMAT_VERSION = 4  # written for every kind
WEIGHTS_VERSION = 2  # the version written on request for networks of weights alone
READABLE_VERSIONS = (1, 2, 3, 4)
MAX_HEADER_JSON = 1 << 22  # the segment table of a long video is part of it
MAX_SEGMENTS = 1 << 16
_ENVELOPE = 4 + 2 + 4 + 4 + 4  # versions 1-3: magic, version, two lengths, CRC
_FRAMING = 4 + 2 + 4  # version 4: magic, version, CRC (the segment lengths come on top)


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


def _check_tensors(kind, shapes, coded: list[CodedTensor]) -> None:
    if [s for _, s in shapes] != [t.symbols.shape for t in coded]:
        raise ValueError("the tensors do not match the network's transmitted parameters")
    for (name, _), t in zip(shapes, coded):
        if t.params.bits is not None or int(abs(t.symbols).max(initial=0)) > MAX_SYMBOL:
            raise ValueError("tensors of versions 2 to 4 have no bit depth and symbols within +-MAX_SYMBOL")
        if (t.context is not None) != kind.is_latent(name):
            raise ValueError(f"{name}: latent grids, and only they, carry a context model")
        if t.context is not None and (t.mask is not None or t.params.per_channel):
            raise ValueError(f"{name}: a latent grid is neither pruned nor quantized per channel")


# --- writing ----------------------------------------------------------------------------------


def write_bitstream(header: StreamHeader, tensors: list[CodedTensor] | list[list[CodedTensor]],
                    spans: list[SegmentSpan] | None = None, version: int = FORMAT_VERSION) -> tuple[bytes, SizeSplit]:
    """Serializes a header and the coded tensors into file bytes, of format version 4 unless
    ``version`` asks for 2 (networks of weights alone) or 3 (networks with latent grids).

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
    if version not in (WEIGHTS_VERSION, LATENT_VERSION, FORMAT_VERSION):
        raise ValueError(f"format version {version} is not written")
    if version != FORMAT_VERSION and (version == LATENT_VERSION) != (kind.latent_prefix is not None):
        raise ValueError(f"a {kind.name} network is written in version {FORMAT_VERSION} or "
                         f"{LATENT_VERSION if kind.latent_prefix is not None else WEIGHTS_VERSION}")
    for coded in segments:
        _check_tensors(kind, shapes, coded)
    if version == FORMAT_VERSION:
        return _write_v4(header, shapes, kind, segments, spans)
    split = SizeSplit()
    meta = header.to_json(version)
    meta["segments"] = [[s.first, s.count] for s in spans]
    if version >= LATENT_VERSION:
        meta = compact_json(meta)
    h = ByteWriter()
    blob = zlib.compress(json.dumps(meta, separators=(",", ":"), sort_keys=True).encode(), 9)
    h.varint(len(blob))
    h.raw(blob)
    split.header = h.size
    payload = ByteWriter()
    for si, coded in enumerate(segments):
        write_records_v23(h, payload, version, si, shapes, coded, split)
    data = _envelope(version, h.getvalue(), payload.getvalue())
    _close_split(split, len(data))
    return data, split


def _close_split(split: SizeSplit, size: int) -> None:
    """Side information is what the header and the coded symbols leave; its parts not named
    so far are records (and, in versions 1-3, the envelope)."""
    split.side_info = size - split.header - split.masks - split.payload - split.latents
    named = sum(split.side_parts.values())
    split.side_parts["records"] = split.side_parts.get("records", 0) + split.side_info - named - _ENVELOPE
    split.side_parts["framing"] = _ENVELOPE


def _write_v4(header: StreamHeader, shapes, kind, segments, spans) -> tuple[bytes, SizeSplit]:
    out = ByteWriter()
    out.raw(MAGIC)
    out.pack("H", FORMAT_VERSION)
    binary_header.write_header(out, header, spans)
    split = SizeSplit(header=out.size - 6)
    framing = _FRAMING
    for si, coded in enumerate(segments):
        body, part = encode_segment(shapes, kind.is_latent, coded)
        before = out.size
        out.varint(len(body))
        framing += out.size - before
        out.raw(body)
        _add_segment(split, si, part)
    body = out.getvalue()
    data = body + struct.pack("<I", zlib.crc32(body))
    split.side_parts["framing"] = framing
    split.side_info = sum(split.side_parts.values())
    assert split.total == len(data)
    return data, split


def _add_segment(split: SizeSplit, si: int, part) -> None:
    for name, n in part.side.items():
        split.side_parts[name] = split.side_parts.get(name, 0) + n
    split.masks += part.masks
    split.payload += part.payload
    split.latents += part.latents
    split.per_tensor.extend({"segment": si, **entry} for entry in part.per_tensor)


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
        """The tensors of a one-segment file (every file of version 1, short clips of later ones)."""
        if len(self.segments) != 1:
            raise ValueError("this file has several segments; use .segments")
        return self.segments[0].tensors

    def segment_of(self, frame: int) -> int:
        """Index of the segment that renders ``frame``."""
        return segment_index([s.span for s in self.segments], frame)


def _check_version(data: bytes) -> int:
    """Checks magic, version and CRC; returns the version."""
    if len(data) == 0:
        raise BitstreamError("the file is empty")
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError("not an E-NeRV bitstream (bad magic bytes)")
    if len(data) < 6 + 4:
        raise BitstreamError("truncated file: the header is cut short")
    (version,) = struct.unpack("<H", data[4:6])
    if version not in READABLE_VERSIONS:
        raise BitstreamError(
            f"unsupported bitstream format version {version} (this decoder reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    return version


def _check_envelope(data: bytes) -> tuple[int, bytes, bytes]:
    """Versions 1-3: checks magic, version, lengths and CRC; returns (version, header bytes, payload bytes)."""
    version = _check_version(data)
    r = ByteReader(data, "file")
    r.raw(6)
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
    _check_crc(data)
    return version, header_bytes, payload


def _check_crc(data: bytes) -> None:
    (crc,) = struct.unpack("<I", data[-4:])
    if zlib.crc32(memoryview(data)[:-4]) != crc:
        raise BitstreamError("checksum mismatch: the file is corrupt")


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


def _read_v4_header(data: bytes) -> tuple[ByteReader, StreamHeader, list[SegmentSpan]]:
    _check_crc(data)
    r = ByteReader(memoryview(data)[6:-4], "file")
    header, spans = binary_header.read_header(r)
    return r, header, spans


def read_header(data: bytes) -> StreamHeader:
    """Checks the envelope and returns the header (no weights decoded)."""
    if _check_version(data) == FORMAT_VERSION:
        return _read_v4_header(data)[1]
    version, header_bytes, _ = _check_envelope(data)
    return _parse_header(version, _read_json(ByteReader(header_bytes, "header")))[0]


def read_bitstream(data: bytes, frames: range | None = None) -> ParsedStream:
    """Parses a whole file and entropy-decodes the segments that render ``frames`` (all by default).

    The inverse of :func:`write_bitstream`; reads every version.
    """
    if _check_version(data) == FORMAT_VERSION:
        return _read_v4(data, frames)
    version, header_bytes, payload = _check_envelope(data)
    r = ByteReader(header_bytes, "header")
    header, spans = _parse_header(version, _read_json(r))
    split = SizeSplit(header=len(header_bytes) - r.remaining)
    shapes = transmitted_shapes(header.network)
    _check_size(shapes)
    kind = network_kind(header.network.kind)
    if (version >= LATENT_VERSION) != (kind.latent_prefix is not None):
        raise BitstreamError(f"corrupt header: a {kind.name} network in a file of format version {version}")
    p = ByteReader(payload, "payload")
    segments = []
    for si, span in enumerate(spans):
        models, records = read_records(r, version, shapes, p.remaining, kind.is_latent, split)
        if frames is None or span.overlaps(frames):
            tensors = decode_tensors(p, models, records)
        else:
            p.raw(sum(rec.mask_len + rec.value_len for rec in records))
            tensors = None
        segments.append(ParsedSegment(span, tensors))
        account_records(split, records, version, si)
    if r.remaining or p.remaining:
        raise BitstreamError("corrupt file: unexplained bytes after the last tensor")
    _close_split(split, len(data))
    return ParsedStream(header, segments, shapes, split, version)


def _read_v4(data: bytes, frames: range | None) -> ParsedStream:
    r, header, spans = _read_v4_header(data)
    split = SizeSplit(header=len(data) - _FRAMING - r.remaining)
    shapes = transmitted_shapes(header.network)
    _check_size(shapes)
    kind = network_kind(header.network.kind)
    framing = _FRAMING
    segments = []
    for si, span in enumerate(spans):
        before = r.remaining
        length = r.varint(r.remaining)
        framing += before - r.remaining
        tensors, part = decode_segment(r.raw(length), shapes, kind.is_latent, frames is None or span.overlaps(frames))
        segments.append(ParsedSegment(span, tensors))
        _add_segment(split, si, part)
    if r.remaining:
        raise BitstreamError("corrupt file: unexplained bytes after the last segment")
    split.side_parts["framing"] = framing
    split.side_info = sum(split.side_parts.values())
    return ParsedStream(header, segments, shapes, split, FORMAT_VERSION)
