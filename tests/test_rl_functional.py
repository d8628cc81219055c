"""PPO math (alignment.rl.functional) on small numbers worked by hand in each docstring."""

from __future__ import annotations

import json
import math

import pytest
import torch

from alignment.rl.functional import (
    RunningMoments,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalised_rewards,
    kl_per_token,
    masked_mean,
    masked_var,
    whiten,
)


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def close(actual, expected, tol=1e-6):
    torch.testing.assert_close(torch.as_tensor(actual, dtype=torch.float64), t(*expected), atol=tol, rtol=0)


# ---------------------------------------------------------------- masked statistics and whitening


def test_masked_mean_all_and_per_row():
    """x = [[1, 2, 3], [4, 5, 6]], mask = [[1, 1, 0], [0, 0, 1]]: kept 1, 2, 6.

    Overall (1 + 2 + 6)/3 = 3; per row (1 + 2)/2 = 1.5 and 6/1 = 6.
    """
    x = t([1, 2, 3], [4, 5, 6])
    mask = torch.tensor([[True, True, False], [False, False, True]])
    assert masked_mean(x, mask).item() == pytest.approx(3.0)
    close(masked_mean(x, mask, dim=1), [1.5, 6.0])


def test_masked_mean_errors():
    x = t(1, 2, 3)
    with pytest.raises(ValueError, match="no entries"):
        masked_mean(x, torch.zeros(3))
    with pytest.raises(ValueError, match="shape"):
        masked_mean(x, torch.ones(2))


def test_masked_var_is_biased_and_ignores_padding():
    """x = [1, 2, 3, 100], padding at 100: mean 2, biased var (1 + 0 + 1)/3 = 2/3 (unbiased would be 1)."""
    assert masked_var(t(1, 2, 3, 100), t(1, 1, 1, 0)).item() == pytest.approx(2 / 3)


def test_whiten_with_mask_ignores_padding():
    """x = [1, 2, 3, 100], mask [1, 1, 1, 0]: mean 2, var 2/3, so (x − 2)/sqrt(2/3) = [−1.2247, 0, 1.2247],
    and the padded slot is returned as 0. With shift_mean=False the mean 2 is added back:
    [0.7753, 2, 3.2247, 0]. Without a mask, [1, 2, 3] gives the same first three numbers.
    """
    s = math.sqrt(1.5)  # 1/sqrt(2/3)
    x, mask = t(1, 2, 3, 100), t(1, 1, 1, 0)
    close(whiten(x, mask), [-s, 0, s, 0])
    close(whiten(x, mask, shift_mean=False), [2 - s, 2, 2 + s, 0])
    close(whiten(t(1, 2, 3)), [-s, 0, s])


# ---------------------------------------------------------------- running moments


def test_running_moments_two_batches_equal_concatenation():
    """Batch a = [1, 2, 3]: mean 2, M_a = 2 (std sqrt(2/3)). Batch b = [10, 20] (999 masked out): mean 15,
    M_b = 50 (std 5). Chan: δ = 13, mean = 2 + 13·2/5 = 7.2, M = 2 + 50 + 169·3·2/5 = 254.8, var = 50.96.
    Directly on [1, 2, 3, 10, 20]: mean 36/5 = 7.2, squared deviations 38.44 + 27.04 + 17.64 + 7.84 +
    163.84 = 254.8, var 50.96. Whitening 7.2 + std gives 1.
    """
    rm = RunningMoments()
    assert rm.update(t(1, 2, 3)) == pytest.approx((2.0, math.sqrt(2 / 3)))
    assert rm.update(t(10, 20, 999), mask=torch.tensor([True, True, False])) == pytest.approx((15.0, 5.0))
    assert (rm.mean, rm.std, rm.count) == pytest.approx((7.2, math.sqrt(50.96), 5))
    all_values = t(1, 2, 3, 10, 20)
    assert rm.std == pytest.approx(all_values.std(unbiased=False).item())
    close(rm.whiten(t(7.2, 7.2 + rm.std, 5.0), mask=t(1, 1, 0)), [0.0, 1.0, 0.0])


def test_running_moments_state_dict_resumes():
    """Saving after batch a and resuming must give the same stats after batch b as never stopping."""
    a, b = t(1, 2, 3), t(10, 20)
    straight = RunningMoments()
    straight.update(a)
    straight.update(b)
    first = RunningMoments()
    first.update(a)
    resumed = RunningMoments()
    resumed.load_state_dict(json.loads(json.dumps(first.state_dict())))
    resumed.update(b)
    assert resumed.state_dict() == pytest.approx(straight.state_dict())
    assert resumed.count == 5


def test_running_moments_errors():
    rm = RunningMoments()
    with pytest.raises(RuntimeError, match="before any update"):
        rm.whiten(t(1.0))
    with pytest.raises(ValueError, match="no entries"):
        rm.update(t(1, 2), mask=t(0, 0))


# ---------------------------------------------------------------- KL


def test_kl_k1_and_k3_on_known_pairs():
    """p = 0.5, ref = 0.25: k1 = log 2 = 0.693147; ref − logp = −log 2, exp of it 0.5,
    so k3 = (0.5 − 1) + log 2 = 0.193147.
    p = 0.25, ref = 0.5: k1 = −log 2 (negative), k3 = (2 − 1) − log 2 = 0.306853 (still ≥ 0).
    """
    logp, ref = torch.log(t(0.5, 0.25)), torch.log(t(0.25, 0.5))
    ln2 = math.log(2)
    close(kl_per_token(logp, ref), [ln2, -ln2])
    close(kl_per_token(logp, ref, "k3"), [0.5 - 1 + ln2, 1 - ln2])


def test_kl_estimators_are_unbiased_in_expectation():
    """Under x ~ p: E[k1] = Σ p log(p/q) = KL(p‖q) and E[k3] = Σ q − Σ p + KL = KL (both sum to 1).
    p = [0.5, 0.3, 0.2], q = [0.2, 0.3, 0.5]: KL = 0.5 ln 2.5 + 0.2 ln 0.4 = 0.458145 − 0.183258 = 0.274887.
    """
    p, q = t(0.5, 0.3, 0.2), t(0.2, 0.3, 0.5)
    for est in ("k1", "k3"):
        expectation = (p * kl_per_token(p.log(), q.log(), est)).sum().item()
        assert expectation == pytest.approx(0.274887, abs=1e-6), est


def test_kl_unknown_estimator_names_valid_ones():
    with pytest.raises(ValueError, match="k1, k3"):
        kl_per_token(t(0.0), t(0.0), "k2")


# ---------------------------------------------------------------- rewards


def test_kl_penalised_rewards_by_hand():
    """β = 0.1. Row 0: prompt at 0, response at 1–2, padding at 3; score 2.
    Rewards: 0, −0.1·0.2 = −0.02, −0.1·0.3 + 2 = 1.97, 0.
    Row 1: all four response tokens, kl 0.5 each, score −1: −0.05 ×3, then −0.05 − 1 = −1.05.
    """
    kl = t([0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5])
    mask = torch.tensor([[0, 1, 1, 0], [1, 1, 1, 1]])
    rewards = kl_penalised_rewards(t(2.0, -1.0), kl, mask, beta=0.1)
    close(rewards, [[0, -0.02, 1.97, 0], [-0.05, -0.05, -0.05, -1.05]])


def test_kl_penalised_rewards_errors():
    kl = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="at least one"):
        kl_penalised_rewards(torch.ones(2), kl, torch.tensor([[1, 1, 0], [0, 0, 0]]), beta=0.1)
    with pytest.raises(ValueError, match="scores"):
        kl_penalised_rewards(torch.ones(3), kl, torch.ones(2, 3), beta=0.1)


# ---------------------------------------------------------------- GAE


def test_gae_three_tokens_by_hand():
    """γ = 0.9, λ = 0.5, so γλ = 0.45. Response at positions 1–3 (prompt at 0, padding at 4, both holding
    junk that must be ignored); r = [0, 0, 1], V = [0.5, 0.4, 0.2], value after the last token 0.
      δ3 = 1 + 0 − 0.2 = 0.8                    A3 = 0.8
      δ2 = 0 + 0.9·0.2 − 0.4 = −0.22            A2 = −0.22 + 0.45·0.8 = 0.14
      δ1 = 0 + 0.9·0.4 − 0.5 = −0.14            A1 = −0.14 + 0.45·0.14 = −0.077
    Returns A + V = [0.423, 0.54, 1.0].
    """
    rewards = t([7.0, 0.0, 0.0, 1.0, 7.0])
    values = t([9.0, 0.5, 0.4, 0.2, 9.0]).requires_grad_()
    mask = torch.tensor([[0, 1, 1, 1, 0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.5)
    close(adv, [[0, -0.077, 0.14, 0.8, 0]])
    close(ret, [[0, 0.423, 0.54, 1.0, 0]])
    assert not adv.requires_grad and not ret.requires_grad


def test_gae_lambda_one_is_monte_carlo():
    """γ = λ = 1 turns GAE into return-to-go minus value: r = [1, 2, 3], V = [1, 1, 1] gives
    A = [6 − 1, 5 − 1, 3 − 1] = [5, 4, 2] and returns [6, 5, 3]. A second row of two tokens is independent.
    """
    rewards = t([1, 2, 3], [4, 5, 0])
    values = t([1, 1, 1], [0, 0, 0])
    adv, ret = gae(rewards, values, t([1, 1, 1], [1, 1, 0]), gamma=1.0, lam=1.0)
    close(adv, [[5, 4, 2], [9, 5, 0]])
    close(ret, [[6, 5, 3], [9, 5, 0]])


def test_gae_rejects_gaps_in_the_response():
    with pytest.raises(ValueError, match="contiguous"):
        gae(torch.zeros(1, 4), torch.zeros(1, 4), torch.tensor([[1, 0, 1, 0]]), gamma=1.0, lam=0.95)


# ---------------------------------------------------------------- clipped losses


def test_policy_ratio_above_clip_with_positive_advantage_is_clipped():
    """ρ = 1.5, A = +1, ε = 0.2: ρA = 1.5 but clip(ρ)A = 1.2, min is 1.2, loss −1.2, no gradient."""
    logp = torch.tensor([[math.log(1.5)]], dtype=torch.float64, requires_grad=True)
    loss, stats = clipped_policy_loss(logp, t([0.0]), t([1.0]), torch.ones(1, 1), clip=0.2)
    assert loss.item() == pytest.approx(-1.2)
    assert stats["clip_fraction"] == 1.0
    loss.backward()
    assert logp.grad.item() == 0.0


def test_policy_loss_mixed_tokens_by_hand():
    """ε = 0.2; tokens (ρ, A): a (1.5, +1) → min(1.5, 1.2) = 1.2, clipped;
    b (0.5, +1) → min(0.5, 0.8) = 0.5, unclipped; c (1.5, −2) → min(−3, −2.4) = −3, unclipped;
    d is masked out (ρ = 3, A = 5). Loss = −(1.2 + 0.5 − 3)/3 = 0.433333; clip_fraction 1/3;
    ratio_mean (1.5 + 0.5 + 1.5)/3 = 1.166667; approx_kl = mean of 0.5·log²ρ = (2·0.082201 + 0.240227)/3
    = 0.134876. Gradient wrt logp = −ρA/3 on unclipped tokens: a 0, b −1/6, c +1, d 0.
    """
    logp = torch.log(t([1.5, 0.5, 1.5, 3.0])).requires_grad_()
    adv = t([1.0, 1.0, -2.0, 5.0])
    mask = torch.tensor([[True, True, True, False]])
    loss, stats = clipped_policy_loss(logp, torch.zeros(1, 4, dtype=torch.float64), adv, mask, clip=0.2)
    assert loss.item() == pytest.approx(1.3 / 3)
    assert stats["clip_fraction"] == pytest.approx(1 / 3)
    assert stats["ratio_mean"] == pytest.approx(3.5 / 3)
    assert stats["approx_kl"] == pytest.approx(0.134876, abs=1e-6)
    assert all(isinstance(v, float) for v in stats.values())
    loss.backward()
    close(logp.grad, [[0.0, -1 / 6, 1.0, 0.0]])


def test_policy_loss_inside_clip_range_is_plain_surrogate():
    """ε = 0.2; (ρ, A) = (1.1, +1) and (0.9, −1) both lie inside [0.8, 1.2], where both branches are equal,
    so nothing counts as clipped. Loss = −(1.1 − 0.9)/2 = −0.1; gradient −ρA/2 = [−0.55, +0.45].
    """
    logp = torch.log(t([1.1, 0.9])).requires_grad_()
    loss, stats = clipped_policy_loss(logp, torch.zeros(1, 2), t([1.0, -1.0]), torch.ones(1, 2), clip=0.2)
    assert loss.item() == pytest.approx(-0.1)
    assert stats["clip_fraction"] == 0.0
    loss.backward()
    close(logp.grad, [[-0.55, 0.45]])


def test_policy_loss_rejects_nonpositive_clip():
    with pytest.raises(ValueError, match="clip"):
        clipped_policy_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), 0.0)


def test_value_loss_clipping_active_and_inactive():
    """old = 1, R = 2, ε = 0.2 for every token (fourth token masked out):
    v = 1.5 → clipped v 1.2: max((−0.5)², (−0.8)²) = 0.64, clipped branch active;
    v = 1.1 → inside the clip range: both 0.81, inactive;
    v = 0.5 → clipped v 0.8: max(2.25, 1.44) = 2.25, clipped but unclipped branch wins, inactive.
    Loss = 0.5·(0.64 + 0.81 + 2.25)/3 = 0.616667; value_clip_fraction 1/3;
    value_error = (0.25 + 0.81 + 2.25)/3 = 1.103333. Clipped token gets no gradient.
    """
    values = t([1.5, 1.1, 0.5, 50.0]).requires_grad_()
    old, ret = t([1.0, 1.0, 1.0, 1.0]), t([2.0, 2.0, 2.0, 2.0])
    mask = t([1, 1, 1, 0])
    loss, stats = clipped_value_loss(values, old, ret, mask, clip=0.2)
    assert loss.item() == pytest.approx(3.7 / 6)
    assert stats["value_clip_fraction"] == pytest.approx(1 / 3)
    assert stats["value_error"] == pytest.approx(3.31 / 3)
    loss.backward()
    # d/dv of 0.5·(v − R)²/3 = (v − R)/3: 0 (clipped), −0.9/3, −1.5/3, 0 (masked)
    close(values.grad, [[0.0, -0.3, -0.5, 0.0]])


@pytest.mark.parametrize("clip", [None, 0])
def test_value_loss_without_clipping(clip):
    """Same tokens without clipping: 0.5·(0.25 + 0.81 + 2.25)/3 = 0.551667, nothing clipped."""
    values, old, ret = t([1.5, 1.1, 0.5]), t([1.0, 1.0, 1.0]), t([2.0, 2.0, 2.0])
    loss, stats = clipped_value_loss(values, old, ret, torch.ones(1, 3), clip=clip)
    assert loss.item() == pytest.approx(3.31 / 6)
    assert stats == pytest.approx({"value_clip_fraction": 0.0, "value_error": 3.31 / 3})


def test_value_loss_rejects_negative_clip():
    with pytest.raises(ValueError, match="clip"):
        clipped_value_loss(torch.zeros(1, 1), torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), -0.1)


def test_whiten_by_group_whitens_each_group_on_its_own():
    """x = [1, 3, 10, 20, 30] in groups [a, a, b, b, b]. Group a: mean 2, var 1, so [−1, 1]. Group b:
    mean 20, var (100 + 0 + 100)/3 = 66.67, so (x − 20)/8.165 = [−1.2247, 0, 1.2247]. Whitened over
    the whole batch instead, every a entry would be negative (batch mean 12.8): the group offset the
    per-group version removes. A group of one whitens to 0."""
    from alignment.rl.functional import whiten_by_group

    s = math.sqrt(1.5)
    close(whiten_by_group(t(1, 3, 10, 20, 30), ["a", "a", "b", "b", "b"]), [-1, 1, -s, 0, s])
    close(whiten_by_group(t(20, 1, 3, 30, 10), ["b", "a", "a", "b", "b"]), [0, -1, 1, s, -s])
    assert bool((whiten(t(1, 3, 10, 20, 30))[:2] < 0).all())
    close(whiten_by_group(t(5, 1, 3), ["x", "a", "a"]), [0, -1, 1])
    with pytest.raises(ValueError, match="one group per entry"):
        whiten_by_group(t(1, 2), ["a"])
