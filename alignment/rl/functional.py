"""Pure tensor math for PPO (Llama 2 paper §3.2.3; docs/design.md, PPO).

Why this module: the paper optimises `R = R̃c − β·KL(π_θ ‖ π_0)` with PPO (clip 0.2) but leaves the
advantage estimator and the value loss unspecified. Keeping every formula here, free of models and
optimisers, lets each one be checked on numbers worked by hand and reused by the PPO stage.

Conventions (all [B, T] tensors are aligned per token; `mask` is 1/True on response tokens):
- log-probabilities are of the sampled tokens; KL is per token, `kl = logp − ref_logp` for k1;
- rewards are to be maximised; losses are to be minimised (the policy loss is the negated
  PPO objective);
- masked-out positions of every [B, T] output are 0, and statistics ignore them.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

KL_ESTIMATORS = ("k1", "k3")


def _check_mask(x: Tensor, mask: Tensor) -> Tensor:
    if mask.shape != x.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} differs from tensor shape {tuple(x.shape)}")
    return mask.to(dtype=x.dtype)


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of `x` over entries where `mask` is set (over all of them, or along `dim`).

    With `dim=None` an empty mask raises ValueError; along `dim` an empty slice gives NaN.
    """
    m = _check_mask(x, mask)
    if dim is None:
        count = m.sum()
        if count.item() == 0:
            raise ValueError("masked_mean: mask selects no entries")
        return (x * m).sum() / count
    return (x * m).sum(dim) / m.sum(dim)


def masked_var(x: Tensor, mask: Tensor) -> Tensor:
    """Biased (population) variance of `x` over the masked-in entries."""
    m = _check_mask(x, mask)
    mean = masked_mean(x, m)
    return masked_mean((x - mean) ** 2, m)


def whiten(x: Tensor, mask: Tensor | None = None, shift_mean: bool = True, eps: float = 1e-8) -> Tensor:
    """(x − mean)/sqrt(var + eps) over masked-in entries; with `shift_mean=False` the mean is kept.

    Masked-out positions come back as 0. A single entry has variance 0 and whitens to 0 (or to its
    own value when `shift_mean=False`).
    """
    m = torch.ones_like(x) if mask is None else _check_mask(x, mask)
    mean, var = masked_mean(x, m), masked_var(x, m)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * m


def whiten_by_group(x: Tensor, groups: list, eps: float = 1e-8) -> Tensor:
    """`whiten` applied to each group's entries of the 1-D `x` on their own (groups[i] names x[i]'s).

    For PPO rewards grouped by prompt kind: whitened over the whole batch, a kind that scores high
    everywhere (safety prompts under the safety RM) hands its answers positive advantages unless the
    critic has learned that offset, and the policy learns whatever those answers share.
    """
    if len(groups) != x.shape[0] or x.dim() != 1:
        raise ValueError(f"need a 1-D x and one group per entry, got {tuple(x.shape)} and {len(groups)}")
    out = torch.zeros_like(x)
    for group in dict.fromkeys(groups):
        rows = torch.tensor([g == group for g in groups], device=x.device)
        out[rows] = whiten(x[rows], eps=eps)
    return out


class RunningMoments:
    """Mean and (population) std of every value seen so far, merged batch by batch.

    Merging uses the parallel formula of Chan et al.: with counts n_a, n_b, means μ_a, μ_b and
    sums of squared deviations M_a, M_b, δ = μ_b − μ_a gives μ = μ_a + δ·n_b/n and
    M = M_a + M_b + δ²·n_a·n_b/n, so the result equals the stats of the concatenated batches.
    Used to whiten rewards with statistics that are stable across PPO iterations.
    """

    def __init__(self) -> None:
        self.mean = 0.0
        self.var = 0.0
        self.count = 0

    @property
    def std(self) -> float:
        return math.sqrt(self.var)

    @torch.no_grad()
    def update(self, x: Tensor, mask: Tensor | None = None) -> tuple[float, float]:
        """Fold the masked-in entries of `x` into the running stats; return the batch mean and std."""
        values = x.detach().double()
        values = values.reshape(-1) if mask is None else values[_check_mask(values, mask).bool()]
        n = values.numel()
        if n == 0:
            raise ValueError("RunningMoments.update: no entries to add")
        b_mean = values.mean().item()
        b_var = values.var(unbiased=False).item()
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        self.mean += delta * n / total
        self.var = m2 / total
        self.count = total
        return b_mean, math.sqrt(b_var)

    def whiten(self, x: Tensor, mask: Tensor | None = None, eps: float = 1e-8) -> Tensor:
        """(x − running mean)/sqrt(running var + eps); masked-out positions are 0."""
        if self.count == 0:
            raise RuntimeError("RunningMoments.whiten called before any update")
        out = (x - self.mean) / math.sqrt(self.var + eps)
        return out if mask is None else out * _check_mask(x, mask)

    def state_dict(self) -> dict:
        return {"mean": float(self.mean), "var": float(self.var), "count": int(self.count)}

    def load_state_dict(self, d: dict) -> None:
        self.mean, self.var, self.count = float(d["mean"]), float(d["var"]), int(d["count"])


def kl_per_token(logprobs: Tensor, ref_logprobs: Tensor, estimator: str = "k1") -> Tensor:
    """Per-token estimate of KL(π_θ ‖ π_ref) from log-probs of tokens sampled from π_θ.

    k1 = logp − ref_logp (unbiased, can be negative per token);
    k3 = (exp(ref − logp) − 1) − (ref − logp) (Schulman's unbiased, never-negative estimator).
    """
    log_ratio = ref_logprobs - logprobs
    if estimator == "k1":
        return -log_ratio
    if estimator == "k3":
        return torch.expm1(log_ratio) - log_ratio
    raise ValueError(f"unknown KL estimator {estimator!r}; valid: {', '.join(KL_ESTIMATORS)}")


def _last_index(mask: Tensor) -> Tensor:
    """Index of the last masked-in position of each row; ValueError if a row has none."""
    m = mask.bool()
    if not m.any(dim=1).all():
        raise ValueError("every row needs at least one masked-in (response) token")
    positions = torch.arange(m.shape[1], device=m.device).expand_as(m)
    return torch.where(m, positions, -1).max(dim=1).values


def kl_penalised_rewards(scores: Tensor, kl: Tensor, mask: Tensor, beta: float) -> Tensor:
    """Per-token rewards: −β·kl on every response token, plus the row's score on its last token."""
    if kl.dim() != 2 or scores.shape != kl.shape[:1]:
        raise ValueError(f"expected scores [B] and kl [B, T], got {tuple(scores.shape)}, {tuple(kl.shape)}")
    m = _check_mask(kl, mask)
    at_last = torch.nn.functional.one_hot(_last_index(m), kl.shape[1]).to(kl.dtype)
    return -beta * kl * m + at_last * scores.to(kl.dtype)[:, None]


@torch.no_grad()
def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over each row's response tokens (no gradient).

    δ_t = r_t + γ·V_{t+1} − V_t and A_t = δ_t + γλ·A_{t+1}, with V and A after the last response
    token taken as 0 (the episode ends there). Response tokens must be contiguous; leading and
    trailing masked-out positions (prompt, padding) are allowed. Returns (advantages, returns =
    advantages + values), both 0 at masked-out positions.
    """
    if rewards.dim() != 2 or values.shape != rewards.shape:
        raise ValueError(f"want rewards, values [B, T], got {tuple(rewards.shape)}, {tuple(values.shape)}")
    dtype = torch.promote_types(rewards.dtype, torch.float32)  # accumulate in at least float32
    m = _check_mask(rewards.to(dtype), mask)
    starts = (m[:, 1:] > m[:, :-1]).sum(dim=1) + (m[:, 0] > 0).long()
    if (starts > 1).any():
        raise ValueError("gae: response tokens of a row must be contiguous in the mask")
    r, v = rewards.detach().to(dtype) * m, values.detach().to(dtype) * m
    advantages = torch.zeros_like(r)
    next_adv = torch.zeros_like(r[:, 0])
    next_value = torch.zeros_like(r[:, 0])
    for t in reversed(range(r.shape[1])):
        delta = r[:, t] + gamma * next_value - v[:, t]
        next_adv = (delta + gamma * lam * next_adv) * m[:, t]
        advantages[:, t] = next_adv
        next_value = v[:, t]
    return advantages, (advantages + v) * m


def clipped_policy_loss(
    logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, clip: float
) -> tuple[Tensor, dict]:
    """PPO clipped surrogate loss: masked mean of −min(ρA, clip(ρ, 1−ε, 1+ε)A), ρ = exp(logp − old)."""
    if clip <= 0:
        raise ValueError(f"policy clip must be > 0, got {clip}")
    m = _check_mask(logprobs, mask)
    log_ratio = logprobs - old_logprobs.detach()
    ratio = torch.exp(log_ratio)
    adv = advantages.detach()
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip, 1 + clip) * adv
    loss = -masked_mean(torch.minimum(unclipped, clipped), m)
    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean((clipped < unclipped).to(m.dtype), m).item(),
            "approx_kl": masked_mean(0.5 * log_ratio**2, m).item(),
            "ratio_mean": masked_mean(ratio, m).item(),
        }
    return loss, stats


def clipped_value_loss(
    values: Tensor, old_values: Tensor, returns: Tensor, mask: Tensor, clip: float | None
) -> tuple[Tensor, dict]:
    """Masked mean of 0.5·max((v − R)², (old + clamp(v − old, −ε, ε) − R)²); `clip` None/0 disables it."""
    if clip is not None and clip < 0:
        raise ValueError(f"value clip must be >= 0 or None, got {clip}")
    m = _check_mask(values, mask)
    old, target = old_values.detach(), returns.detach()
    unclipped = (values - target) ** 2
    if clip:
        clipped = (old + torch.clamp(values - old, -clip, clip) - target) ** 2
        per_token = torch.maximum(unclipped, clipped)
        active = clipped > unclipped
    else:
        per_token, active = unclipped, torch.zeros_like(m)
    loss = 0.5 * masked_mean(per_token, m)
    with torch.no_grad():
        stats = {
            "value_clip_fraction": masked_mean(active.to(m.dtype), m).item(),
            "value_error": masked_mean(unclipped, m).item(),
        }
    return loss, stats
