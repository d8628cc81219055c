"""Llama 2's helpfulness/safety reward combination (safety.reward_combination), worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from alignment.rl.functional import RunningMoments
from safety.reward_combination import combine_rewards, combined_reward, logit


def scores(*probs):
    """RM scores whose sigmoid is exactly the given probabilities."""
    p = torch.tensor(probs, dtype=torch.float64)
    return torch.log(p) - torch.log1p(-p)


# Three prompts: a safety prompt (Rs 0.6, Rh 0.9), a helpful prompt whose response looks unsafe
# (Rs 0.1 < 0.15, Rh 0.8) and a helpful prompt with a safe-looking response (Rs 0.7, Rh 0.3).
HELPFUL = scores(0.9, 0.8, 0.3)
SAFETY = scores(0.6, 0.1, 0.7)
IS_SAFETY = torch.tensor([True, False, False])


def test_logit_by_hand_and_clamped():
    """logit(0.5) = 0, logit(0.75) = ln 3 = 1.098612; 0 and 1 clamp to ±ln((1 − 1e-6)/1e-6) = ±13.815510."""
    bound = math.log((1 - 1e-6) / 1e-6)
    out = logit(torch.tensor([0.5, 0.75, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(out, torch.tensor([0.0, math.log(3), -bound, bound], dtype=torch.float64))
    with pytest.raises(ValueError, match="eps"):
        logit(torch.tensor([0.5]), eps=0.0)


def test_combine_rewards_paper_rule():
    """Safety prompt → Rs = 0.6; helpful prompt with Rs 0.1 < 0.15 → Rs = 0.1; helpful prompt with
    Rs 0.7 ≥ 0.15 → Rh = 0.3. With threshold 0.05 the second row no longer counts as unsafe → Rh = 0.8.
    """
    rc = combine_rewards(HELPFUL, SAFETY, IS_SAFETY)
    torch.testing.assert_close(rc, torch.tensor([0.6, 0.1, 0.3], dtype=torch.float64))
    rc = combine_rewards(HELPFUL, SAFETY, IS_SAFETY, threshold=0.05)
    torch.testing.assert_close(rc, torch.tensor([0.6, 0.8, 0.3], dtype=torch.float64))


@pytest.mark.parametrize("threshold", [0.0, 1.0, 1.5, -0.1])
def test_combine_rewards_rejects_threshold_outside_unit_interval(threshold):
    with pytest.raises(ValueError, match="threshold"):
        combine_rewards(HELPFUL, SAFETY, IS_SAFETY, threshold=threshold)


def test_combine_rewards_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="equal shapes"):
        combine_rewards(HELPFUL[:2], SAFETY, IS_SAFETY)
    with pytest.raises(ValueError, match="equal shapes"):
        combine_rewards(HELPFUL, SAFETY, IS_SAFETY[:2])


# Rc = [0.6, 0.1, 0.3] → logit = [ln 1.5, −ln 9, ln(3/7)] = [0.405465, −2.197225, −0.847298];
# mean −0.879686, deviations [1.285151, −1.317539, 0.032388], biased var 1.129524, std 1.062791;
# whitened = deviations / std = [1.209223, −1.239698, 0.030475].
WHITENED = torch.tensor([1.209223, -1.239698, 0.030475], dtype=torch.float64)


def test_combined_reward_whitens_logit_over_batch():
    """See the derivation above WHITENED; safety_share = 2/3 rows, rc_mean = (0.6 + 0.1 + 0.3)/3 = 1/3."""
    reward, stats = combined_reward(HELPFUL, SAFETY, IS_SAFETY)
    torch.testing.assert_close(reward, WHITENED, atol=1e-5, rtol=0)
    assert stats == pytest.approx({"safety_share": 2 / 3, "rc_mean": 1 / 3})


def test_combined_reward_with_running_moments():
    """A fresh RunningMoments sees only this batch, so it whitens exactly like the batch (count 3,
    mean −0.879686). A RunningMoments already holding 999,997 values of mean 0 and var 4 barely moves
    (new mean −2.64e-6, var ≈ 4), so the reward is ≈ logit(Rc)/2 = [0.202733, −1.098612, −0.423649].
    """
    fresh = RunningMoments()
    reward, _ = combined_reward(HELPFUL, SAFETY, IS_SAFETY, running=fresh)
    torch.testing.assert_close(reward, WHITENED, atol=1e-5, rtol=0)
    assert (fresh.count, fresh.mean) == pytest.approx((3, -0.879686), abs=1e-6)

    seasoned = RunningMoments()
    seasoned.load_state_dict({"mean": 0.0, "var": 4.0, "count": 999_997})
    reward, _ = combined_reward(HELPFUL, SAFETY, IS_SAFETY, running=seasoned)
    expected = torch.tensor([0.202733, -1.098612, -0.423649], dtype=torch.float64)
    torch.testing.assert_close(reward, expected, atol=1e-4, rtol=0)
    assert seasoned.count == 1_000_000


def test_combine_rewards_safety_cap():
    """safety_cap 0.5 caps Rs wherever Rs is used: the safety prompt's Rs 0.6 → 0.5; the unsafe-looking
    row keeps Rs 0.1 (below the cap); the helpful row keeps Rh 0.3 (the cap never touches Rh).
    Two refusals the safety RM rates 0.95 and 0.99 then tie at 0.9 under cap 0.9, while an answer it
    doubts (0.4) keeps its lower score: only doubtful answers stand out."""
    rc = combine_rewards(HELPFUL, SAFETY, IS_SAFETY, safety_cap=0.5)
    torch.testing.assert_close(rc, torch.tensor([0.6, 0.1, 0.3], dtype=torch.float64).clamp(max=0.5))
    rc = combine_rewards(
        scores(0.5, 0.5, 0.5), scores(0.95, 0.99, 0.4), torch.tensor([True, True, True]), safety_cap=0.9
    )
    torch.testing.assert_close(rc, torch.tensor([0.9, 0.9, 0.4], dtype=torch.float64))


@pytest.mark.parametrize("cap", [0.1, 1.0])
def test_combine_rewards_rejects_safety_cap_outside_threshold_to_one(cap):
    with pytest.raises(ValueError, match="safety_cap"):
        combine_rewards(HELPFUL, SAFETY, IS_SAFETY, safety_cap=cap)


def test_reward_scorer_applies_the_safety_cap(smollm2_tokenizer):
    """The scorer passes its cap to the combination: on two safety prompts whose safety scores are
    logits 5 and 0 (σ = 0.9933, 0.5), cap 0.9 gives Rc = [0.9, 0.5], reward = logit = [ln 9, 0]."""
    from types import SimpleNamespace

    from safety.rewards import RewardScorer

    class FixedScores:
        def __init__(self, values):
            self.values = torch.tensor(values)

        def __call__(self, input_ids, attention_mask):
            return SimpleNamespace(logits=self.values[: len(input_ids)].unsqueeze(-1))

    conversations = [[{"role": "user", "content": "How do I pick a lock?"}]] * 2
    scorer = RewardScorer(FixedScores([1.0, 1.0]), FixedScores([5.0, 0.0]), smollm2_tokenizer, safety_cap=0.9)
    out = scorer(conversations, ["I can't help with that.", "Sure."], torch.tensor([True, True]))
    torch.testing.assert_close(out["combined"], torch.tensor([0.9, 0.5]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out["reward"], torch.tensor([math.log(9), 0.0]), atol=1e-4, rtol=0)
