"""Safety-RM threshold picking (docs/design.md, Combining the two reward models) on a hand-made set
of six labelled responses."""

from __future__ import annotations

import json
import math

import pytest

from alignment.data.records import Category, PreferencePair
from reward_models.thresholds import (
    GRID,
    curve,
    evaluate_thresholds,
    flag_stats,
    labelled_responses,
    threshold_report,
    thresholds_reaching,
)

# σ(score) of each response, kept off the 0.01 grid so no comparison sits on a boundary
PROBS = [0.045, 0.095, 0.195, 0.295, 0.595, 0.895]
UNSAFE = [True, True, False, True, False, False]
SCORES = [math.log(p / (1 - p)) for p in PROBS]


def test_flag_stats_by_hand():
    # t = 0.15 flags 0.045 and 0.095, both unsafe: precision 1, recall 2/3
    s = flag_stats(SCORES, UNSAFE, 0.15)
    assert (s["flagged"], s["true_positives"], s["unsafe"], s["responses"]) == (2, 2, 3, 6)
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx(2 / 3)
    # t = 0.25 adds the safe 0.195: 2/3, 2/3; t = 0.35 adds the unsafe 0.295: 3/4, recall 1
    assert flag_stats(SCORES, UNSAFE, 0.25)["precision"] == pytest.approx(2 / 3)
    s = flag_stats(SCORES, UNSAFE, 0.35)
    assert s["precision"] == pytest.approx(0.75) and s["recall"] == 1.0
    # nothing flagged: precision undefined; nothing unsafe: recall undefined
    assert flag_stats(SCORES, UNSAFE, 0.01)["precision"] is None
    assert flag_stats(SCORES, [False] * 6, 0.5)["recall"] is None


def test_thresholds_reaching_a_target_precision():
    rows = curve(SCORES, UNSAFE)
    assert [r["threshold"] for r in rows] == GRID and 0.15 in GRID
    # precision ≥ 0.75 holds for t in 0.05..0.19 (1.0) and 0.30..0.59 (0.75); 0.20..0.29 gives 2/3
    smallest, largest = thresholds_reaching(rows, 0.75)
    assert smallest["threshold"] == 0.05 and smallest["recall"] == pytest.approx(1 / 3)
    assert largest["threshold"] == 0.59 and largest["recall"] == 1.0 and largest["precision"] == 0.75
    smallest, largest = thresholds_reaching(rows, 0.9)
    assert (smallest["threshold"], largest["threshold"]) == (0.05, 0.19)
    assert thresholds_reaching(curve(SCORES, [False] * 6), 0.5) == (None, None)


def test_report_includes_the_papers_threshold():
    report = threshold_report(SCORES, UNSAFE, target_precision=0.75)
    assert report["paper_threshold"]["threshold"] == 0.15
    assert report["paper_threshold"]["recall"] == pytest.approx(2 / 3)
    assert report["paper_reported"] == {"threshold": 0.15, "precision": 0.89, "recall": 0.55}
    assert report["largest_threshold_at_target"]["threshold"] == 0.59


def test_from_pairs_writes_json_and_curve(tmp_path):
    def p(chosen_safe, rejected_safe):
        return PreferencePair(
            [{"role": "user", "content": "q"}],
            "a",
            "b",
            Category.SAFETY,
            chosen_safe=chosen_safe,
            rejected_safe=rejected_safe,
        )

    # responses: (0.045 unsafe, 0.895 safe), (0.095 unsafe, 0.595 safe), (0.195 safe, 0.295 unsafe),
    # and an unlabelled pair that is left out
    pairs = [p(False, True), p(False, True), p(True, False), p(None, None)]
    chosen = [SCORES[0], SCORES[1], SCORES[2], 0.0]
    rejected = [SCORES[5], SCORES[4], SCORES[3], 0.0]
    scores, unsafe = labelled_responses(pairs, chosen, rejected)
    assert len(scores) == 6 and unsafe.tolist() == [True, False, True, False, False, True]
    report = evaluate_thresholds(pairs, chosen, rejected, tmp_path, target_precision=0.75)
    assert report["largest_threshold_at_target"]["threshold"] == 0.59
    saved = json.loads((tmp_path / "safety_thresholds.json").read_text())
    assert saved["paper_threshold"]["precision"] == 1.0
    assert (tmp_path / "safety_precision_recall.png").read_bytes()[:4] == b"\x89PNG"


def test_safety_flagging_metric_matches(monkeypatch):
    import evaluate.loading

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_hub(*args, **kwargs):
        raise AssertionError("tried the hub")

    monkeypatch.setattr(evaluate.loading, "HubEvaluationModuleFactory", no_hub)
    from reward_models import metrics

    metric = metrics.load("safety_flagging")
    for t in (0.15, 0.35, 0.01):
        assert metric.compute(scores=SCORES, unsafe=UNSAFE, threshold=t) == flag_stats(SCORES, UNSAFE, t)
    assert metric.compute(scores=SCORES, unsafe=UNSAFE)["threshold"] == 0.15
