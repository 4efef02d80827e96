"""The header of format version 4: the network, the video and the segment table in a few dozen bytes.

Layout (varints are unsigned LEB128, as everywhere in the file)::

    varint kind code              index in KIND_CODES
    varint field mask             bit i: field i of NETWORK_FIELDS differs from its REFERENCE value
    the values of those fields    in NETWORK_FIELDS order, each in its field's form (below)
    varint width | varint height | varint frames | number fps
    varint length | encoder name (UTF-8)
    varint estimate               0: none; otherwise 1 + the rate model's estimate in tenths of a byte
    varint segments               then, with more than one, the frame count of each but the last

Forms: an integer is a varint; a flag a varint 0 or 1; a list of integers a varint length and
then varints; a real number a *number*: ``varint 2n`` for a whole ``n``, else ``varint 1`` and a
little-endian float64.

``KIND_CODES``, ``NETWORK_FIELDS`` and ``REFERENCE`` are part of the format: they are written out
here rather than taken from the registry or the config's defaults, so that neither can change
what an existing file means. A new kind or field is appended (a new field's reference value must
be the one that older files imply).
"""

from __future__ import annotations

import math
from dataclasses import fields

from pipeline.byteio import ByteReader, ByteWriter
from pipeline.config import NetworkConfig
from pipeline.errors import BitstreamError, InputError
from pipeline.segments import SegmentSpan, check_tiling
from pipeline.stream_header import MAX_FRAMES, StreamHeader

KIND_CODES = ("enerv", "nerv", "enerv-grid", "enerv-latent", "enerv-ctx")

_INT, _REAL, _FLAG, _INTS = "int", "real", "flag", "ints"
NETWORK_FIELDS = (
    ("fc_dim", _INT), ("expansion", _REAL), ("reduction", _INT), ("lower_width", _INT), ("pe_base", _REAL),
    ("pe_levels", _INT), ("stem_dims", _INTS), ("block_dim", _INT), ("mlp_dim", _INT), ("heads", _INT),
    ("head_dim", _INT), ("mod_dim", _INT), ("single_head_projection", _FLAG), ("time_grid_spacing", _INTS),
    ("time_grid_channels", _INTS), ("time_grid_knots", _INTS), ("space_grid_scales", _INTS),
    ("space_grid_channels", _INTS), ("latent_scales", _INTS), ("latent_channels", _INTS), ("latent_frames", _INT),
    ("fc_h", _INT), ("fc_w", _INT), ("strides", _INTS), ("grid_tokens", _INT), ("max_stages", _INT),
)
REFERENCE = {
    "fc_dim": 196, "expansion": 3.0, "reduction": 2, "lower_width": 96, "pe_base": 1.25, "pe_levels": 80,
    "stem_dims": (512,), "block_dim": 256, "mlp_dim": 128, "heads": 8, "head_dim": 64, "mod_dim": 128,
    "single_head_projection": False, "time_grid_spacing": (4, 1), "time_grid_channels": (4, 2),
    "time_grid_knots": None, "space_grid_scales": (4, 2), "space_grid_channels": (2, 1), "latent_scales": (4, 2),
    "latent_channels": (1, 1), "latent_frames": None, "fc_h": None, "fc_w": None, "strides": None,
    "grid_tokens": 144, "max_stages": 5,
}
MAX_INT = 1 << 24  # any integer field (the config checks each one's own range)
MAX_LIST = 64  # entries of a list field
MAX_ENCODER = 256  # bytes of the encoder's name
MAX_SEGMENTS = 1 << 16
MAX_ESTIMATE = 1 << 44  # tenths of a byte


def _write_number(w: ByteWriter, value: float) -> None:
    if float(value).is_integer() and 0 <= value < 1 << 40:
        w.varint(2 * int(value))
    else:
        w.varint(1)
        w.pack("d", float(value))


def _read_number(r: ByteReader) -> float:
    code = r.varint(1 << 41)
    if code == 1:
        (value,) = r.unpack("d")
        if not math.isfinite(value):
            raise BitstreamError("corrupt header: a number that is not finite")
        return value
    if code % 2:
        raise BitstreamError("corrupt header: a badly formed number")
    return float(code // 2)


def _write_value(w: ByteWriter, form: str, value) -> None:
    if form == _REAL:
        _write_number(w, value)
    elif form == _INTS:
        w.varint(len(value))
        for v in value:
            w.varint(v)
    else:
        w.varint(int(value))


def _read_value(r: ByteReader, form: str):
    if form == _REAL:
        return _read_number(r)
    if form == _INTS:
        return tuple(r.varint(MAX_INT) for _ in range(r.varint(MAX_LIST)))
    if form == _FLAG:
        return bool(r.varint(1))
    return r.varint(MAX_INT)


def write_header(w: ByteWriter, header: StreamHeader, spans: list[SegmentSpan]) -> None:
    """Appends the version-4 header of ``header`` and the segment table ``spans``."""
    network = header.network
    if network.kind not in KIND_CODES:
        raise ValueError(f"network kind {network.kind!r} has no code in format version 4")
    w.varint(KIND_CODES.index(network.kind))
    differ = [(i, form, getattr(network, name)) for i, (name, form) in enumerate(NETWORK_FIELDS)
              if getattr(network, name) != REFERENCE[name]]
    if any(value is None for _, _, value in differ):
        raise ValueError("format version 4 writes resolved networks only")
    w.varint(sum(1 << i for i, _, _ in differ))
    for _, form, value in differ:
        _write_value(w, form, value)
    w.varint(header.width)
    w.varint(header.height)
    w.varint(header.num_frames)
    _write_number(w, header.fps)
    encoder = header.encoder.encode()
    if len(encoder) > MAX_ENCODER:
        raise ValueError(f"an encoder name of at most {MAX_ENCODER} bytes")
    w.varint(len(encoder))
    w.raw(encoder)
    estimate = header.estimated_weight_bytes
    w.varint(0 if estimate is None else 1 + round(estimate * 10))
    w.varint(len(spans))
    if len(spans) > 1:
        for span in spans[:-1]:
            w.varint(span.count)


def read_header(r: ByteReader) -> tuple[StreamHeader, list[SegmentSpan]]:
    """The inverse of :func:`write_header`; every value checked (BitstreamError otherwise)."""
    kind = KIND_CODES[r.varint(len(KIND_CODES) - 1)]
    present = r.varint((1 << len(NETWORK_FIELDS)) - 1)
    values = dict(REFERENCE)
    for i, (name, form) in enumerate(NETWORK_FIELDS):
        if present >> i & 1:
            values[name] = _read_value(r, form)
    known = {f.name for f in fields(NetworkConfig)}
    try:
        network = NetworkConfig(kind=kind, **{k: v for k, v in values.items() if k in known})
    except InputError as exc:
        raise BitstreamError(f"the header describes an invalid network: {exc}") from None
    width, height, frames = r.varint(MAX_INT), r.varint(MAX_INT), r.varint(MAX_FRAMES)
    fps = _read_number(r)
    try:
        encoder = r.raw(r.varint(MAX_ENCODER)).decode()
    except UnicodeDecodeError:
        raise BitstreamError("corrupt header: the encoder's name is not text") from None
    estimate = r.varint(MAX_ESTIMATE)
    header = StreamHeader(network, width, height, frames, fps, encoder,
                          None if estimate == 0 else (estimate - 1) / 10)
    header.validate()
    count = r.varint(min(MAX_SEGMENTS, frames))
    if count == 0:
        raise BitstreamError("corrupt header: no segments")
    counts = [r.varint(frames) for _ in range(count - 1)]
    counts.append(frames - sum(counts))
    spans, first = [], 0
    for c in counts:
        spans.append(SegmentSpan(first, c))
        first += c
    try:
        check_tiling(spans, frames)
    except ValueError as exc:
        raise BitstreamError(f"corrupt header: {exc}") from None
    return header, spans
