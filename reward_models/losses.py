"""The Llama 2 reward-model loss (§3.2.2): a binary ranking loss with a rating-dependent margin,

    L = -log σ(r(x, y_c) - r(x, y_r) - m(rating)),

so a pair rated "significantly better" must be separated by more than a "negligibly better" one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def margin_ranking_loss(
    chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor | float = 0.0, reduction: str = "mean"
) -> torch.Tensor:
    """chosen, rejected, margin: [B] rewards and margins -> scalar loss (or [B] with reduction="none")."""
    losses = -F.logsigmoid(chosen - rejected - margin)
    if reduction == "none":
        return losses
    return losses.sum() if reduction == "sum" else losses.mean()


def pairwise_accuracy(chosen: torch.Tensor, rejected: torch.Tensor) -> torch.Tensor:
    """1 where the chosen response scores strictly higher, per pair."""
    return (chosen > rejected).float()
