"""The reward-model margin loss and the RM stage's batching."""

from __future__ import annotations

import math

import pytest
import torch

from reward_models.losses import margin_ranking_loss, pairwise_accuracy
from reward_models.training import collate


def test_margin_loss_hand_worked():
    """-log σ(r_c - r_r - m):
    pair 1: r_c 2, r_r 0, m 0 -> -log σ(2) = log(1 + e^-2) = 0.126928;
    pair 2: r_c 2, r_r 0, m 1 -> -log σ(1) = log(1 + e^-1) = 0.313262 (the margin asks for more);
    pair 3: r_c 0, r_r 0, m 0 -> log 2 = 0.693147."""
    chosen, rejected = torch.tensor([2.0, 2.0, 0.0]), torch.tensor([0.0, 0.0, 0.0])
    margin = torch.tensor([0.0, 1.0, 0.0])
    per_pair = margin_ranking_loss(chosen, rejected, margin, reduction="none")
    expected = [math.log1p(math.exp(-2)), math.log1p(math.exp(-1)), math.log(2)]
    assert per_pair.tolist() == pytest.approx(expected, abs=1e-6)
    assert float(margin_ranking_loss(chosen, rejected, margin)) == pytest.approx(sum(expected) / 3, abs=1e-6)
    assert pairwise_accuracy(chosen, rejected).tolist() == [1.0, 1.0, 0.0]  # a tie is not a win


def test_margin_loss_gradient_pushes_the_pair_apart():
    """d/dr_c of -log σ(d) is -(1 - σ(d)) with d = r_c - r_r - m: at d = 0 it is -0.5."""
    chosen = torch.tensor([1.0], requires_grad=True)
    rejected = torch.tensor([0.0], requires_grad=True)
    margin_ranking_loss(chosen, rejected, torch.tensor([1.0])).backward()
    assert chosen.grad.item() == pytest.approx(-0.5)
    assert rejected.grad.item() == pytest.approx(0.5)


def test_pair_collate_puts_chosen_then_rejected_in_one_batch():
    batch = collate(
        [
            {"chosen": [5, 6, 7], "rejected": [5, 8], "margin": 1.0},
            {"chosen": [9], "rejected": [9, 10, 11, 12], "margin": 0.0},
        ],
        pad_token_id=0,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [9, 0, 0, 0], [5, 8, 0, 0], [9, 10, 11, 12]]
    assert batch["attention_mask"].sum(1).tolist() == [3, 1, 2, 4]
    assert batch["margin"].tolist() == [1.0, 0.0] and batch["pairs"] == batch["num_items"] == 2
