"""The ``.bin`` container: both halves (write and read) of format version 1.

Layout, little-endian throughout::

    magic "ENRV" | u16 version | u32 header length | header | u32 payload length | payload | u32 CRC-32

The CRC covers every byte before it.  The header holds a zlib-compressed JSON object
(network config, video geometry), the symbol models (integer counts) and one record
per transmitted tensor, in the order the network declares its parameters: flags,
bits, float16 scales, model index, kept count and payload lengths.  The payload holds
each tensor's range-coded pruning mask, then its range-coded values.

Every length and count is checked against the bytes that are really there before
anything is allocated, so a damaged or hostile file is refused with a
:class:`BitstreamError`, never decoded into wrong weights.
"""

from __future__ import annotations

import json
import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
import torch

from pipeline.config import NetworkConfig, section_from_dict, section_to_dict
from pipeline.entropy import MAX_ALPHABET, SymbolModel
from pipeline.errors import BitstreamError, InputError
from pipeline.geometry import MAX_SIDE
from pipeline.networks import build_network
from pipeline.quantization import QuantParams, qmax

MAGIC = b"ENRV"
FORMAT_VERSION = 1
MAX_HEADER_JSON = 1 << 16
MAX_PARAMETERS = 1 << 26  # 67 M weights: five times the paper's largest network
MAX_FRAMES = 1 << 24

_FLAG_PER_CHANNEL = 1
_FLAG_MASKED = 2


# --- byte-level reading and writing -----------------------------------------------


class ByteWriter:
    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self.size = 0

    def raw(self, data: bytes) -> None:
        self._parts.append(data)
        self.size += len(data)

    def pack(self, fmt: str, *values) -> None:
        self.raw(struct.pack("<" + fmt, *values))

    def varint(self, value: int) -> None:
        """Unsigned LEB128."""
        if value < 0:
            raise ValueError("varint of a negative number")
        out = bytearray()
        while True:
            byte = value & 0x7F
            value >>= 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                break
        self.raw(bytes(out))

    def svarint(self, value: int) -> None:
        """Signed varint (zig-zag)."""
        self.varint(value * 2 if value >= 0 else -value * 2 - 1)

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


class ByteReader:
    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    @property
    def remaining(self) -> int:
        return len(self._data) - self._pos

    def raw(self, n: int) -> bytes:
        if n < 0 or n > self.remaining:
            raise BitstreamError(f"truncated or corrupt {self._what}: needs {n} more bytes, has {self.remaining}")
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return out

    def unpack(self, fmt: str):
        fmt = "<" + fmt
        return struct.unpack(fmt, self.raw(struct.calcsize(fmt)))

    def varint(self, limit: int) -> int:
        """Reads an unsigned varint and checks it is at most ``limit``."""
        value, shift = 0, 0
        for _ in range(10):
            (byte,) = self.raw(1)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if value > limit:
                    raise BitstreamError(f"corrupt {self._what}: value {value} exceeds {limit}")
                return value
            shift += 7
        raise BitstreamError(f"corrupt {self._what}: overlong varint")

    def svarint(self, limit: int) -> int:
        z = self.varint(2 * limit + 1)
        return z // 2 if z % 2 == 0 else -(z + 1) // 2


# --- what the file describes ----------------------------------------------------------


@dataclass(frozen=True)
class StreamHeader:
    """Everything the decoder needs besides the weights."""

    network: NetworkConfig  # resolved: grid and strides set
    width: int  # the video's size; the network's output is cropped to it
    height: int
    num_frames: int
    fps: float
    encoder: str = ""

    def to_json(self) -> dict:
        return {
            "network": section_to_dict(self.network),
            "video": {"width": self.width, "height": self.height, "frames": self.num_frames, "fps": self.fps},
            "encoder": self.encoder,
        }

    @classmethod
    def from_json(cls, data: dict) -> StreamHeader:
        try:
            video = data["video"]
            network = section_from_dict(NetworkConfig, data["network"], "bitstream network")
            header = cls(network, int(video["width"]), int(video["height"]), int(video["frames"]),
                         float(video["fps"]), str(data.get("encoder", "")))
        except InputError as exc:
            raise BitstreamError(f"the header describes an invalid network: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError):
            raise BitstreamError("the header is missing fields or has fields of the wrong type") from None
        header.validate()
        return header

    def validate(self) -> None:
        if not self.network.is_resolved:
            raise BitstreamError("the header's network has no grid or strides")
        if max(self.network.out_width, self.network.out_height) > 2 * MAX_SIDE:
            raise BitstreamError("the header's network renders frames larger than any video this format serves")
        if not (1 <= self.width <= self.network.out_width and 1 <= self.height <= self.network.out_height):
            raise BitstreamError(
                f"the header's video size {self.width}x{self.height} does not fit the network's "
                f"{self.network.out_width}x{self.network.out_height} output"
            )
        if not 1 <= self.num_frames <= MAX_FRAMES:
            raise BitstreamError(f"the header's frame count {self.num_frames} is out of range")
        if not (math.isfinite(self.fps) and 0 < self.fps <= 1000):
            raise BitstreamError(f"the header's frame rate {self.fps} is out of range")


@dataclass(frozen=True)
class CodedTensor:
    """One transmitted tensor as symbols: what quantization produced."""

    params: QuantParams
    symbols: np.ndarray  # int32, shape of the tensor; zero where pruned
    mask: np.ndarray | None = None  # bool, True = kept; None = not pruned


@dataclass
class SizeSplit:
    """Where the bytes of a file go."""

    header: int = 0  # magic, version, lengths, JSON, per-tensor records, CRC
    side_info: int = 0  # symbol models (counts) and quantization scales
    masks: int = 0  # coded pruning masks
    payload: int = 0  # coded weight values
    per_tensor: list[dict] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.header + self.side_info + self.masks + self.payload


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


# --- symbol models ------------------------------------------------------------------


def _write_model(w: ByteWriter, model: SymbolModel) -> None:
    w.svarint(model.offset)
    w.varint(model.alphabet)
    for count in model.counts.tolist():
        w.varint(count)


def _read_model(r: ByteReader) -> SymbolModel:
    offset = r.svarint(MAX_ALPHABET)
    alphabet = r.varint(MAX_ALPHABET)
    if alphabet < 1 or alphabet > r.remaining:  # each count takes at least a byte
        raise BitstreamError("corrupt symbol model: bad alphabet size")
    counts = np.array([r.varint(MAX_PARAMETERS) for _ in range(alphabet)], dtype=np.int64)
    if counts.sum() == 0:
        raise BitstreamError("corrupt symbol model: all counts are zero")
    return SymbolModel(offset, counts)


def _model_bytes(model: SymbolModel) -> int:
    w = ByteWriter()
    _write_model(w, model)
    return w.size


def choose_models(values: list[np.ndarray]) -> tuple[list[SymbolModel], list[int]]:
    """Gives each tensor its own symbol model or a shared one, whichever codes smaller.

    Returns the models to store and, per tensor, the index of the one it uses.
    """
    own = [SymbolModel.from_symbols(v) for v in values]
    own_cost = [m.ideal_bits(v) + 8 * _model_bytes(m) for m, v in zip(own, values)]
    use_shared = [True] * len(values)
    shared = None
    for _ in range(3):  # the shared model depends on who uses it: iterate to a fixed point
        members = [v for v, s in zip(values, use_shared) if s]
        if not members:
            break
        shared = SymbolModel.from_symbols(np.concatenate([m.ravel() for m in members]))
        shared_cost = 8 * _model_bytes(shared) / len(members)
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


def _mask_model(numel: int, kept: int) -> SymbolModel:
    return SymbolModel(0, np.array([numel - kept, kept], dtype=np.int64))


# --- the file ---------------------------------------------------------------------------


def write_bitstream(header: StreamHeader, tensors: list[CodedTensor]) -> tuple[bytes, SizeSplit]:
    """Serializes a header and the coded tensors (in network order) into file bytes."""
    header.validate()
    shapes = transmitted_shapes(header.network)
    if [s for _, s in shapes] != [t.symbols.shape for t in tensors]:
        raise ValueError("the tensors do not match the network's transmitted parameters")
    split = SizeSplit()
    values = [t.symbols[t.mask] if t.mask is not None else t.symbols.ravel() for t in tensors]
    models, model_index = choose_models(values)

    h = ByteWriter()
    meta = zlib.compress(json.dumps(header.to_json(), separators=(",", ":"), sort_keys=True).encode(), 9)
    h.varint(len(meta))
    h.raw(meta)
    before = h.size
    h.varint(len(models))
    for m in models:
        _write_model(h, m)
    split.side_info += h.size - before
    h.varint(len(tensors))
    payload = ByteWriter()
    for (name, shape), t, v, mi in zip(shapes, tensors, values, model_index):
        flags = (_FLAG_PER_CHANNEL if t.params.per_channel else 0) | (_FLAG_MASKED if t.mask is not None else 0)
        h.pack("BB", flags, t.params.bits)
        h.raw(t.params.scales.astype("<f2").tobytes())
        split.side_info += 2 * t.params.scales.size
        h.varint(mi)
        mask_bytes = b""
        if t.mask is not None:
            kept = int(t.mask.sum())
            mask_bytes = _mask_model(t.mask.size, kept).encode(t.mask.ravel().astype(np.int32))
            h.varint(kept)
            h.varint(len(mask_bytes))
        value_bytes = models[mi].encode(v)
        h.varint(len(value_bytes))
        payload.raw(mask_bytes)
        payload.raw(value_bytes)
        split.masks += len(mask_bytes)
        split.payload += len(value_bytes)
        split.per_tensor.append({
            "name": name, "shape": list(shape), "bits": t.params.bits, "per_channel": t.params.per_channel,
            "kept": int(v.size), "model": mi, "value_bytes": len(value_bytes), "mask_bytes": len(mask_bytes),
        })
    header_bytes = h.getvalue()
    payload_bytes = payload.getvalue()
    out = ByteWriter()
    out.raw(MAGIC)
    out.pack("HI", FORMAT_VERSION, len(header_bytes))
    out.raw(header_bytes)
    out.pack("I", len(payload_bytes))
    out.raw(payload_bytes)
    body = out.getvalue()
    data = body + struct.pack("<I", zlib.crc32(body))
    split.header = len(data) - split.side_info - split.masks - split.payload
    return data, split


@dataclass
class ParsedStream:
    header: StreamHeader
    tensors: list[CodedTensor]
    shapes: list[tuple[str, tuple[int, ...]]]
    split: SizeSplit


def _check_envelope(data: bytes) -> tuple[bytes, bytes]:
    """Checks magic, version, lengths and CRC; returns (header bytes, payload bytes)."""
    if len(data) == 0:
        raise BitstreamError("the file is empty")
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError("not an E-NeRV bitstream (bad magic bytes)")
    r = ByteReader(data, "file")
    r.raw(4)
    (version,) = r.unpack("H")
    if version != FORMAT_VERSION:
        raise BitstreamError(f"unsupported bitstream format version {version} (this decoder reads {FORMAT_VERSION})")
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
    return header_bytes, payload


def _read_json(r: ByteReader) -> dict:
    meta_len = r.varint(MAX_HEADER_JSON)
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(r.raw(meta_len), MAX_HEADER_JSON)
        if inflater.unconsumed_tail:
            raise BitstreamError("corrupt header: metadata too large")
        meta = json.loads(text)
    except (zlib.error, UnicodeDecodeError, json.JSONDecodeError):
        raise BitstreamError("corrupt header: unreadable metadata") from None
    if not isinstance(meta, dict):
        raise BitstreamError("corrupt header: metadata is not an object")
    return meta


def read_header(data: bytes) -> StreamHeader:
    """Checks the envelope and returns the header (no weights decoded)."""
    header_bytes, _ = _check_envelope(data)
    return StreamHeader.from_json(_read_json(ByteReader(header_bytes, "header")))


def read_bitstream(data: bytes) -> ParsedStream:
    """Parses and entropy-decodes a whole file; the inverse of :func:`write_bitstream`."""
    header_bytes, payload = _check_envelope(data)
    r = ByteReader(header_bytes, "header")
    header = StreamHeader.from_json(_read_json(r))
    shapes = transmitted_shapes(header.network)
    _check_size(shapes)
    split = SizeSplit()
    models_start = r.remaining
    n_models = r.varint(r.remaining)
    models = [_read_model(r) for _ in range(n_models)]
    split.side_info += models_start - r.remaining
    n_tensors = r.varint(len(shapes) + 1)
    if n_tensors != len(shapes):
        raise BitstreamError(f"the file has {n_tensors} tensors, the network declares {len(shapes)}")
    p = ByteReader(payload, "payload")
    tensors = []
    for name, shape in shapes:
        numel = math.prod(shape)
        flags, bits = r.unpack("BB")
        if flags & ~(_FLAG_PER_CHANNEL | _FLAG_MASKED) or not 2 <= bits <= 16:
            raise BitstreamError(f"corrupt record for {name}: flags {flags}, bits {bits}")
        n_scales = shape[0] if flags & _FLAG_PER_CHANNEL else 1
        scales = np.frombuffer(r.raw(2 * n_scales), dtype="<f2").astype(np.float16)
        if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
            raise BitstreamError(f"corrupt record for {name}: invalid scales")
        split.side_info += 2 * n_scales
        if n_models == 0:
            raise BitstreamError("corrupt header: no symbol models")
        mi = r.varint(n_models - 1)
        model = models[mi]
        q = qmax(bits)
        if model.offset < -q or model.offset + model.alphabet - 1 > q:
            raise BitstreamError(f"corrupt record for {name}: symbol model outside the {bits}-bit range")
        mask, kept, mask_len = None, numel, 0
        if flags & _FLAG_MASKED:
            kept = r.varint(numel)
            mask_len = r.varint(p.remaining)
            mask_symbols = _mask_model(numel, kept).decode(p.raw(mask_len), numel) if numel else np.zeros(0)
            mask = mask_symbols.astype(bool)
            if int(mask.sum()) != kept:
                raise BitstreamError(f"corrupt payload for {name}: the mask does not match its count")
            split.masks += mask_len
        value_len = r.varint(p.remaining)
        if model.is_constant and value_len:
            raise BitstreamError(f"corrupt record for {name}: payload for a constant tensor")
        values = model.decode(p.raw(value_len), kept)
        split.payload += value_len
        if mask is None:
            symbols = values.reshape(shape)
        else:
            symbols = np.zeros(numel, np.int32)
            symbols[mask] = values
            symbols = symbols.reshape(shape)
            mask = mask.reshape(shape)
        tensors.append(CodedTensor(QuantParams(bits, scales), symbols, mask))
        split.per_tensor.append({
            "name": name, "shape": list(shape), "bits": bits, "per_channel": n_scales > 1, "kept": int(kept),
            "model": mi, "value_bytes": value_len, "mask_bytes": mask_len,
        })
    if r.remaining or p.remaining:
        raise BitstreamError("corrupt file: unexplained bytes after the last tensor")
    split.header = len(data) - split.side_info - split.masks - split.payload
    return ParsedStream(header, tensors, shapes, split)
