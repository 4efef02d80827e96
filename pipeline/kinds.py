"""The network kinds, each registered once: its class, the config fields it reads, its rule for a
clip's length, and whether rate control may scale its width.

Adding a kind is one entry in :data:`KINDS` plus the file of its network (``pipeline/enerv.py``,
``pipeline/nerv.py``, ``pipeline/grid_enerv.py``). The config keeps one flat, serialized field set
(the header JSON of every file holds all of them, so old files keep their bytes); a kind names the
fields it uses, and its ``check`` validates what only that kind constrains.

    network_kind("enerv-grid").scales_width          # True
    network_kind(config.kind).with_width(config, 1.5)  # channels x 1.5 (unchanged for other kinds)
    network_kind(config.kind).build(config)          # the network (config resolved)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields, replace

from torch import nn

from pipeline.config import NetworkConfig
from pipeline.enerv import ENeRV
from pipeline.errors import InputError
from pipeline.grid_enerv import GridENeRV, knots_for_clip
from pipeline.latent_enerv import LATENT_PREFIX, LatentENeRV, latents_for_clip
from pipeline.nerv import NeRV

# What every kind reads: the grid of the first feature map and the up-sampling stages.
GEOMETRY_FIELDS = ("fc_h", "fc_w", "strides", "grid_tokens", "max_stages")
_STAGES = ("fc_dim", "expansion", "reduction", "lower_width")
_TIME_ENCODING = ("pe_base", "pe_levels")


@dataclass(frozen=True)
class NetworkKind:
    """One kind of network and everything the rest of the codec needs to know about it."""

    name: str
    network: type[nn.Module]  # built from a resolved NetworkConfig
    fields: tuple[str, ...]  # the NetworkConfig fields it reads, besides GEOMETRY_FIELDS
    # Fields derived from the clip's (or segment's) frame count by ``for_clip``; a config is
    # resolved once the geometry and these are set.
    clip_fields: tuple[str, ...] = ()
    for_clip: Callable[[NetworkConfig, int], NetworkConfig] | None = None
    # Channel counts (ints or tuples of ints) that ``with_width`` scales; empty: the width is fixed.
    width_fields: tuple[str, ...] = ()
    check: Callable[[NetworkConfig], None] | None = None  # what only this kind constrains
    # Parameters whose name starts with this are per-frame latents, context-coded (format version 3).
    latent_prefix: str | None = None
    # Other grids context-coded like the latents (their first dimension taken as time), not by histograms.
    context_prefixes: tuple[str, ...] = ()

    def is_latent(self, name: str) -> bool:
        """Whether the parameter ``name`` is context-coded (a latent grid, or a grid coded as one), not a weight."""
        return name.startswith(tuple(p for p in (self.latent_prefix,) if p) + self.context_prefixes)

    @property
    def scales_width(self) -> bool:
        """Whether rate control may scale this kind's channels (the others keep the papers' structure)."""
        return bool(self.width_fields)

    def validate(self, config: NetworkConfig) -> None:
        """Raises InputError unless ``config`` is of this kind and acceptable to it."""
        if config.kind != self.name:
            raise InputError(f"a {config.kind!r} network config given to the {self.name!r} kind")
        if self.check is not None:
            self.check(config)

    def resolve_clip(self, config: NetworkConfig, num_frames: int) -> NetworkConfig:
        """``config`` with the fields that depend on the clip's length set for ``num_frames`` frames."""
        return config if self.for_clip is None else self.for_clip(config, num_frames)

    def is_resolved(self, config: NetworkConfig) -> bool:
        """Whether ``config`` says everything the network needs: geometry and clip-derived fields."""
        return config.has_geometry and all(getattr(config, name) is not None for name in self.clip_fields)

    def with_width(self, config: NetworkConfig, factor: float) -> NetworkConfig:
        """``config`` with its channel counts times ``factor`` (rounded, at least 1); the parameter
        count grows about as the square of ``factor``. Unchanged for a kind of fixed width."""
        if factor == 1.0 or not self.scales_width:
            return config

        def scaled(value: int) -> int:
            return max(1, round(value * factor))

        changes = {}
        for name in self.width_fields:
            value = getattr(config, name)
            changes[name] = tuple(scaled(v) for v in value) if isinstance(value, tuple) else scaled(value)
        return replace(config, **changes)

    def build(self, config: NetworkConfig) -> nn.Module:
        """The network ``config`` describes; ValueError when it is not resolved yet."""
        self.validate(config)
        if not self.is_resolved(config):
            needs = ", ".join(("fc_h, fc_w, strides",) + self.clip_fields)
            raise ValueError(f"the {self.name} network config needs {needs} (see pipeline.geometry.resolve_network)")
        return self.network(config)


_LATENT_KIND = dict(  # what enerv-latent and enerv-ctx share
    fields=_STAGES + _TIME_ENCODING + ("mod_dim", "time_grid_spacing", "time_grid_channels", "time_grid_knots",
                                       "space_grid_scales", "space_grid_channels", "latent_scales", "latent_channels",
                                       "latent_frames"),
    clip_fields=("time_grid_knots", "latent_frames"),
    for_clip=latents_for_clip,
    width_fields=("fc_dim", "lower_width", "mod_dim", "time_grid_channels", "space_grid_channels", "latent_channels"),
)

KINDS: dict[str, NetworkKind] = {kind.name: kind for kind in (
    NetworkKind(
        "enerv", ENeRV,
        fields=_STAGES + _TIME_ENCODING + ("stem_dims", "block_dim", "mlp_dim", "heads", "head_dim", "mod_dim",
                                           "single_head_projection"),
    ),
    NetworkKind(
        "nerv", NeRV,
        fields=_STAGES + _TIME_ENCODING + ("stem_dims",),
    ),
    NetworkKind(
        "enerv-grid", GridENeRV,
        fields=_STAGES + _TIME_ENCODING + ("mod_dim", "time_grid_spacing", "time_grid_channels", "time_grid_knots",
                                           "space_grid_scales", "space_grid_channels"),
        clip_fields=("time_grid_knots",),
        for_clip=knots_for_clip,
        width_fields=("fc_dim", "lower_width", "mod_dim", "time_grid_channels", "space_grid_channels"),
    ),
    NetworkKind(
        "enerv-latent", LatentENeRV,
        **_LATENT_KIND,
        latent_prefix=LATENT_PREFIX,
    ),
    # enerv-latent with its temporal and static grids context-coded too: a temporal grid's knots
    # are coded as latent frames (the previous knot is the context), a static grid as one frame.
    NetworkKind(
        "enerv-ctx", LatentENeRV,
        **_LATENT_KIND,
        latent_prefix=LATENT_PREFIX,
        context_prefixes=("time_grids.", "space_grids."),
    ),
)}


def network_kind(name: str) -> NetworkKind:
    """The registered kind called ``name``; InputError (one line) for any other."""
    kind = KINDS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise InputError(f"unknown network kind {name!r}; known: {', '.join(KINDS)}")
    return kind


def kind_names() -> tuple[str, ...]:
    return tuple(KINDS)


def _check_registry() -> None:
    known = {f.name for f in fields(NetworkConfig)}
    for kind in KINDS.values():
        unknown = set(kind.fields + kind.clip_fields + kind.width_fields) - known
        assert not unknown, f"network kind {kind.name} names unknown config fields {sorted(unknown)}"


_check_registry()
