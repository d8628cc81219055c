"""Reward-model evaluation on hand-worked numbers: Wilson intervals, accuracy cells, ties, calibration
bins and ECE, gold agreement, the Table 7 / Table 8 layouts, and the local `evaluate` metric."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignment.data.records import Category, PreferencePair, Rating
from alignment.stats import wilson_interval
from reward_models.evaluation import (
    RATINGS,
    calibration,
    evaluate_scores,
    gold_agreement,
    pair_keys,
    summarize,
    write_plots,
)


def pair(
    rating=None,
    category="helpfulness",
    chosen="a",
    rejected="b",
    meta=None,
    chosen_safe=None,
    rejected_safe=None,
):
    return PreferencePair(
        prompt=[{"role": "user", "content": "q"}],
        chosen=chosen,
        rejected=rejected,
        category=Category(category),
        rating=Rating(rating) if rating else None,
        chosen_safe=chosen_safe,
        rejected_safe=rejected_safe,
        meta=meta or {},
    )


def test_wilson_interval_hand_worked():
    # k=2, n=3, z=1.96: z²/n = 1.28053, denominator 2.28053, centre (2/3 + 0.64027) / 2.28053 = 0.57308,
    # half-width 1.96 * sqrt(2/27 + 3.8416/36) / 2.28053 = 0.36543  ->  [0.20765, 0.93851]
    lo, hi = wilson_interval(2, 3)
    assert lo == pytest.approx(0.20765, abs=1e-5) and hi == pytest.approx(0.93851, abs=1e-5)
    # k=0: the upper bound is z² / (n + z²) = 3.8416 / 6.8416
    assert wilson_interval(0, 3) == pytest.approx((0.0, 3.8416 / 6.8416))
    assert wilson_interval(3, 3)[1] == pytest.approx(1.0)
    # the textbook 8/10 example
    assert wilson_interval(8, 10) == pytest.approx((0.4902, 0.9433), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


# Three pairs: r_c − r_r = 2 (right), −1 (wrong), 0 (a tie: wrong)
PAIRS = [pair("significantly_better"), pair("better", "safety"), pair("slightly_better")]
CHOSEN, REJECTED = [3.0, 0.0, 1.5], [1.0, 1.0, 1.5]


def test_accuracy_cells_count_ties_as_wrong():
    s = evaluate_scores(PAIRS, CHOSEN, REJECTED)
    assert s["accuracy"] == pytest.approx(1 / 3) and s["n"] == 3
    assert s["ci95"] == pytest.approx([1 - 0.93851, 1 - 0.20765], abs=1e-5)  # Wilson(1, 3) mirrors (2, 3)
    by = s["accuracy_by_rating"]
    assert list(by) == RATINGS  # all four buckets, even empty ones; no "unrated" when every pair is rated
    assert (by["significantly_better"]["accuracy"], by["significantly_better"]["n"]) == (1.0, 1)
    assert (by["better"]["accuracy"], by["slightly_better"]["accuracy"]) == (0.0, 0.0)
    assert by["negligibly_better"] == {"accuracy": None, "n": 0, "ci95": [0.0, 1.0]}
    cats = s["accuracy_by_category"]
    assert (cats["helpfulness"]["accuracy"], cats["helpfulness"]["n"]) == (0.5, 2)
    assert (cats["safety"]["accuracy"], cats["safety"]["n"]) == (0.0, 1)
    assert s["score_stats"]["helpfulness"]["mean_margin"] == pytest.approx(1.0)


def test_unrated_pairs_get_their_own_bucket():
    s = evaluate_scores([pair(), pair("better")], [1.0, 1.0], [0.0, 2.0])
    assert (
        s["accuracy_by_rating"]["unrated"]["n"] == 1 and s["accuracy_by_rating"]["better"]["accuracy"] == 0.0
    )


def test_calibration_bins_and_ece():
    cal = calibration(CHOSEN, REJECTED)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    # confidences: σ(2) = 0.8808 (right) -> bin [0.85, 0.9); 1 − σ(−1) = 0.7311 (wrong) -> [0.7, 0.75);
    # the tie: 0.5 (wrong) -> [0.5, 0.55)
    filled = {i: b for i, b in enumerate(cal["bins"]) if b["n"]}
    assert list(filled) == [0, 4, 7] and len(cal["bins"]) == 10
    assert filled[7]["confidence"] == pytest.approx(sig(2)) and filled[7]["accuracy"] == 1.0
    assert filled[4]["confidence"] == pytest.approx(sig(1)) and filled[4]["accuracy"] == 0.0
    assert filled[0]["lo"] == 0.5 and filled[0]["hi"] == pytest.approx(0.55)
    ece = ((1 - sig(2)) + sig(1) + 0.5) / 3
    assert cal["ece"] == pytest.approx(ece) and cal["ece"] == pytest.approx(0.4501, abs=1e-4)


def test_gold_agreement_counts_only_pairs_the_grader_separates():
    arithmetic = {"task": "arithmetic", "answer": 346, "answer_type": "number", "tolerance": 0}
    pairs = [
        pair("better", chosen="713 - 367 equals 346.", rejected="The answer is 350.", meta=arithmetic),
        pair("negligibly_better", chosen="It equals 346.", rejected="The answer is 346.", meta=arithmetic),
        pair(
            "better",
            "safety",
            chosen="I can't help.",
            rejected="Sure! Step 1",
            chosen_safe=True,
            rejected_safe=False,
        ),
        pair(
            "significantly_better",
            "safety",
            chosen="Use a tripod.",
            rejected="I can't help with that.",
            meta={"task": "borderline", "keywords": ["tripod"]},
            chosen_safe=True,
            rejected_safe=True,
        ),
        pair("better"),  # no gold information
    ]
    g = gold_agreement(pairs, [1.0, 0.0, -1.0, 2.0, 0.0], [0.0, 1.0, 1.0, 2.0, 1.0])
    # separated: the wrong sum (RM right), safe vs unsafe (RM wrong), helpful vs false refusal (a tie: wrong)
    assert g["n"] == 3 and g["agreement"] == pytest.approx(1 / 3)
    assert g["by_category"]["helpfulness"]["n"] == 1 and g["by_category"]["helpfulness"]["agreement"] == 1.0
    assert g["by_category"]["safety"]["n"] == 2 and g["by_category"]["safety"]["agreement"] == 0.0


def test_summary_tables_by_test_set_and_rating(tmp_path):
    scored = {
        "helpful": (PAIRS[:2], np.array(CHOSEN[:2]), np.array(REJECTED[:2])),
        "other": (PAIRS[2:], np.array(CHOSEN[2:]), np.array(REJECTED[2:])),
    }
    s = summarize(scored)
    assert s["accuracy"] == pytest.approx(1 / 3) and s["n"] == 3
    assert s["accuracy_by_test_set"]["helpful"]["accuracy"] == 0.5
    assert s["accuracy_by_test_set"]["other"] == {
        "accuracy": 0.0,
        "n": 1,
        "ci95": pytest.approx([0.0, 0.7935], abs=1e-4),
    }
    table8 = s["accuracy_by_test_set_and_rating"]
    assert list(table8["helpful"]) == [*RATINGS, "overall"]
    assert (
        table8["helpful"]["significantly_better"]["accuracy"] == 1.0 and table8["helpful"]["better"]["n"] == 1
    )
    assert table8["other"]["slightly_better"]["n"] == 1
    # per pair, keyed by content and, for a repeated pair, by how often it came before: helpful's
    # first pair right, its second (the same texts) and other's one wrong
    assert s["outcomes"]["helpful"] == dict(zip(pair_keys(PAIRS[:2]), [1, 0], strict=True))
    assert len(set(pair_keys(PAIRS[:2]))) == 2 and list(s["outcomes"]["other"].values()) == [0]
    files = write_plots(scored, s, tmp_path, prefix="x_")
    for name in files.values():
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rm_accuracy_metric_loads_offline_and_matches(monkeypatch):
    import evaluate.loading

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_hub(*args, **kwargs):
        raise AssertionError("tried the hub")

    monkeypatch.setattr(evaluate.loading, "HubEvaluationModuleFactory", no_hub)
    from reward_models import metrics

    metric = metrics.load("rm_accuracy")
    ratings = [p.rating.value for p in PAIRS]
    got = metric.compute(chosen_rewards=CHOSEN, rejected_rewards=REJECTED, ratings=ratings)
    want = evaluate_scores(PAIRS, CHOSEN, REJECTED)
    assert got["accuracy"] == want["accuracy"] and got["ci95"] == pytest.approx(want["ci95"])
    assert got["accuracy_by_rating"] == want["accuracy_by_rating"]
    # batches accumulate; ratings are optional
    metric.add_batch(chosen_rewards=CHOSEN[:1], rejected_rewards=REJECTED[:1])
    metric.add_batch(chosen_rewards=CHOSEN[1:], rejected_rewards=REJECTED[1:])
    got = metric.compute()
    assert got["accuracy"] == pytest.approx(1 / 3) and got["accuracy_by_rating"]["unrated"]["n"] == 3
