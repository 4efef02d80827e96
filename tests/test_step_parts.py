"""benchmarks.step_parts: a fitting step timed in parts, as compress.fit.training_step runs it."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from conftest import smooth_clip

from benchmarks import speed
from benchmarks.step_parts import PARTS, fit_step_for, measure_step_parts, run_in_parts, step_parts_table
from compress.fit import Clip
from pipeline.config import load_preset
from pipeline.geometry import resolve_network
from pipeline.networks import build_network


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _step(preset_name: str = "test-tiny-latent", model=None):
    preset = load_preset(preset_name)
    torch.manual_seed(0)
    model = model or build_network(resolve_network(preset.network, 48, 32, 6))
    clip = Clip.from_numpy(smooth_clip(6, 32, 48), torch.device("cpu"))
    return fit_step_for(preset, model, clip, torch.tensor([4, 1]))


def test_the_breakdown_has_every_part_and_they_add_up_to_about_the_step():
    parts = measure_step_parts(_step(), repeats=1, warmup=1, reference_size=16)
    assert parts.rate_term and parts.bf16_autocast in (True, False)
    assert set(parts.part_ms) == set(PARTS)
    for part, ms in parts.part_ms.items():
        assert ms > 0, part
    # Timed apart (a clock reading between parts) and on a shared machine: generous slack.
    assert 0.25 * parts.whole_step_ms < parts.parts_sum_ms < 2.0 * parts.whole_step_ms + 5.0
    assert parts.macs_per_pixel > 0 and parts.fwd_bwd_gmac_per_second > 0 and parts.reference_gmac_per_second > 0
    assert parts.latent_frame_updates_per_second == pytest.approx(2 / (parts.whole_step_ms / 1e3))
    table = step_parts_table(parts)
    assert "weight transform + rate estimate" in table and "whole step (training_step)" in table
    assert json.loads(json.dumps(parts.as_dict()))["part_share"].keys() == set(PARTS)


def test_the_parts_are_the_training_step():
    """The copy of training_step's body that is timed in parts ends where training_step does."""
    whole = _step()
    parted = _step(model=copy.deepcopy(whole.model))
    for _ in range(2):
        torch.manual_seed(1)  # the quantizer's noise
        expected = whole.run()
        torch.manual_seed(1)
        got, seconds = run_in_parts(parted, lambda: None)
        assert set(seconds) == set(PARTS)
        for a, b in zip(expected, got):
            assert torch.equal(a, b)
    for module in ("model", "quantizer"):
        for (name, a), (_, b) in zip(getattr(whole, module).named_parameters(),
                                     getattr(parted, module).named_parameters()):
            assert torch.equal(a, b), f"{module}.{name}"


def test_a_preset_without_the_rate_term_fits_on_plain_weights():
    step = _step("test-tiny")
    assert step.transform is None and step.quantizer is None
    _, seconds = run_in_parts(step, lambda: None)
    assert seconds["quantizer"] >= 0 and seconds["forward"] > 0


def test_decode_only_measures_a_latent_preset(capsys, tmp_path):
    out = tmp_path / "decode.json"
    assert speed.main(["--decode-only", "--preset", "test-tiny-latent", "--size", "64x40", "--device", "cpu",
                       "--repeats", "1", "--decode-frames", "2", "--json", str(out)]) == 0
    decode = json.loads(capsys.readouterr().out)["decode"]
    assert json.loads(out.read_text())["decode"]["preset"] == decode["preset"] == "test-tiny-latent"
    assert decode["bitstream_bytes"] > 0 and decode["render_frames_per_second"] > 0
    assert decode["entropy_decode_symbols_per_second"] > 0
