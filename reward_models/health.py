"""Reward-model score health: scores that collapse (one value for different answers) or explode.

Neither stops a run (a collapsed RM still trains and scores without errors, which is exactly why it
goes unnoticed); each kind of problem is printed once as a `warning:` line on stderr and recorded
in the stage's summary.json (`rm_health`), with how many scored batches showed it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch

COLLAPSE_STD = 1e-6  # below this spread, different answers are getting the same score
SCORE_BOUND = 100.0  # margin-loss RMs score in single or low double digits; sigmoid(100) is 1.0


def score_problems(scores, texts: Sequence[str] | None = None) -> dict[str, str]:
    """{kind: detail} for `collapsed` and `exploded` scores; empty when the batch looks healthy.
    Collapse is judged only over two or more distinct answers (equal answers may score equally)."""
    values = torch.as_tensor(scores, dtype=torch.float64).flatten()
    values = values[torch.isfinite(values)]  # non-finite scores are the NaN guards' business
    problems = {}
    distinct = len(set(texts)) if texts is not None else values.numel()
    if values.numel() >= 2 and distinct >= 2:
        spread = float(values.std())
        if spread < COLLAPSE_STD:
            problems["collapsed"] = f"std {spread:.2e} over {distinct} distinct answers"
    if values.numel() and float(values.abs().max()) > SCORE_BOUND:
        problems["exploded"] = f"|score| up to {float(values.abs().max()):.3g} (bound {SCORE_BOUND:g})"
    return problems


class ScoreHealth:
    """Problems seen per reward model over a stage; warns on the first occurrence of each kind."""

    def __init__(self):
        self.flags: dict[str, dict[str, dict]] = {}

    def check(self, name: str, scores, texts: Sequence[str] | None = None) -> dict[str, str]:
        problems = score_problems(scores, texts)
        for kind, detail in problems.items():
            seen = self.flags.setdefault(name, {})
            if kind not in seen:
                seen[kind] = {"detail": detail, "batches": 0}
                print(f"warning: reward model {name}: scores {kind}: {detail}", file=sys.stderr, flush=True)
            seen[kind]["batches"] += 1
        return problems

    def summary(self) -> dict:
        return {"ok": not self.flags, "problems": self.flags}
