"""What a ``.bin`` file describes: the header (network, video geometry) and each tensor's symbols,
and where a file's bytes go (:class:`SizeSplit`).

:mod:`pipeline.bitstream` puts these into bytes and back; this module holds the values and
their checks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.config import NetworkConfig, section_from_dict, section_to_dict
from pipeline.errors import BitstreamError, InputError
from pipeline.geometry import MAX_SIDE
from pipeline.kinds import GEOMETRY_FIELDS, network_kind
from pipeline.latent_coding import LatentContext
from pipeline.quantization import QuantParams

MAX_FRAMES = 1 << 24

# Version-1 files were written before the network config had these fields; their networks
# had the structure these values describe.
_V1_NETWORK = {"single_head_projection": True}
# Fields that came with format version 3 (enerv-latent); version-2 headers never hold them.
V3_FIELDS = ("latent_scales", "latent_channels", "latent_frames")


@dataclass(frozen=True)
class StreamHeader:
    """Everything the decoder needs besides the weights."""

    network: NetworkConfig  # resolved: grid and strides set
    width: int  # the video's size; the network's output is cropped to it
    height: int
    num_frames: int
    fps: float
    encoder: str = ""
    # The encoder's rate model's estimate of the weights' coded bytes (masks and values), kept
    # so that --info can show how close it was; informative only, the decoder never needs it.
    estimated_weight_bytes: float | None = None

    def to_json(self, version: int = 2) -> dict:
        """The header's JSON object in a file of format ``version``: version 2 has every network
        field but those of version 3; version 3 only the fields the network's kind reads (and so
        does ``--info`` for version 4, whose header is binary: :mod:`pipeline.binary_header`)."""
        network = section_to_dict(self.network)
        if version >= 3:
            kind = network_kind(self.network.kind)
            network = {k: v for k, v in network.items() if k in ("kind",) + kind.fields + GEOMETRY_FIELDS}
        else:
            network = {k: v for k, v in network.items() if k not in V3_FIELDS}
        out = {
            "network": network,
            "video": {"width": self.width, "height": self.height, "frames": self.num_frames, "fps": self.fps},
            "encoder": self.encoder,
        }
        if self.estimated_weight_bytes is not None:
            out["estimated_weight_bytes"] = self.estimated_weight_bytes
        return out

    @classmethod
    def from_json(cls, data: dict, version: int = 2) -> StreamHeader:
        """The inverse of :meth:`to_json`, for a file of format ``version``; checks every field."""
        if version == 1 and isinstance(data.get("network"), dict) and set(_V1_NETWORK) & set(data["network"]):
            raise BitstreamError("corrupt header: a version-1 network with fields of later versions")
        if version <= 2 and isinstance(data.get("network"), dict) and set(V3_FIELDS) & set(data["network"]):
            raise BitstreamError("corrupt header: a network with fields of format version 3 in an older file")
        try:
            video = data["video"]
            network_fields = data["network"]
            if version == 1 and isinstance(network_fields, dict):
                network_fields = {**_V1_NETWORK, **network_fields}
            network = section_from_dict(NetworkConfig, network_fields, "bitstream network")
            header = cls(network, int(video["width"]), int(video["height"]), int(video["frames"]),
                         float(video["fps"]), str(data.get("encoder", "")))
            estimate = data.get("estimated_weight_bytes")
            if estimate is not None:
                if isinstance(estimate, bool) or not isinstance(estimate, (int, float)) or not 0 <= estimate < 2**40:
                    raise ValueError
                header = replace(header, estimated_weight_bytes=float(estimate))
        except InputError as exc:
            raise BitstreamError(f"the header describes an invalid network: {exc}") from None
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError):
            raise BitstreamError("the header is missing fields or has fields of the wrong type") from None
        header.validate()
        return header

    def validate(self) -> None:
        try:
            kind = network_kind(self.network.kind)
            kind.validate(self.network)
        except InputError as exc:
            raise BitstreamError(f"the header describes an invalid network: {exc}") from None
        if not kind.is_resolved(self.network):
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
    context: LatentContext | None = None  # a latent grid's context model (format version 3); None: a weight


@dataclass
class SizeSplit:
    """Where the bytes of a file go (every version): the five counts add up to the file's size."""

    header: int = 0  # the description of the network, the video and the segments
    # Everything else that is not coded symbols: framing (magic, version, lengths, CRC), symbol
    # models (counts, bank table indices), quantization steps, context models, per-tensor records;
    # ``side_parts`` breaks it down by those names.
    side_info: int = 0
    masks: int = 0  # coded pruning masks
    payload: int = 0  # coded weight values
    latents: int = 0  # context-coded latent grids (format versions 3 and 4)
    per_tensor: list[dict] = field(default_factory=list)
    side_parts: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return self.header + self.side_info + self.masks + self.payload + self.latents


# --- the compact header of format version 3 ---------------------------------------------------
#
# Version 3 stores the header's JSON object without its names: the network as a list (the kind,
# then the values of its kind's fields and the geometry fields, in the registry's order, which
# must therefore never change for a kind), the video as [width, height, frames, fps], and short
# keys. It takes about half the bytes of the named form.


def _network_order(kind_name: str) -> tuple[str, ...]:
    kind = network_kind(kind_name)
    return kind.fields + GEOMETRY_FIELDS


def compact_json(meta: dict) -> dict:
    """The version-3 form of a header's JSON object (``StreamHeader.to_json(3)`` plus ``segments``)."""
    network, video = meta["network"], meta["video"]
    out = {"n": [network["kind"]] + [network[f] for f in _network_order(network["kind"])],
           "v": [video["width"], video["height"], video["frames"], video["fps"]],
           "e": meta["encoder"], "s": meta["segments"]}
    if meta.get("estimated_weight_bytes") is not None:
        out["r"] = round(meta["estimated_weight_bytes"])
    return out


def expand_json(meta: dict) -> dict:
    """The inverse of :func:`compact_json`; BitstreamError for anything of the wrong shape."""
    try:
        values, video = meta["n"], meta["v"]
        if set(meta) - {"n", "v", "e", "s", "r"} or not isinstance(values, list) or not values:
            raise ValueError
        order = _network_order(values[0])
        if len(values) != 1 + len(order) or not isinstance(video, list) or len(video) != 4:
            raise ValueError
        out = {"network": {"kind": values[0], **dict(zip(order, values[1:]))},
               "video": dict(zip(("width", "height", "frames", "fps"), video)),
               "encoder": meta.get("e", ""), "segments": meta.get("s")}
    except (KeyError, TypeError, ValueError, InputError):
        raise BitstreamError("corrupt header: not a version-3 header") from None
    if "r" in meta:
        out["estimated_weight_bytes"] = meta["r"]
    return out
