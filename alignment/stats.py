"""The statistics the reports share: an interval for a rate and a paired test of two classifiers.

Reward-model accuracy (reward_models/evaluation.py), RM comparisons (reward_models/compare.py) and
gold-suite comparisons (safety/gold_compare.py) all report rates of small samples, so each carries
an interval, and two models scored on the same items are compared by the items they disagree on.
"""

from __future__ import annotations

import math


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % (z = 1.96) Wilson score interval for k successes in n trials; (0, 1) when n = 0.

    Unlike the normal approximation it stays inside [0, 1] and is sensible at 0 % and 100 %."""
    if n == 0:
        return 0.0, 1.0
    p = k / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def mcnemar_exact(only_a: int, only_b: int) -> float:
    """Two-sided exact McNemar p-value: under "equally accurate", each of the n = only_a + only_b
    discordant pairs is A's win with probability 1/2, so p = 2 P(Bin(n, 1/2) <= min), capped at 1."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(only_a, only_b) + 1)) / 2**n
    return min(1.0, 2 * tail)
