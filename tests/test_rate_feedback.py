"""Rate control of the latent kinds: lambda steered while fitting, targets met on a real clip, and
the plain command's codec."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cli
from compress.quantize import quantizer_for
from compress.rate_feedback import FeedbackSettings, RateFeedback, combine_on_step
from compress.ratecontrol import STEERED_CURVE, RateRequest, RateTarget, preset_for_target, steered_quality
from compress.video import compress_frames
from pipeline.config import load_preset
from pipeline.errors import InputError
from pipeline.geometry import resolve_network
from pipeline.kinds import network_kind
from pipeline.networks import build_network
from pipeline.presets import with_fit_epochs
from pipeline.video_io import read_video
from pipeline.video_writer import write_video
from tests.conftest import smooth_clip

ROOT = Path(__file__).resolve().parent.parent


class _State(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("rate_state", torch.ones(2, dtype=torch.float64))


def _run(feedback: RateFeedback, total: int, bits_of) -> list[float]:
    factors = []
    for step in range(total):
        feedback.on_step(step, total)
        feedback.observe(torch.tensor(bits_of(feedback.factor)))
        factors.append(feedback.factor)
    return factors


def test_lambda_moves_toward_the_target_only_inside_its_window():
    state = _State()
    settings = FeedbackSettings(start=0.3, stop=0.7, checks=())
    feedback = RateFeedback(state, target_bytes=1000, measure=lambda: 0, per_epoch=10, settings=settings)
    factors = _run(feedback, 400, lambda f: 8 * 2000 / f**0.5)  # bytes fall as lambda^-0.5; 2x over at first
    assert factors[118] == 1.0 and factors[119] > 1.0  # nothing before 30 % of the steps
    assert factors[279] == factors[-1] > 1.0  # frozen after 70 %
    # the size the last lambda gives is close to the target
    assert abs(2000 / factors[-1] ** 0.5 / 1000 - 1) < 0.1
    assert all(b >= a for a, b in zip(factors, factors[1:]))  # only up: it was over all along


def test_a_measured_size_corrects_the_estimate():
    state = _State()
    settings = FeedbackSettings(start=0.0, stop=1.0, checks=(0.1,))
    measured = []

    def measure():
        measured.append(1)
        return 500  # the real coded size is half the estimate

    feedback = RateFeedback(state, target_bytes=500, measure=measure, per_epoch=10, settings=settings)
    factors = _run(feedback, 200, lambda f: 8 * 1000.0)  # the estimate does not move
    assert len(measured) == 1 and float(state.rate_state[1]) == pytest.approx(0.5)
    assert factors[-1] == pytest.approx(factors[20], rel=1e-6)  # corrected: on target, lambda stays


def test_the_state_is_a_buffer_that_checkpoints_keep_and_settled_says_when_lambda_stops():
    model = build_network(resolve_network(load_preset("test-tiny-latent").network, 32, 32, 2))
    quantizer = quantizer_for(model, load_preset("test-tiny-latent").codec)
    assert "rate_state" in quantizer.state_dict()
    feedback = RateFeedback(quantizer, 100, lambda: 0, per_epoch=4, settings=FeedbackSettings(stop=0.5))
    on_step = combine_on_step(None, feedback.on_step)
    assert on_step(10, 100) is False and on_step(60, 100) is True
    assert combine_on_step(None, None) is None


def test_the_starting_quality_follows_the_kinds_curve():
    for quality, bpp in STEERED_CURVE:
        assert steered_quality(bpp) == pytest.approx(quality, abs=0.1)
    assert steered_quality(0.001) == 10.0 and steered_quality(5.0) == 90.0
    preset, plan = preset_for_target(load_preset("enerv-latent-xs"), RateTarget(17_280, "0.05 bpp"), 320, 180, 48)
    assert plan.steered and plan.width == 1.0 and preset.codec.quality == plan.quality
    assert "to start" in plan.describe()


@pytest.mark.usefixtures("one_torch_thread")
def test_two_targets_land_within_5_percent_on_a_real_clip():
    source = read_video(ROOT / "data" / "bunny_320x180_48f.mkv")
    frames = source.frames[:8, 40:136, 80:240].copy()  # 8 frames of 160x96 of the bundled clip
    T, H, W = frames.shape[:3]
    preset = with_fit_epochs(load_preset("test-tiny-latent"), 100)  # lambda needs some epochs to follow
    quality = []
    for bpp in (0.5, 1.0):
        target = RateRequest(bpp=bpp).target(W, H, T, 24.0)
        data, result = compress_frames(frames, 24.0, preset, progress=False, target=target)
        assert abs(len(data) / target.bytes - 1) <= 0.05, (bpp, len(data), target.bytes)
        assert result.bytes == len(data) and 0.5 <= result.step_multiplier <= 2.0  # the last few percent only
        quality.append(result.psnr)
    assert quality[1] > quality[0] + 1.0  # twice the bytes, not spent on clipped weights


def test_the_plain_command_runs_the_latent_codec(tmp_path, capsys):
    assert network_kind(load_preset(cli.DEFAULT_PRESET).network.kind).latent_prefix is not None
    source = tmp_path / "clip.mkv"
    write_video(source, smooth_clip(4, 48, 64), fps=24)
    assert cli.compress_main([str(source), "-o", str(tmp_path / "c.bin"), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert cli.DEFAULT_PRESET in err and "lambda then follows the measured size" in err, err


def test_benchmark_points_can_be_rate_targets(tmp_path):
    import pandas as pd

    from benchmarks import rd
    from benchmarks.enerv import ENeRV, parse_point

    point = parse_point("0.5bpp")
    assert (point.target_bpp, point.label, point.token, point.settings) == (0.5, "0.5bpp", "t0.5", ())
    for bad in ("0bpp", "-1bpp", "xbpp"):
        with pytest.raises(InputError):
            parse_point(bad)
    codec = ENeRV(preset=load_preset("test-tiny-latent"), curve=(point, parse_point("1bpp")))
    assert codec.describe(point) != codec.describe(parse_point("1bpp"))  # each target is its own point
    clip = tmp_path / "clip.mkv"
    write_video(clip, read_video(ROOT / "data" / "bunny_320x180_48f.mkv").frames[:8, 40:136, 80:240], fps=24)
    out = tmp_path / "report"
    assert rd.main([str(clip), "-o", str(out), "--codecs", "enerv", "--enerv-presets", "test-tiny-latent",
                    "--epochs", "100", "--enerv-points", "0.5bpp,1bpp", "-q"]) == 0
    rows = pd.read_csv(out / "results.csv").set_index("point")
    assert sorted(rows.index) == ["0.5bpp", "1bpp"]
    for point, row in rows.iterrows():
        assert f"--target-bpp {point[:-3]}" in row["command"] and "--quality" not in row["command"]
        assert abs(row["bpp"] / float(point[:-3]) - 1) <= 0.05, (point, row["bpp"])
