"""--time-budget: the epochs are laid over the budget from timed steps, and the encode ends inside it."""

from __future__ import annotations

import time

import pytest
import torch

from compress.fit import Clip
from compress.plan import StepSeconds, estimate_seconds, measure_step_seconds, plan_for_budget
from compress.video import compress_frames
from pipeline.config import load_preset
from pipeline.epochs import EpochPlan
from pipeline.geometry import resolve_network
from pipeline.networks import build_network
from tests.conftest import smooth_clip

TINY = load_preset("test-tiny")


def test_the_epochs_follow_the_budget_in_proportion():
    steps = StepSeconds(fit=0.01, finetune=0.02)
    plan, batch = EpochPlan.of(TINY), TINY.fit.batch_size
    small = plan_for_budget(plan, steps, 8, batch, budget=5.0)
    large = plan_for_budget(plan, steps, 8, batch, budget=50.0)
    assert 1 <= small.fit < large.fit
    assert estimate_seconds(small, steps, 8, batch) <= 5.0 and estimate_seconds(large, steps, 8, batch) <= 50.0
    # The fine-tunes keep their share of the fit's epochs.
    ratio = TINY.codec.rd_epochs / TINY.fit.epochs
    assert abs(large.rd / large.fit - ratio) < 0.05
    # Less than any epoch: a part of one (steps, not whole epochs), but at least one step.
    tiny_budget = plan_for_budget(plan, steps, 8, batch, budget=0.01)
    assert 0 < tiny_budget.fit < 1 and tiny_budget.steps("fit", 4) == 1


def test_measuring_steps_changes_neither_the_network_nor_the_random_state():
    frames = smooth_clip(4, 32, 48)
    torch.manual_seed(0)
    model = build_network(resolve_network(TINY.network, 48, 32, 4))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = torch.get_rng_state()
    steps = measure_step_seconds(model, Clip.from_numpy(frames, torch.device("cpu")), TINY)
    assert steps.fit > 0 and steps.finetune > 0
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


# The longer budget runs with the slow tests (make test-slow): the default suite keeps the 15 s one.
@pytest.mark.parametrize("budget", [15.0, pytest.param(40.0, marks=pytest.mark.slow)])
def test_an_encode_ends_inside_its_budget(budget):
    frames = smooth_clip(8, 32, 48)
    start = time.perf_counter()
    _, result = compress_frames(frames, 24.0, TINY, progress=False, time_budget=budget)
    elapsed = time.perf_counter() - start
    assert result.time_budget == budget and result.epochs[0] >= 1
    # A generous bound, not a tight timing: the plan aims at 92 % of the budget.
    assert elapsed <= 1.25 * budget, (elapsed, result.stage_seconds)
    assert result.epochs[0] > TINY.fit.epochs / 4  # the budget was used, not skipped
