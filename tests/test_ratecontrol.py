import pytest

from compress.ratecontrol import parse_byte_size, rate_target
from pipeline.errors import InputError

CLIP = dict(width=320, height=180, frames=48, fps=24.0)


@pytest.mark.parametrize("text,expected", [("250000", 250_000), ("50KB", 50_000), ("50k", 50_000), ("1.5MB", 1_500_000),
                                           ("64KiB", 65_536), (" 2 MiB ", 2 * 1024**2), ("0.5kb", 500), ("1G", 10**9)])
def test_sizes_with_suffixes(text, expected):
    assert parse_byte_size(text) == expected


@pytest.mark.parametrize("text", ["", "KB", "-5KB", "5 KB per s", "5iB", "1e3", "five"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(InputError):
        parse_byte_size(text)


def test_the_three_ways_of_asking_give_bytes():
    assert rate_target(bpp=0.05, **CLIP).bytes == round(0.05 * 320 * 180 * 48 / 8)
    assert rate_target(size="20KB", **CLIP).bytes == 20_000
    assert rate_target(bitrate=100, **CLIP).bytes == round(100_000 / 8 * 2)  # 48 frames at 24 fps = 2 s
    assert rate_target(**CLIP) is None


@pytest.mark.parametrize("kwargs", [dict(bpp=0.0), dict(bpp=-0.1), dict(bpp=float("nan")), dict(size="0"),
                                    dict(bitrate=0.0), dict(bitrate=-3.0), dict(bpp=0.1, size="10KB"),
                                    dict(size="100")])
def test_impossible_targets_are_refused(kwargs):
    with pytest.raises(InputError):
        rate_target(**kwargs, **CLIP, min_bytes=400)


# --- choosing the network and landing on the target ---------------------------------------

from compress.ratecontrol import (  # noqa: E402
    QUALITY_RANGE,
    RateRequest,
    RateTarget,
    bits_per_parameter,
    default_target_bpp,
    plan_for_target,
    quality_for_bits,
    step_multiplier,
)


def test_step_multiplier_lands_just_under_the_target():
    def size_at(m):
        return int(100_000 / m**0.8)

    for target in (20_000, 40_000, 99_000, 150_000):
        m = step_multiplier(size_at, target)
        assert 0.97 * target <= size_at(m) <= target, (target, m, size_at(m))
    assert step_multiplier(lambda m: 39_000, 40_000) == 1.0  # already there: steps as trained


def test_step_multiplier_stops_at_its_bounds():
    assert step_multiplier(lambda m: 10**9, 1000) == 64.0  # never small enough: the coarsest grid
    assert step_multiplier(lambda m: 10, 1000) == 1 / 64  # never large enough: the finest


def test_quality_and_bits_are_inverse_and_increasing():
    for q in (20.0, 35.0, 50.0, 65.0, 80.0):
        assert quality_for_bits(bits_per_parameter(q)) == pytest.approx(q)
    assert bits_per_parameter(40) < bits_per_parameter(50) < bits_per_parameter(60)
    assert quality_for_bits(100.0) == QUALITY_RANGE[1] and quality_for_bits(0.0) == QUALITY_RANGE[0]


def test_a_larger_target_gets_a_wider_network():
    def parameters_at(width):
        return int(20_000 * width * width)

    plans = [plan_for_target(None, RateTarget(b, f"{b} bytes"), parameters_at, 2_000) for b in (8_000, 30_000, 120_000)]
    assert [p.width for p in plans] == sorted(p.width for p in plans) and plans[0].width < plans[-1].width
    for plan in plans:  # at the sweet spot the parameters match the weight budget
        if 0.25 < plan.width < 6.0:
            assert 8 * plan.weight_bytes / plan.parameters == pytest.approx(bits_per_parameter(50), rel=0.02)
    fixed = plan_for_target(None, RateTarget(120_000, "x"), parameters_at, 2_000, scalable=False)
    assert fixed.width == 1.0 and fixed.quality > 50  # same network: more bits per weight
    with pytest.raises(InputError):
        plan_for_target(None, RateTarget(1_500, "1500 bytes"), parameters_at, 2_000)


def test_default_target_falls_with_frame_size():
    assert default_target_bpp(320, 180) > default_target_bpp(1280, 720) > default_target_bpp(1920, 1080)
    target = RateRequest(default=True).target(1280, 720, 10, 25.0)
    assert target.bytes == round(default_target_bpp(1280, 720) * 1280 * 720 * 10 / 8) and "default" in target.asked
    assert RateRequest().target(320, 180, 10, 25.0) is None
