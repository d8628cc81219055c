"""Learning-rate schedule and the data plan of the training loop."""

from __future__ import annotations

import math

import pytest

from alignment.training.loop import LoopSettings, step_batches, total_steps
from alignment.training.schedule import cosine_multiplier, warmup_steps


def test_warmup_is_three_percent_with_a_floor_of_five():
    """Llama 2 RM: warm-up 3 % of steps, at least 5: 100 steps -> 5 (3 < 5), 1000 steps -> 30."""
    assert warmup_steps(100, 0.03, minimum=5) == 5
    assert warmup_steps(1000, 0.03, minimum=5) == 30
    assert warmup_steps(3, 0.03, minimum=5) == 2  # never the whole run


def test_cosine_with_warmup_and_floor():
    """total 11 steps, warm-up 2, floor 10 %:
    step 0 -> 1/2, step 1 -> 2/2 = 1 (warm-up ramps to the peak);
    then decay over steps 2..10 (8 intervals): step 2 -> 1, step 6 (halfway) -> 0.1 + 0.9 * 0.5 = 0.55,
    step 10 -> 0.1 (the floor, Llama 2's "cosine down to 10 % of the peak")."""
    values = [cosine_multiplier(s, 11, 2, 0.1) for s in range(11)]
    assert values[0] == pytest.approx(0.5)
    assert values[1] == pytest.approx(1.0)
    assert values[2] == pytest.approx(1.0)
    assert values[6] == pytest.approx(0.55)
    assert values[10] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(values[1:], values[2:], strict=False))  # non-increasing after warm-up
    assert cosine_multiplier(4, 9, 0) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))


def test_data_plan_covers_each_epoch_once_in_a_seeded_order():
    """10 examples, batch 2, accumulation 2 -> 4 examples a step -> 2 full steps an epoch
    (the remainder of 2 is left out); 1.5 epochs -> 3 steps."""
    settings = LoopSettings(learning_rate=1e-3, epochs=1.5, batch_size=2, grad_accum=2, seed=7)
    plan = step_batches(10, settings)
    assert len(plan) == 3 and all(len(step) == 2 and all(len(mb) == 2 for mb in step) for step in plan)
    first_epoch = [i for step in plan[:2] for mb in step for i in mb]
    assert len(set(first_epoch)) == 4 * 2  # no example twice within an epoch
    assert step_batches(10, settings) == plan  # a pure function of the seed: resume can recompute it
    other = LoopSettings(learning_rate=1e-3, epochs=1.5, batch_size=2, grad_accum=2, seed=8)
    assert step_batches(10, other) != plan


def test_total_steps_by_hand():
    """batch 3, accumulation 2 -> 6 examples a step.
    20 examples -> 20 // 6 = 3 full steps an epoch (the remainder of 2 is left out);
    2.5 epochs -> ceil(3 * 2.5) = ceil(7.5) = 8 steps; max_steps 5 -> min(8, 5) = 5;
    4 examples (fewer than a step) -> still 1 step an epoch, so 2.5 epochs -> ceil(2.5) = 3;
    0.1 epochs of 20 -> ceil(0.3) = 1 (never below one step).
    step_batches makes exactly that many steps."""
    settings = LoopSettings(learning_rate=1e-3, epochs=2.5, batch_size=3, grad_accum=2)
    assert total_steps(20, settings) == 8
    assert total_steps(4, settings) == 3
    assert len(step_batches(20, settings)) == 8
    capped = LoopSettings(learning_rate=1e-3, epochs=2.5, batch_size=3, grad_accum=2, max_steps=5)
    assert total_steps(20, capped) == 5
    short = LoopSettings(learning_rate=1e-3, epochs=0.1, batch_size=3, grad_accum=2)
    assert total_steps(20, short) == 1
