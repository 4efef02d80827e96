"""Typed, frozen configuration loaded from the YAML presets in ``cfgs/``.

A preset has three sections: ``network`` (what is transmitted), ``fit`` (how it is
trained) and ``codec`` (pruning, quantization).  Only ``network`` travels in the
bitstream; the other two are the encoder's business.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from pipeline.errors import InputError

PRECISIONS = ("auto", "float32", "bf16")
RATE_FROM_START = ("none", "latents", "all")
OPTIMIZERS = ("adam", "soap")  # compress.optimizers.OPTIMIZERS builds them
MAX_STAGES = 8


@dataclass(frozen=True)
class NetworkConfig:
    """Architecture of a network of one of the kinds of :mod:`pipeline.kinds` (E-NeRV, NeRV, enerv-grid).

    One flat set of fields for every kind, all written into a file's header (so that old files
    keep their bytes); each kind names the fields it reads (``network_kind(kind).fields``). Every
    field's range is checked here, whatever the kind; the kind itself is checked wherever it is
    used (:func:`pipeline.kinds.network_kind`: resolving, building, reading a header).

    ``fc_h``, ``fc_w`` and ``strides`` may be left out (None): they are then derived
    from the video size by :func:`pipeline.geometry.resolve_network`, aiming at
    ``grid_tokens`` tokens in at most ``max_stages`` up-sampling stages.
    """

    kind: str = "enerv"
    fc_dim: int = 196
    expansion: float = 3.0
    reduction: int = 2
    lower_width: int = 96
    pe_base: float = 1.25
    pe_levels: int = 80
    stem_dims: tuple[int, ...] = (512,)
    # E-NeRV only: width of the token MLPs / transformer, its feed-forward width,
    # attention heads (second block; the first has one) and the width of the
    # temporal branch that modulates every up-sampling stage.
    block_dim: int = 256
    mlp_dim: int = 128
    heads: int = 8
    head_dim: int = 64
    mod_dim: int = 128
    # A one-head attention block whose head is as wide as the block has no output projection
    # (the reference structure); True keeps one there too (files of format version 1).
    single_head_projection: bool = False
    # enerv-grid only: learned feature grids instead of E-NeRV's token transformer. Temporal
    # grids on the token grid (level i: one knot every time_grid_spacing[i] frames, with
    # time_grid_channels[i] channels) give the base feature map of a frame; static spatial grids
    # of space_grid_channels channels are added at the stage inputs that are space_grid_scales
    # times smaller than the output. time_grid_knots is derived from the clip's length.
    time_grid_spacing: tuple[int, ...] = (4, 1)
    time_grid_channels: tuple[int, ...] = (4, 2)
    time_grid_knots: tuple[int, ...] | None = None
    space_grid_scales: tuple[int, ...] = (4, 2)
    space_grid_channels: tuple[int, ...] = (2, 1)
    # enerv-latent only (besides the enerv-grid fields): latent grids of one latent frame per video
    # frame, quantized and context-coded (pipeline.latent_coding), of latent_channels channels at
    # the stage inputs latent_scales times smaller than the output. latent_frames is derived from
    # the clip's length. Files of format version 2 know nothing of these fields.
    latent_scales: tuple[int, ...] = (4, 2)
    latent_channels: tuple[int, ...] = (1, 1)
    latent_frames: int | None = None
    # Geometry; None = derive from the video size.
    fc_h: int | None = None
    fc_w: int | None = None
    strides: tuple[int, ...] | None = None
    grid_tokens: int = 144
    max_stages: int = 5

    def __post_init__(self) -> None:
        if not isinstance(self.kind, str) or not self.kind:
            raise InputError(f"network.kind must be the name of a network kind, not {self.kind!r}")
        positive = {
            "fc_dim": self.fc_dim,
            "reduction": self.reduction,
            "lower_width": self.lower_width,
            "pe_levels": self.pe_levels,
            "block_dim": self.block_dim,
            "mlp_dim": self.mlp_dim,
            "heads": self.heads,
            "head_dim": self.head_dim,
            "mod_dim": self.mod_dim,
            "grid_tokens": self.grid_tokens,
            "max_stages": self.max_stages,
        }
        for name, value in positive.items():
            if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= 1 << 16:
                raise InputError(f"network.{name} must be an integer in 1..65536, got {value!r}")
        if not isinstance(self.single_head_projection, bool):
            raise InputError("network.single_head_projection must be true or false, "
                             f"got {self.single_head_projection!r}")
        if not 0 < self.expansion <= 64:
            raise InputError(f"network.expansion must be in (0, 64], got {self.expansion!r}")
        if not 1.0 < self.pe_base <= 16.0:
            raise InputError(f"network.pe_base must be in (1, 16], got {self.pe_base!r}")
        if any(not isinstance(d, int) or not 0 < d <= 1 << 16 for d in self.stem_dims):
            raise InputError(f"network.stem_dims must be positive integers, got {self.stem_dims!r}")
        if self.strides is not None and (
            not 1 <= len(self.strides) <= MAX_STAGES
            or any(not isinstance(s, int) or not 1 <= s <= 16 for s in self.strides)
        ):
            raise InputError(f"network.strides must be 1..{MAX_STAGES} integers in 1..16, got {self.strides!r}")
        if self.max_stages > MAX_STAGES:
            raise InputError(f"network.max_stages must be at most {MAX_STAGES}, got {self.max_stages}")
        if not 1 <= len(self.stem_dims) <= MAX_STAGES:
            raise InputError(f"network.stem_dims must have 1..{MAX_STAGES} widths, got {self.stem_dims!r}")
        for name in ("fc_h", "fc_w"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or not 0 < value <= 4096):
                raise InputError(f"network.{name} must be an integer in 1..4096, got {value!r}")
        def integers(values, high) -> bool:
            return all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= high for v in values)

        spacing, channels, knots = self.time_grid_spacing, self.time_grid_channels, self.time_grid_knots
        if not (1 <= len(spacing) == len(channels) <= MAX_STAGES and integers(spacing + channels, 4096)):
            raise InputError("network.time_grid_spacing and time_grid_channels must be lists of the same length "
                             f"(1..{MAX_STAGES}) of integers in 1..4096")
        if knots is not None and (len(knots) != len(spacing) or not integers(knots, 1 << 16) or min(knots) < 2):
            raise InputError("network.time_grid_knots must hold one integer in 2..65536 per temporal level")
        scales, channels = self.space_grid_scales, self.space_grid_channels
        if (len(scales) != len(channels) or len(scales) > MAX_STAGES
                or not integers(scales + channels, 4096)):
            raise InputError("network.space_grid_scales and space_grid_channels must be lists of the same length "
                             f"(at most {MAX_STAGES}) of integers in 1..4096")

        scales, channels = self.latent_scales, self.latent_channels
        if len(scales) != len(channels) or len(scales) > MAX_STAGES or not integers(scales + channels, 4096):
            raise InputError("network.latent_scales and latent_channels must be lists of the same length "
                             f"(at most {MAX_STAGES}) of integers in 1..4096")
        if self.latent_frames is not None and not integers((self.latent_frames,), 1 << 24):
            raise InputError("network.latent_frames must be an integer in 1..16777216")

    @property
    def has_geometry(self) -> bool:
        """Whether the grid and the strides are set (a kind may need more: ``network_kind(kind).is_resolved``)."""
        return self.fc_h is not None and self.fc_w is not None and self.strides is not None

    @property
    def out_height(self) -> int:
        return self.fc_h * _product(self.strides)

    @property
    def out_width(self) -> int:
        return self.fc_w * _product(self.strides)


@dataclass(frozen=True)
class FitConfig:
    """Training of the representation (the paper's recipe by default)."""

    epochs: int = 300
    batch_size: int = 1
    lr: float = 5e-4
    betas: tuple[float, float] = (0.5, 0.999)
    warmup: float = 0.2  # fraction of the iterations with a linear warm-up, then cosine decay
    l1_weight: float = 0.7
    ssim_weight: float = 0.3
    mse_weight: float = 0.0
    seed: int = 1
    # "auto": bf16 autocast where the device computes it natively (CUDA; CPUs with AVX-512 BF16
    # or AMX), float32 elsewhere; "float32" always; "bf16" wherever autocast supports it.
    precision: str = "auto"
    # The optimizer (compress.optimizers): "adam" for everything, or "soap" for the network's
    # matrices and kernels with Adam for the rest.
    optimizer: str = "adam"
    # The per-frame latents' learning rate as a multiple of ``lr`` (each latent frame is updated
    # once an epoch, the shared weights every step).
    latent_lr: float = 1.0
    # Train with the 4-d parameters (kernels, grids, latents) in channels-last layout: the same
    # arithmetic, about 1.6x faster convolutions on a CPU (benchmarks/speed.py).
    channels_last: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.epochs, int) or self.epochs < 0:
            raise InputError(f"fit.epochs must be a non-negative integer, got {self.epochs!r}")
        if not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise InputError(f"fit.batch_size must be a positive integer, got {self.batch_size!r}")
        if not self.lr > 0:
            raise InputError(f"fit.lr must be positive, got {self.lr!r}")
        if not 0 <= self.warmup < 1:
            raise InputError(f"fit.warmup must be in [0, 1), got {self.warmup!r}")
        weights = (self.l1_weight, self.ssim_weight, self.mse_weight)
        if any(not (isinstance(w, (int, float)) and w >= 0) for w in weights) or sum(weights) <= 0:
            raise InputError("fit.l1_weight, fit.ssim_weight and fit.mse_weight must be >= 0 and not all 0")
        if self.precision not in PRECISIONS:
            raise InputError(f"fit.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not isinstance(self.channels_last, bool):
            raise InputError(f"fit.channels_last must be true or false, got {self.channels_last!r}")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"fit.optimizer must be one of {', '.join(OPTIMIZERS)}, got {self.optimizer!r}")
        if not (isinstance(self.latent_lr, (int, float)) and 0 < self.latent_lr <= 1000):
            raise InputError(f"fit.latent_lr must be in (0, 1000], got {self.latent_lr!r}")


@dataclass(frozen=True)
class CodecConfig:
    """Pruning and quantization applied to the fitted network.

    ``quality`` is the rate knob: it sets lambda, the weight of the estimated rate (bits per
    pixel) in the loss of the fine-tunes, on a log scale (:func:`lambda_for_quality`); higher
    quality, larger file. ``None`` fine-tunes for distortion alone. ``bits`` bounds the symbols
    to a ``bits``-bit alphabet (the steps then start from each tensor's peak); ``None`` leaves
    the alphabet as wide as the steps need. ``learn_steps`` trains the steps with the weights.
    """

    prune_ratio: float = 0.0
    prune_epochs: int = 0  # fine-tuning epochs with the pruning mask held fixed
    bits: int | None = None
    quality: float | None = 50.0
    learn_steps: bool = True
    rd_epochs: int = 0  # fine-tuning with quantization noise and the rate term
    qat_epochs: int = 0  # fine-tuning on the rounded grid (straight-through), the rate term kept
    finetune_lr: float = 1e-4
    # What the fit itself trains with quantization noise and the rate term (steps and context
    # models learned from the first step): "none" (the fit is for distortion alone), "latents"
    # (the latent grids; the weights join in the rate-distortion fine-tune) or "all".
    rate_from_start: str = "none"
    # With the rate term from the start: the fraction of the fit over which its weight grows
    # linearly from 0 to lambda (0: lambda from the first step).
    rate_warmup: float = 0.0
    # Bound every weight's symbols to the alphabet of the Laplace bank's tables (+-126), so that
    # each tensor can be coded with a bank table (2 bytes) instead of stored counts (format
    # version 3 kinds); a wider symbol is clipped, and training learns steps that avoid it.
    table_symbols: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.prune_ratio < 1:
            raise InputError(f"prune ratio must be in [0, 1), got {self.prune_ratio!r}")
        if self.bits is not None and (not isinstance(self.bits, int) or not 2 <= self.bits <= 16):
            raise InputError(f"bits must be an integer in 2..16, got {self.bits!r}")
        if self.quality is not None and not (isinstance(self.quality, (int, float)) and 0 <= self.quality <= 100):
            got = f"{self.quality:g}" if isinstance(self.quality, (int, float)) else repr(self.quality)
            raise InputError(f"quality must be a number in 0..100, got {got}")
        if self.bits is None and self.quality is None:
            raise InputError("without a rate term (quality) the quantizer needs a bit depth (bits)")
        if not isinstance(self.learn_steps, bool):
            raise InputError(f"codec.learn_steps must be true or false, got {self.learn_steps!r}")
        if self.rate_from_start not in RATE_FROM_START:
            raise InputError(f"codec.rate_from_start must be one of {', '.join(RATE_FROM_START)}, "
                             f"got {self.rate_from_start!r}")
        if not isinstance(self.table_symbols, bool):
            raise InputError(f"codec.table_symbols must be true or false, got {self.table_symbols!r}")
        if not 0 <= self.rate_warmup < 1:
            raise InputError(f"codec.rate_warmup must be in [0, 1), got {self.rate_warmup!r}")
        if self.rate_from_start != "none" and self.quality is None:
            raise InputError("codec.rate_from_start needs a rate term (quality)")
        for name in ("prune_epochs", "rd_epochs", "qat_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise InputError(f"codec.{name} must be a non-negative integer, got {value!r}")
        if not self.finetune_lr > 0:
            raise InputError(f"codec.finetune_lr must be positive, got {self.finetune_lr!r}")


@dataclass(frozen=True)
class CodecPreset:
    """A whole preset: one YAML file of ``cfgs/``."""

    name: str
    network: NetworkConfig = field(default_factory=NetworkConfig)
    fit: FitConfig = field(default_factory=FitConfig)
    codec: CodecConfig = field(default_factory=CodecConfig)
    description: str = ""


def lambda_for_quality(quality: float) -> float:
    """The rate term's weight for a quality in 0..100: 20 quality points = 10x lambda.

    Quality 50 is lambda 0.01 (bits per pixel weighed against the reconstruction loss).
    """
    return 0.01 * 10.0 ** ((50.0 - float(quality)) / 20.0)


def _product(values: tuple[int, ...]) -> int:
    out = 1
    for v in values:
        out *= v
    return out


def _tuple_fields(cls: type) -> set[str]:
    return {f.name for f in fields(cls) if "tuple" in str(f.type)}


def section_from_dict(cls: type, data: dict[str, Any], where: str):
    """Builds a config dataclass from a mapping, refusing unknown keys."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {', '.join(unknown)}")
    values = dict(data)
    for name in _tuple_fields(cls) & set(values):
        if values[name] is not None:
            if not isinstance(values[name], (list, tuple)):
                raise InputError(f"{where}.{name}: expected a list, got {values[name]!r}")
            values[name] = tuple(values[name])
    try:
        return cls(**values)
    except TypeError as exc:
        raise InputError(f"{where}: {exc}") from None


def section_to_dict(config) -> dict[str, Any]:
    """The inverse of :func:`section_from_dict` (tuples become lists)."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def preset_from_dict(data: dict[str, Any], name: str) -> CodecPreset:
    if not isinstance(data, dict):
        raise InputError(f"config {name}: expected a mapping at the top level")
    unknown = sorted(set(data) - {"network", "fit", "codec", "description"})
    if unknown:
        raise InputError(f"config {name}: unknown section(s) {', '.join(unknown)}")
    return CodecPreset(
        name=name,
        network=section_from_dict(NetworkConfig, data.get("network", {}), f"{name}: network"),
        fit=section_from_dict(FitConfig, data.get("fit", {}), f"{name}: fit"),
        codec=section_from_dict(CodecConfig, data.get("codec", {}), f"{name}: codec"),
        description=str(data.get("description", "")),
    )


def load_config(path: str | Path) -> CodecPreset:
    """Loads a preset from a YAML file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise InputError(f"cannot read config {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise InputError(f"config {path} is not valid YAML: {exc}") from None
    return preset_from_dict(data or {}, path.stem)


def preset_names() -> list[str]:
    """Names of the presets shipped in ``cfgs/``."""
    root = importlib.resources.files("cfgs")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_preset(name: str) -> CodecPreset:
    """Loads a preset shipped in ``cfgs/`` by name (with or without ``.yaml``)."""
    stem = name[:-5] if name.endswith(".yaml") else name
    if stem not in preset_names():
        shown = [n for n in preset_names() if not n.startswith("test-")]  # the test suite's are not offered
        raise InputError(f"unknown preset {name!r}; available: {', '.join(shown)}")
    resource = importlib.resources.files("cfgs") / f"{stem}.yaml"
    return preset_from_dict(yaml.safe_load(resource.read_text()) or {}, stem)


def override(config, **changes):
    """``dataclasses.replace`` that ignores None values (unset CLI options)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    return replace(config, **changes) if changes else config


__all__ = [
    "CodecConfig",
    "CodecPreset",
    "FitConfig",
    "NetworkConfig",
    "load_config",
    "lambda_for_quality",
    "load_preset",
    "override",
    "preset_names",
    "section_from_dict",
    "section_to_dict",
]
