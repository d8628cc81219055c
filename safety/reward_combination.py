"""Combining the helpfulness and safety reward models into PPO's reward (Llama 2 paper §3.2.3).

Why: Llama 2 trains two reward models and PPO needs one scalar per response. The paper takes the
safety score when the prompt is a safety prompt, or when the safety RM thinks the response is unsafe
(σ(safety score) < 0.15, the threshold that gave precision 0.89 / recall 0.55 on Meta Safety; see
`reward_models.thresholds` to pick it for another RM), and the helpfulness score otherwise:

    Rc = Rs if is_safety(prompt) or Rs < 0.15 else Rh,     R̃c = whiten(logit(Rc)),

with Rs = σ(safety score) and Rh = σ(helpfulness score). The logit undoes the sigmoid after the
choice is made on probabilities; whitening keeps the reward scale stable for PPO. The KL penalty
(R = R̃c − β·KL) is applied afterwards by `alignment.rl.functional.kl_penalised_rewards`.

`safety_cap` (not in the paper, off by default) replaces Rs by min(Rs, cap) wherever Rs is used.
On a policy that already refuses every harmful prompt, the uncapped Rs ranks refusals by how
emphatic they are; capped, every refusal the safety RM is sure of scores the same and only answers
it doubts are pushed down. On its own that did not stop PPO turning against benign requests on the
gym; with as many borderline prompts as harmful ones it kept safety (docs/results/rl.md).
"""

from __future__ import annotations

import torch
from torch import Tensor

from alignment.rl.functional import RunningMoments, whiten

PAPER_THRESHOLD = 0.15


def logit(p: Tensor, eps: float = 1e-6) -> Tensor:
    """log(p / (1 − p)) with p clamped to [eps, 1 − eps] so saturated probabilities stay finite."""
    if not 0 < eps < 0.5:
        raise ValueError(f"eps must be in (0, 0.5), got {eps}")
    p = p.clamp(eps, 1 - eps)
    return torch.log(p) - torch.log1p(-p)


def _safety_rows(
    helpful_scores: Tensor, safety_scores: Tensor, is_safety, threshold: float, safety_cap: float | None
) -> tuple[Tensor, Tensor, Tensor]:
    """(Rh, Rs capped, use_safety) after validating the inputs."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold is a probability and must be in (0, 1), got {threshold}")
    if safety_cap is not None and not threshold <= safety_cap < 1:
        raise ValueError(f"safety_cap must be in [threshold {threshold}, 1), got {safety_cap}")
    is_safety = torch.as_tensor(is_safety, dtype=torch.bool, device=safety_scores.device)
    if not helpful_scores.shape == safety_scores.shape == is_safety.shape:
        raise ValueError(
            "helpful_scores, safety_scores and is_safety must have equal shapes, got "
            f"{tuple(helpful_scores.shape)}, {tuple(safety_scores.shape)}, {tuple(is_safety.shape)}"
        )
    dtype = torch.promote_types(safety_scores.dtype, torch.float32)
    rh, rs = torch.sigmoid(helpful_scores.to(dtype)), torch.sigmoid(safety_scores.to(dtype))
    use_safety = is_safety | (rs < threshold)
    return rh, (rs if safety_cap is None else rs.clamp(max=safety_cap)), use_safety


def combine_rewards(
    helpful_scores: Tensor,
    safety_scores: Tensor,
    is_safety,
    threshold: float = PAPER_THRESHOLD,
    safety_cap: float | None = None,
) -> Tensor:
    """Rc as a probability: σ(safety score) on safety prompts or unsafe-looking responses, else σ(helpful)."""
    rh, rs, use_safety = _safety_rows(helpful_scores, safety_scores, is_safety, threshold, safety_cap)
    return torch.where(use_safety, rs, rh)


def combined_reward(
    helpful_scores: Tensor,
    safety_scores: Tensor,
    is_safety,
    threshold: float = PAPER_THRESHOLD,
    running: RunningMoments | None = None,
    safety_cap: float | None = None,
) -> tuple[Tensor, dict]:
    """R̃c = whiten(logit(Rc)); whitened over this batch, or by `running` (updated with it first).

    A batch of one whitens to 0 on its own, so single-prompt batches need `running`.
    Stats: `safety_share` (rows that took the safety score) and `rc_mean` (mean Rc).
    """
    rh, rs, use_safety = _safety_rows(helpful_scores, safety_scores, is_safety, threshold, safety_cap)
    rc = torch.where(use_safety, rs, rh)
    z = logit(rc)
    if running is None:
        reward = whiten(z)
    else:
        running.update(z)
        reward = running.whiten(z)
    stats = {"safety_share": use_safety.float().mean().item(), "rc_mean": rc.mean().item()}
    return reward, stats
