"""Training a reward model on preference pairs (Llama 2 §3.2.2): the encoded pairs, their batches and
the margin ranking loss the fine-tuning loop minimises. The stage is alignment/stages/reward_model.py."""

from __future__ import annotations

import torch

from alignment.data.margins import margin_table, pair_margin
from alignment.placement import module_device, to_device
from reward_models.losses import margin_ranking_loss
from reward_models.scoring import encode_pair, make_pair_batch, rewards


def encode_pairs(pairs, tokenizer, margin: str | dict, style: str, max_length: int) -> list[dict]:
    """Chosen and rejected token ids of each pair, with the pair's margin from the rating table."""
    table = margin_table(margin)
    examples = []
    for pair in pairs:
        chosen, rejected = encode_pair(pair, tokenizer, style, max_length)
        examples.append({"chosen": chosen, "rejected": rejected, "margin": pair_margin(pair, table)})
    return examples


def collate(batch: list[dict], pad_token_id: int, packed: bool = False) -> dict:
    out = make_pair_batch([(ex["chosen"], ex["rejected"]) for ex in batch], pad_token_id, packed)
    out["margin"] = torch.tensor([ex["margin"] for ex in batch], dtype=torch.float32)
    out["num_items"] = len(batch)
    return out


def rm_loss(model, batch: dict, num_items: int):
    chosen, rejected = rewards(model, batch)
    loss = margin_ranking_loss(chosen.float(), rejected.float(), batch["margin"], reduction="sum") / num_items
    chosen, rejected = chosen.detach(), rejected.detach()
    correct = float((chosen > rejected).sum())
    return loss, {"accuracy": correct / num_items, "reward_gap": float((chosen - rejected).sum()) / num_items}


def quick_accuracy(
    model, examples: list[dict], pad_token_id: int, batch_size: int = 16, packed: bool = False
) -> dict:
    correct, total, device = 0, 0, module_device(model)
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = to_device(collate(examples[start : start + batch_size], pad_token_id, packed), device)
            chosen, rejected = rewards(model, batch)
            correct += int((chosen > rejected).sum())
            total += len(chosen)
    return {"accuracy": correct / max(total, 1)}
