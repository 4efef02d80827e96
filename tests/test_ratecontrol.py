import pytest

from compress.ratecontrol import parse_size, rate_target
from pipeline.errors import InputError

CLIP = dict(width=320, height=180, frames=48, fps=24.0)


@pytest.mark.parametrize("text,expected", [("250000", 250_000), ("50KB", 50_000), ("50k", 50_000), ("1.5MB", 1_500_000),
                                           ("64KiB", 65_536), (" 2 MiB ", 2 * 1024**2), ("0.5kb", 500), ("1G", 10**9)])
def test_sizes_with_suffixes(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "KB", "-5KB", "5 KB per s", "5iB", "1e3", "five"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(InputError):
        parse_size(text)


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
