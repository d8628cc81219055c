"""Learning-rate schedules as pure functions of the step (multipliers of the peak LR)."""

from __future__ import annotations

import math


def warmup_steps(total_steps: int, ratio: float, minimum: int = 0) -> int:
    """Llama 2's RM warm-up: `ratio` of the steps, at least `minimum`, never all of them."""
    return min(max(math.ceil(total_steps * ratio), minimum), max(total_steps - 1, 0))


def cosine_multiplier(step: int, total_steps: int, warmup: int, min_ratio: float = 0.0) -> float:
    """Linear warm-up from 1/warmup to 1, then cosine from 1 down to `min_ratio` at the last step.

    `step` counts optimizer steps from 0; the value is the LR multiplier used for that step.
    """
    if step < warmup:
        return (step + 1) / warmup
    decay_steps = max(total_steps - 1 - warmup, 1)
    progress = min((step - warmup) / decay_steps, 1.0)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
