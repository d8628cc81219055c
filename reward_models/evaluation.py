"""Reward-model accuracy reported the way the Llama 2 paper reports it (Tables 7 and 8).

Why: a single accuracy number hides what matters. The paper reads accuracy per rating bucket
(easy "significantly better" pairs vs near-ties), per category and per test set, and a RM that is
confident must also be right. So every number here is a cell {accuracy, n, ci95} with a 95 % Wilson
interval: with the few hundred pairs of a test set an accuracy of 0.6 is ±0.05, and tables that hide
that invite reading noise as progress.

Conventions:
- a pair is correct when r(chosen) > r(rejected); a tie counts as wrong (a RM that scores both
  answers the same has not preferred the chosen one, and random ties should not earn half credit);
- calibration reads the RM's Bradley-Terry probability p = σ(r_c − r_r) as a classifier: its
  confidence max(p, 1 − p) in its preferred answer, binned into 10 equal bins over [0.5, 1], against
  how often that preferred answer is the chosen one (every label says "chosen wins", so binning p
  itself against the labels would be degenerate). ECE = Σ_b (n_b / N) |accuracy_b − confidence_b|;
- gold agreement uses the gym's graders, which know the right answer: per-response safety labels
  (chosen_safe / rejected_safe) first, else the helpfulness grader on meta with a gold answer or
  borderline keywords; only pairs the gold grader separates count.

`evaluate_scores` is pure (scores in, dict out); `evaluate_rm` scores test sets and draws the plots.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from alignment.data.records import Category, PreferencePair, Rating
from alignment.gym.graders import grade_helpfulness
from alignment.stats import wilson_interval
from reward_models.health import ScoreHealth

RATINGS = [r.value for r in Rating]
CATEGORIES = [c.value for c in Category]
ALWAYS_REPORTED = ("helpfulness", "safety")  # the paper's two; `other` only where the data has it
CALIBRATION_BINS = 10


def cell(correct: Sequence[bool]) -> dict:
    """{accuracy, n, ci95} for a list of right/wrong outcomes; accuracy is None for an empty cell."""
    n, k = len(correct), int(sum(bool(c) for c in correct))
    lo, hi = wilson_interval(k, n)
    return {"accuracy": k / n if n else None, "n": n, "ci95": [lo, hi]}


def _values(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float64).reshape(-1)


def _value(x) -> str | None:
    return getattr(x, "value", x)


def sigmoid(x) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


def calibration(r_chosen, r_rejected, bins: int = CALIBRATION_BINS) -> dict:
    """Reliability table and ECE of the RM's confidence in its preferred answer (module docstring)."""
    diff = _values(r_chosen) - _values(r_rejected)
    p = sigmoid(diff)
    confidence = np.maximum(p, 1 - p)
    correct = diff > 0
    index = np.clip(((confidence - 0.5) / 0.5 * bins).astype(int), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        inside = index == b
        n = int(inside.sum())
        row = {"lo": 0.5 + 0.5 * b / bins, "hi": 0.5 + 0.5 * (b + 1) / bins, "n": n}
        if n:
            row["confidence"] = float(confidence[inside].mean())
            row["accuracy"] = float(correct[inside].mean())
            ece += n / len(diff) * abs(row["accuracy"] - row["confidence"])
        else:
            row["confidence"] = row["accuracy"] = None
        rows.append(row)
    return {"bins": rows, "ece": float(ece) if len(diff) else None, "n": int(len(diff))}


def gold_preference(pair: PreferencePair) -> bool | None:
    """True when the gold grader prefers chosen, False when it prefers rejected, None when it
    cannot grade the pair or rates both answers the same."""
    if (
        pair.chosen_safe is not None
        and pair.rejected_safe is not None
        and pair.chosen_safe != pair.rejected_safe
    ):
        return bool(pair.chosen_safe)
    meta = pair.meta or {}
    if "answer_type" in meta or (meta.get("task") == "borderline" and "keywords" in meta):
        try:
            good_c, good_r = grade_helpfulness(meta, pair.chosen), grade_helpfulness(meta, pair.rejected)
        except (KeyError, ValueError, TypeError):
            return None
        return good_c if good_c != good_r else None
    return None


def gold_agreement(pairs: Sequence[PreferencePair], r_chosen, r_rejected) -> dict:
    """How often the RM prefers the answer the gold grader prefers, over pairs it separates."""
    diff = _values(r_chosen) - _values(r_rejected)
    outcomes: dict[str, list[bool]] = {c: [] for c in CATEGORIES}
    for pair, d in zip(pairs, diff, strict=True):
        gold = gold_preference(pair)
        if gold is not None:
            rm_prefers_chosen = d > 0  # a tie prefers neither, so it never agrees
            outcomes[_value(pair.category)].append(bool(rm_prefers_chosen == gold and d != 0))

    def agreement_cell(rows: list[bool]) -> dict:
        out = cell(rows)
        return {"agreement": out.pop("accuracy"), **out}

    everything = [o for rows in outcomes.values() for o in rows]
    return {
        **agreement_cell(everything),
        "by_category": {c: agreement_cell(r) for c, r in outcomes.items() if r or c in ALWAYS_REPORTED},
    }


def score_stats(pairs: Sequence[PreferencePair], r_chosen, r_rejected) -> dict:
    """Mean and spread of chosen and rejected rewards per category (the histograms in numbers)."""
    rc, rr = _values(r_chosen), _values(r_rejected)
    cats = np.array([_value(p.category) for p in pairs])
    out = {}
    for c in CATEGORIES:
        inside = cats == c
        if inside.any():
            out[c] = {
                "chosen_mean": float(rc[inside].mean()),
                "chosen_std": float(rc[inside].std()),
                "rejected_mean": float(rr[inside].mean()),
                "rejected_std": float(rr[inside].std()),
                "mean_margin": float((rc[inside] - rr[inside]).mean()),
            }
    return out


def by_rating(pairs: Sequence[PreferencePair], correct: np.ndarray) -> dict:
    """The four rating buckets always (Table 8 columns), plus "unrated" only when some pairs have none."""
    groups: dict[str, list[bool]] = {r: [] for r in RATINGS}
    for pair, ok in zip(pairs, correct, strict=True):
        groups.setdefault(_value(pair.rating) or "unrated", []).append(bool(ok))
    return {name: cell(rows) for name, rows in groups.items()}


def evaluate_scores(pairs: Sequence[PreferencePair], r_chosen, r_rejected) -> dict:
    """Accuracy overall, by rating and by category, calibration, gold agreement and score stats."""
    rc, rr = _values(r_chosen), _values(r_rejected)
    if not (len(pairs) == len(rc) == len(rr)):
        raise ValueError(f"{len(pairs)} pairs but {len(rc)} chosen and {len(rr)} rejected scores")
    correct = rc > rr  # ties are wrong
    overall = cell(correct)
    categories = np.array([_value(p.category) for p in pairs])
    return {
        **overall,
        "accuracy_by_rating": by_rating(pairs, correct),
        "accuracy_by_category": {
            c: cell(correct[categories == c])
            for c in CATEGORIES
            if c in ALWAYS_REPORTED or (categories == c).any()
        },
        "calibration": calibration(rc, rr),
        "gold_agreement": gold_agreement(pairs, rc, rr),
        "score_stats": score_stats(pairs, rc, rr),
    }


def summarize(scored: dict[str, tuple[list, np.ndarray, np.ndarray]]) -> dict:
    """The RM summary over test sets {name: (pairs, r_chosen, r_rejected)}: `evaluate_scores` over all
    pairs plus `accuracy_by_test_set` (Table 7) and `accuracy_by_test_set_and_rating` (Table 8)."""
    pairs = [p for ps, _, _ in scored.values() for p in ps]
    rc = np.concatenate([_values(c) for _, c, _ in scored.values()]) if scored else np.zeros(0)
    rr = np.concatenate([_values(r) for _, _, r in scored.values()]) if scored else np.zeros(0)
    summary = evaluate_scores(pairs, rc, rr)
    by_set, table8 = {}, {}
    for name, (ps, c, r) in scored.items():
        correct = _values(c) > _values(r)
        by_set[name] = cell(correct)
        table8[name] = {**by_rating(ps, correct), "overall": by_set[name]}
    summary["accuracy_by_test_set"] = by_set
    summary["accuracy_by_test_set_and_rating"] = table8
    summary["outcomes"] = {
        name: dict(zip(pair_keys(ps), map(int, _values(c) > _values(r)), strict=True))
        for name, (ps, c, r) in scored.items()
    }
    return summary


def pair_keys(pairs: Sequence[PreferencePair]) -> list[str]:
    """Names each pair by its content (a repeated pair by its content and how often it came before),
    so that two RMs' outcomes on one test set can be matched pair by pair for a paired test
    (reward_models.compare.head_to_head) without trusting the order."""
    seen: dict[str, int] = {}
    keys = []
    for pair in pairs:
        digest = hashlib.sha1(repr((pair.prompt, pair.chosen, pair.rejected)).encode()).hexdigest()[:16]
        keys.append(f"{digest}/{seen.get(digest, 0)}")
        seen[digest] = seen.get(digest, 0) + 1
    return keys


def score_test_sets(
    model,
    tokenizer,
    test_sets: dict[str, list[PreferencePair]],
    style: str = "template",
    autocast: bool = False,
    batch_size: int = 16,
    max_length: int = 512,
) -> dict:
    """{name: (pairs, r_chosen, r_rejected)} with numpy rewards, each test set scored in batches."""
    from reward_models.scoring import score_pairs

    out = {}
    for name, pairs in test_sets.items():
        c, r = score_pairs(
            model,
            tokenizer,
            pairs,
            batch_size=batch_size,
            style=style,
            max_length=max_length,
            autocast=autocast,
        )
        out[name] = (list(pairs), _values(c), _values(r))
    return out


def write_plots(scored: dict, summary: dict, out_dir: Path, prefix: str = "", title: str = "") -> dict:
    """Reliability diagram and score histograms as PNGs; returns {plot: file name in out_dir}."""
    from reward_models import plots

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    by_category: dict[str, tuple[list, list]] = {}
    for pairs, c, r in scored.values():
        for pair, vc, vr in zip(pairs, c, r, strict=True):
            chosen, rejected = by_category.setdefault(_value(pair.category), ([], []))
            chosen.append(float(vc))
            rejected.append(float(vr))
    files = {"reliability": f"{prefix}reliability.png", "score_histograms": f"{prefix}score_histograms.png"}
    plots.reliability_diagram(summary["calibration"], out_dir / files["reliability"], title=title)
    plots.score_histograms(by_category, out_dir / files["score_histograms"], title=title)
    return files


def evaluate_rm(
    model,
    tokenizer,
    test_sets: dict[str, list[PreferencePair]],
    out_dir: Path,
    style: str = "template",
    autocast: bool = False,
    batch_size: int = 16,
    max_length: int = 512,
    name: str = "under evaluation",
) -> dict:
    """Score every test set with the RM, write reliability.png and score_histograms.png into out_dir,
    and return the summary (see `summarize`; `plots` names the PNG files)."""
    scored = score_test_sets(model, tokenizer, test_sets, style, autocast, batch_size, max_length)
    summary = summarize(scored)
    health = ScoreHealth()  # collapsed or exploded scores: a warning line and a flag in the summary
    every_score = [np.zeros(0)] + [_values(s) for _, c, r in scored.values() for s in (c, r)]
    health.check(name, np.concatenate(every_score))
    summary["score_health"] = health.summary()
    summary["plots"] = write_plots(scored, summary, Path(out_dir))
    return summary
