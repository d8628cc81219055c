"""Packed reward-model batches (all sequences in one row, no padding) against padded ones: same
rewards, loss and gradients; the length grouping of packed attention; the fused optimizer."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaForSequenceClassification

from alignment.base_model import packing
from alignment.base_model.modeling import PaddockLlamaForReward
from alignment.base_model.packing import Packing, length_groups
from alignment.training.loop import LoopSettings, make_optimizer
from reward_models.losses import margin_ranking_loss
from reward_models.scoring import pack_pairs, pair_batch, rewards, supports_packing
from reward_models.training import collate, rm_loss
from tests.conftest import TINY_VOCAB, tiny_config

# Chosen and rejected lengths of four pairs: mixed, including a one-token sequence.
LENGTHS = [(7, 12), (3, 1), (15, 9), (5, 5)]


def tiny_reward_model(**overrides) -> PaddockLlamaForReward:
    torch.manual_seed(0)
    return PaddockLlamaForReward(tiny_config(**overrides)).train()


def encoded_pairs(lengths=LENGTHS) -> list[tuple[list[int], list[int]]]:
    generator = torch.Generator().manual_seed(1)
    draw = lambda n: torch.randint(3, TINY_VOCAB, (n,), generator=generator).tolist()  # noqa: E731
    return [(draw(c), draw(r)) for c, r in lengths]


def examples(lengths=LENGTHS) -> list[dict]:
    return [
        {"chosen": c, "rejected": r, "margin": m}
        for (c, r), m in zip(encoded_pairs(lengths), [1.0, 0.0, 1 / 3, 2 / 3], strict=True)
    ]


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    loss, stats = rm_loss(model, batch, batch["num_items"])
    loss.backward()
    return loss.detach(), stats, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("overhead", [packing.GROUP_OVERHEAD, 0.0, 1e12], ids=["default", "many", "one"])
@pytest.mark.parametrize("kv_heads", [1, 2, 4], ids=["mqa", "gqa", "mha"])
def test_packed_batch_gives_the_padded_rewards_loss_and_gradients(monkeypatch, overhead, kv_heads):
    """fp32: the packed path (one row, positions restarting per sequence, attention per sequence,
    any number of length groups) equals the right-padded batch to float rounding."""
    monkeypatch.setattr(packing, "GROUP_OVERHEAD", overhead)
    model = tiny_reward_model(num_key_value_heads=kv_heads)
    padded, packed = collate(examples(), 0), collate(examples(), 0, packed=True)
    assert packed["input_ids"].shape == (1, sum(c + r for c, r in LENGTHS))
    assert packed["tokens"] == padded["tokens"]
    with torch.no_grad():
        for got, expected in zip(rewards(model, packed), rewards(model, padded), strict=True):
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    loss_pad, stats_pad, grads_pad = loss_and_grads(model, padded)
    loss_pack, stats_pack, grads_pack = loss_and_grads(model, packed)
    torch.testing.assert_close(loss_pack, loss_pad, atol=1e-6, rtol=1e-5)
    assert stats_pack == pytest.approx(stats_pad, abs=1e-6)
    assert grads_pack.keys() == grads_pad.keys()
    for name, grad in grads_pad.items():
        torch.testing.assert_close(grads_pack[name], grad, atol=1e-6, rtol=1e-4, msg=name)


def test_packed_rewards_match_transformers_sequence_classification():
    """Each packed sequence scores what transformers' LlamaForSequenceClassification gives it alone."""
    torch.manual_seed(0)
    reference = LlamaForSequenceClassification(tiny_config(num_labels=1)).eval()
    ours = PaddockLlamaForReward(tiny_config()).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    rows = [row for pair in encoded_pairs() for row in pair]
    expected = torch.cat([reference(torch.tensor([row])).logits for row in rows])
    ids = torch.tensor([[t for row in rows for t in row]])
    got = ours(input_ids=ids, sequence_lengths=[len(row) for row in rows]).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_packed_bf16_autocast_stays_close_to_padded():
    """Under bf16 autocast the two layouts round differently but agree to bf16 precision."""
    model = tiny_reward_model()
    encoded = encoded_pairs()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        padded = torch.cat(rewards(model, pair_batch(encoded, 0))).float()
        packed = torch.cat(rewards(model, pack_pairs(encoded))).float()
    torch.testing.assert_close(packed, padded, atol=3e-2, rtol=3e-2)
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        chosen, rejected = rewards(model, pack_pairs(encoded))
    margin_ranking_loss(chosen.float(), rejected.float(), torch.zeros(len(encoded))).backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_pack_pairs_layout():
    batch = collate(
        [
            {"chosen": [5, 6, 7], "rejected": [5, 8], "margin": 1.0},
            {"chosen": [9], "rejected": [9, 10, 11, 12], "margin": 0.0},
        ],
        pad_token_id=0,
        packed=True,
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7, 9, 5, 8, 9, 10, 11, 12]]
    assert batch["sequence_lengths"] == [3, 1, 2, 4]
    assert batch["pairs"] == batch["num_items"] == 2 and batch["tokens"] == 10
    assert batch["margin"].tolist() == [1.0, 0.0]


def test_packing_positions_and_validation():
    packing = Packing([3, 1, 2], "cpu")
    assert packing.positions.tolist() == [[0, 1, 2, 0, 0, 1]]
    assert packing.ends.tolist() == [2, 3, 5]
    model = tiny_reward_model().eval()
    ids = torch.randint(3, TINY_VOCAB, (1, 6))
    with pytest.raises(ValueError, match="sum"):
        model(input_ids=ids, sequence_lengths=[3, 2])
    with pytest.raises(ValueError, match="excludes"):
        model(input_ids=ids, attention_mask=torch.ones_like(ids), sequence_lengths=[3, 1, 2])
    with pytest.raises(ValueError, match="positive"):
        Packing([3, 0], "cpu")


def test_length_groups_split_sorted_lengths_into_contiguous_runs():
    lengths = [50, 130, 52, 128, 51, 49]
    groups = length_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert [sorted(lengths[i] for i in g) for g in groups] == [[128, 130], [49, 50, 51, 52]]
    assert length_groups(lengths, overhead=1e12) == [[1, 3, 2, 4, 0, 5]]  # one group, longest first
    assert len(length_groups(lengths, overhead=0)) == len(set(lengths))


def test_supports_packing_sees_through_peft():
    peft = pytest.importorskip("peft")
    model = tiny_reward_model()
    assert supports_packing(model)
    assert not supports_packing(LlamaForSequenceClassification(tiny_config(num_labels=1)))
    wrapped = peft.get_peft_model(
        model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["score"])
    )
    assert supports_packing(wrapped)
    padded, packed = collate(examples(), 0), collate(examples(), 0, packed=True)
    with torch.no_grad():
        torch.testing.assert_close(
            torch.cat(rewards(wrapped, packed)), torch.cat(rewards(wrapped, padded)), atol=1e-5, rtol=1e-5
        )


def test_fused_adamw_matches_the_default_implementation():
    """make_optimizer picks the fused AdamW kernel; three steps match torch's default AdamW."""
    settings = LoopSettings(learning_rate=1e-3, epochs=1, batch_size=1)
    models = [tiny_reward_model(), tiny_reward_model()]
    fused = make_optimizer(models[0], settings)
    assert fused.param_groups[0]["fused"]
    plain = make_optimizer(models[1], settings)
    for group in plain.param_groups:
        group["fused"] = None  # torch's default (foreach or per-tensor) path
    batch = collate(examples(), 0, packed=True)
    for _ in range(3):
        for model, optimizer in zip(models, (fused, plain), strict=True):
            loss_and_grads(model, batch)
            optimizer.step()
    for (name, a), b in zip(models[0].named_parameters(), models[1].parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5, msg=name)


def test_packed_batch_under_gradient_checkpointing_gives_the_same_gradients():
    model = tiny_reward_model()
    packed = collate(examples(), 0, packed=True)
    loss, _, grads = loss_and_grads(model, packed)
    model.activation_checkpointing_enable()
    loss_ckpt, _, grads_ckpt = loss_and_grads(model, packed)
    torch.testing.assert_close(loss_ckpt, loss)
    for name, grad in grads.items():
        torch.testing.assert_close(grads_ckpt[name], grad, atol=1e-6, rtol=1e-5, msg=name)
