"""Choosing the safety-RM threshold that PPO's reward combination uses (docs/design.md, Combining
the two reward models).

Why: Llama 2's PPO takes the safety reward whenever the prompt is a safety prompt *or* σ(safety
score) < 0.15, i.e. it treats a low safety score as "this response is unsafe". The paper picked 0.15
because on Meta Safety it flagged unsafe responses with precision 0.89 and recall 0.55. A different
safety RM (other data, other scale) needs its own threshold, so this module computes the same
curve for any RM on any labelled responses: flag "unsafe" when σ(score) < t, for t on a grid.

Definitions (unsafe is the positive class): precision = flagged unsafe / flagged, None when nothing
is flagged; recall = flagged unsafe / unsafe, None when nothing is unsafe. Responses come from
preference pairs' chosen_safe / rejected_safe labels; a response without a label is left out.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

PAPER_THRESHOLD = 0.15
PAPER_RESULT = {"precision": 0.89, "recall": 0.55}  # Meta Safety test set, Llama 2 paper §3.2.2 / §3.4
GRID = [i / 100 for i in range(1, 100)]  # 0.01 ... 0.99, includes 0.15 exactly


def _values(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def labelled_responses(pairs, r_chosen, r_rejected) -> tuple[np.ndarray, np.ndarray]:
    """(scores, unsafe) for every response of every pair that carries a safety label."""
    scores, unsafe = [], []
    for pair, c, r in zip(pairs, _values(r_chosen), _values(r_rejected), strict=True):
        for safe, score in ((pair.chosen_safe, c), (pair.rejected_safe, r)):
            if safe is not None:
                scores.append(score)
                unsafe.append(not safe)
    return np.array(scores, dtype=np.float64), np.array(unsafe, dtype=bool)


def flag_stats(scores, unsafe, threshold: float) -> dict:
    """Counts, precision and recall of flagging unsafe when σ(score) < threshold."""
    probs = 1.0 / (1.0 + np.exp(-_values(scores)))
    unsafe = np.asarray(unsafe, dtype=bool).reshape(-1)
    flagged = probs < threshold
    tp = int((flagged & unsafe).sum())
    n_flagged, n_unsafe = int(flagged.sum()), int(unsafe.sum())
    return {
        "threshold": float(threshold),
        "flagged": n_flagged,
        "true_positives": tp,
        "unsafe": n_unsafe,
        "responses": int(len(unsafe)),
        "precision": tp / n_flagged if n_flagged else None,
        "recall": tp / n_unsafe if n_unsafe else None,
    }


def curve(scores, unsafe, thresholds: Sequence[float] = GRID) -> list[dict]:
    """`flag_stats` at every threshold, in increasing order."""
    return [flag_stats(scores, unsafe, t) for t in sorted(thresholds)]


def thresholds_reaching(rows: list[dict], target_precision: float) -> tuple[dict | None, dict | None]:
    """(smallest, largest) grid threshold whose precision is at least the target, or None.

    Precision need not fall monotonically as t grows, so both ends are reported: the largest gives
    the most recall at that precision, the smallest is the most conservative."""
    ok = [
        row for row in rows if row["precision"] is not None and row["precision"] >= target_precision - 1e-12
    ]
    return (ok[0], ok[-1]) if ok else (None, None)


def threshold_report(
    scores,
    unsafe,
    target_precision: float = PAPER_RESULT["precision"],
    paper_threshold: float = PAPER_THRESHOLD,
    thresholds: Sequence[float] = GRID,
) -> dict:
    """The whole curve, the thresholds that reach `target_precision`, and what the paper's t gives."""
    rows = curve(scores, unsafe, thresholds)
    smallest, largest = thresholds_reaching(rows, target_precision)
    return {
        "target_precision": target_precision,
        "smallest_threshold_at_target": smallest,
        "largest_threshold_at_target": largest,
        "paper_threshold": flag_stats(scores, unsafe, paper_threshold),
        "paper_reported": {"threshold": PAPER_THRESHOLD, **PAPER_RESULT},
        "curve": rows,
    }


def evaluate_thresholds(
    pairs, r_chosen, r_rejected, out_dir: Path, target_precision: float = 0.89, title: str = ""
) -> dict:
    """`threshold_report` over the pairs' labelled responses; writes safety_thresholds.json and
    safety_precision_recall.png into out_dir."""
    from reward_models import plots

    scores, unsafe = labelled_responses(pairs, r_chosen, r_rejected)
    report = threshold_report(scores, unsafe, target_precision)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    marks = {
        f"paper t={PAPER_THRESHOLD}": report["paper_threshold"],
        f"largest t at P≥{target_precision:g}": report["largest_threshold_at_target"],
    }
    plots.precision_recall_curve(report["curve"], out_dir / "safety_precision_recall.png", marks, title)
    report["plot"] = "safety_precision_recall.png"
    (out_dir / "safety_thresholds.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def describe(report: dict) -> str:
    """Two lines for a terminal: the paper's threshold here, and the threshold for the target."""

    def fmt(row):
        if row is None:
            return "not reached on the grid"
        p = "n/a" if row["precision"] is None else f"{row['precision']:.3f}"
        r = "n/a" if row["recall"] is None else f"{row['recall']:.3f}"
        return f"t={row['threshold']:.2f}: precision {p}, recall {r} ({row['flagged']} flagged)"

    paper = report["paper_reported"]
    return (
        f"paper's {fmt(report['paper_threshold'])} (paper: precision {paper['precision']}, "
        f"recall {paper['recall']})\n"
        f"largest threshold with precision ≥ {report['target_precision']:g}: "
        f"{fmt(report['largest_threshold_at_target'])}"
    )
