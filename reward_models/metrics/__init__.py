"""Paddock's reward-model metrics as local `evaluate` modules, loadable without the Hugging Face Hub.

Why: users of `evaluate` can drop RM accuracy and safety flagging into their own evaluation loops
(`metric.add_batch(...)` across batches, then `compute()`), while the numbers stay those of
`reward_models.evaluation` and `reward_models.thresholds`, which the metric scripts call.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
NAMES = ("rm_accuracy", "safety_flagging")


def path(name: str) -> Path:
    """Directory of the metric script `name`, the argument `evaluate.load` takes."""
    if name not in NAMES:
        raise ValueError(f"unknown metric {name!r}; Paddock's metrics: {', '.join(NAMES)}")
    return METRICS_DIR / name


def load(name: str, **kwargs):
    """`evaluate.load` on the local script: no hub access is needed (works with HF_HUB_OFFLINE=1)."""
    import evaluate

    return evaluate.load(str(path(name)), **kwargs)
