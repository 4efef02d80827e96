from dataclasses import fields, replace

import pytest
import torch

from pipeline.config import NetworkConfig, load_preset, section_from_dict, section_to_dict
from pipeline.errors import InputError
from pipeline.geometry import resolve_network, split_strides
from pipeline.kinds import KINDS, kind_names, network_kind
from pipeline.networks import build_network, count_parameters, frame_times

# The reference implementation stores E-NeRV's 2 x 9 x 16 coordinate grid as a frozen
# nn.Parameter and so counts it; here it is a buffer derived from the config (it is
# never transmitted), so the learnable count is 288 lower.
ENERV_REFERENCE_COUNT = 12_490_602
ENERV_GRID_VALUES = 2 * 9 * 16
NERV_REFERENCE_COUNT = 12_565_523


def _paper_network(name: str) -> torch.nn.Module:
    config = resolve_network(load_preset(name).network, 1280, 720)
    with torch.device("meta"):
        return build_network(config)


def test_enerv_bunny_parameter_count_matches_reference():
    model = _paper_network("E-NeRV-bunny")
    assert count_parameters(model) == ENERV_REFERENCE_COUNT - ENERV_GRID_VALUES
    grid = model.grid_x.numel() + model.grid_y.numel()
    assert count_parameters(model) + grid == ENERV_REFERENCE_COUNT


def test_nerv_bunny_parameter_count_matches_reference():
    assert count_parameters(_paper_network("NeRV-bunny")) == NERV_REFERENCE_COUNT


@pytest.mark.parametrize(
    "width,height,max_stages,grid,strides",
    [
        (320, 180, 3, (9, 16), (5, 2, 2)),
        (1280, 720, 5, (9, 16), (5, 2, 2, 2, 2)),
        (1920, 1080, 4, (9, 16), (5, 4, 3, 2)),
    ],
)
def test_geometry_of_common_sizes(width, height, max_stages, grid, strides):
    config = resolve_network(NetworkConfig(max_stages=max_stages), width, height)
    assert (config.fc_h, config.fc_w) == grid
    assert config.strides == strides
    assert (config.out_width, config.out_height) == (width, height)


@pytest.mark.parametrize("width,height", [(321, 179), (16, 16), (50, 30), (640, 480), (100, 1000)])
def test_geometry_covers_odd_sizes_with_little_padding(width, height):
    config = resolve_network(NetworkConfig(max_stages=4), width, height)
    assert config.out_width >= width and config.out_height >= height
    assert config.out_width * config.out_height <= 1.35 * width * height


@pytest.mark.parametrize("width,height", [(4, 100), (100, 0), (9000, 100)])
def test_unservable_sizes_are_refused(width, height):
    with pytest.raises(InputError):
        resolve_network(NetworkConfig(), width, height)


def test_split_strides():
    assert split_strides(20, 3) == (5, 2, 2)
    assert split_strides(80, 5) == (5, 2, 2, 2, 2)
    assert split_strides(120, 4) == (5, 4, 3, 2)
    assert split_strides(16, 2) == (4, 4)


SMALL = dict(fc_dim=16, block_dim=16, mlp_dim=16, stem_dims=(32,), mod_dim=16, heads=2, head_dim=8,
             expansion=2.0, lower_width=8, pe_levels=16, max_stages=3)


@pytest.mark.parametrize("kind", ["enerv", "nerv", "enerv-grid"])
@pytest.mark.parametrize("width,height", [(48, 32), (21, 17), (64, 36), (16, 16)])
def test_output_shape_and_range(kind, width, height):
    config = resolve_network(NetworkConfig(kind=kind, **SMALL), width, height, num_frames=10)
    model = build_network(config)
    out = model(frame_times(torch.arange(3), 10))
    assert out.shape == (3, 3, config.out_height, config.out_width)
    assert out.min() >= 0 and out.max() <= 1


def test_frame_times_span_zero_to_one():
    t = frame_times(torch.arange(5), 5)
    assert t[0] == 0 and t[-1] == 1
    assert frame_times(torch.arange(1), 1).tolist() == [0.0]


def test_parameter_order_is_deterministic():
    config = resolve_network(NetworkConfig(**SMALL), 48, 32)
    names_a = [n for n, _ in build_network(config).named_parameters()]
    names_b = [n for n, _ in build_network(config).named_parameters()]
    assert names_a == names_b
    assert "grid_x" not in dict(build_network(config).state_dict())


def test_single_head_attention_has_no_output_projection_as_in_the_reference():
    """enerv-cpu-l is the reference's small configuration: its one-head block is 64 wide with a
    64-wide head, so the reference has no output projection there (4,160 parameters)."""
    config = resolve_network(load_preset("enerv-cpu-l").network, 320, 180)
    model = build_network(config)
    assert isinstance(model.spatial_block.attn.out, torch.nn.Identity)
    assert count_parameters(model) == 959_923
    legacy = build_network(replace(config, single_head_projection=True))  # files of format version 1
    assert count_parameters(legacy) == 959_923 + 64 * 64 + 64


def test_grid_network_resolves_its_grids_from_the_clip():
    config = resolve_network(NetworkConfig(kind="enerv-grid", time_grid_spacing=(2, 1), time_grid_channels=(4, 2),
                                           space_grid_scales=(4, 2), space_grid_channels=(2, 1), max_stages=3),
                             320, 180, num_frames=48)
    assert config.strides == (5, 2, 2) and config.time_grid_knots == (25, 48)  # every 2nd frame (and the last)
    model = build_network(config)
    assert [tuple(g.shape) for g in model.time_grids] == [(25, 4, 9, 16), (48, 2, 9, 16)]
    assert [tuple(g.shape) for g in model.space_grids] == [(1, 2, 45, 80), (1, 1, 90, 160)]
    geometry_only = resolve_network(NetworkConfig(kind="enerv-grid"), 320, 180)  # enough to check a size
    assert geometry_only.strides == (5, 2, 2) and geometry_only.time_grid_knots is None
    with pytest.raises(ValueError):  # but the knots need the clip's length
        build_network(geometry_only)


def test_grid_network_parameter_order_is_deterministic_and_frames_depend_on_their_index_only():
    config = resolve_network(NetworkConfig(kind="enerv-grid", **SMALL), 48, 32, num_frames=9)
    torch.manual_seed(0)
    model = build_network(config).eval()
    assert [n for n, _ in model.named_parameters()] == [n for n, _ in build_network(config).named_parameters()]
    with torch.no_grad():
        together = model(frame_times(torch.arange(9), 9))
        alone = torch.cat([model(frame_times(torch.tensor([i]), 9)) for i in range(9)])
    torch.testing.assert_close(together, alone, rtol=0, atol=1e-5)
    first, last = together[0], together[-1]
    assert not torch.allclose(first, last)  # the temporal grid makes frames differ


# --- the registry of network kinds ------------------------------------------------------------------


def test_an_unknown_kind_is_refused_in_one_line():
    for where in (lambda: network_kind("transformer"),
                  lambda: resolve_network(NetworkConfig(kind="transformer"), 48, 32),
                  lambda: build_network(replace(resolve_network(NetworkConfig(), 48, 32), kind="transformer"))):
        with pytest.raises(InputError) as error:
            where()
        message = str(error.value)
        assert "\n" not in message and "transformer" in message and "enerv-grid" in message


@pytest.mark.parametrize("name", kind_names())
def test_each_kind_builds_and_round_trips_its_config(name):
    kind = network_kind(name)
    config = resolve_network(NetworkConfig(kind=name, **SMALL), 48, 32, num_frames=10)
    assert kind.is_resolved(config)
    model = kind.build(config)
    assert isinstance(model, kind.network) and type(build_network(config)) is kind.network
    again = section_from_dict(NetworkConfig, section_to_dict(config), "test")
    assert again == config
    known = {f.name for f in fields(NetworkConfig)}
    assert set(kind.fields) <= known and set(kind.clip_fields) <= known


def test_clip_fields_are_what_a_kind_needs_beyond_the_geometry():
    grid = network_kind("enerv-grid")
    assert grid.clip_fields == ("time_grid_knots",)
    geometry_only = resolve_network(NetworkConfig(kind="enerv-grid", **SMALL), 48, 32)
    assert geometry_only.has_geometry and not grid.is_resolved(geometry_only)
    assert grid.is_resolved(grid.resolve_clip(geometry_only, 9))
    for name in ("enerv", "nerv"):
        config = resolve_network(NetworkConfig(kind=name, **SMALL), 48, 32)
        assert network_kind(name).is_resolved(config) and network_kind(name).resolve_clip(config, 9) == config


def test_only_the_grid_kinds_scale_their_width():
    assert {name for name, kind in KINDS.items() if kind.scales_width} == {"enerv-grid", "enerv-latent", "enerv-ctx"}
    latent = network_kind("enerv-latent").with_width(NetworkConfig(kind="enerv-latent", **SMALL), 2.0)
    assert latent.latent_channels == (2, 2) and latent.fc_dim == 32
    grid = NetworkConfig(kind="enerv-grid", **SMALL)
    wide = network_kind("enerv-grid").with_width(grid, 2.0)
    assert (wide.fc_dim, wide.lower_width, wide.mod_dim) == (32, 16, 32)
    assert wide.time_grid_channels == (8, 4) and wide.space_grid_channels == (4, 2)
    assert network_kind("enerv-grid").with_width(grid, 0.01).space_grid_channels == (1, 1)  # at least 1
    assert network_kind("enerv-grid").with_width(grid, 1.0) is grid
    paper = NetworkConfig(kind="enerv", **SMALL)
    assert network_kind("enerv").with_width(paper, 2.0) is paper
