"""Scoring (prompt, response) pairs with a reward model, chosen and rejected in one forward pass.

Two batch layouts. Padded (`pair_batch`): a [2B, T] batch, right-padded, for any sequence
classifier. Packed (`pack_pairs`): all 2B sequences back to back in one [1, N] row with no padding,
for Paddock's reward model (`supports_packing`), which restarts positions at every sequence and
attends within each one, so the rewards are those of the padded batch (tests/test_rm_packing.py)
while no projection or MLP runs on padding (38 % of the gym's padded 8-pair batches).
"""

from __future__ import annotations

import torch

from alignment.data.chat_format import encode_dialogue
from alignment.placement import module_device, to_device
from alignment.precision import device_type


def encode_pair(
    pair, tokenizer, style: str = "template", max_length: int = 512
) -> tuple[list[int], list[int]]:
    """Token ids of prompt + chosen and prompt + rejected, each ending in the answer's EOS; prompts
    too long for max_length are cut from the left so the answer (what is judged) stays whole."""
    out = []
    for answer in (pair.chosen, pair.rejected):
        ids = encode_dialogue(
            pair.prompt + [{"role": "assistant", "content": answer}], tokenizer, style=style
        ).input_ids
        eos = tokenizer.eos_token_id
        # Templates may append a separator after EOS; the reward is read at the last real token,
        # which should be the end of the answer.
        while len(ids) > 1 and ids[-1] != eos and eos in ids[-3:]:
            ids = ids[:-1]
        out.append(ids[-max_length:])
    return out[0], out[1]


def right_pad(rows: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def pair_batch(encoded: list[tuple[list[int], list[int]]], pad_token_id: int) -> dict:
    """Chosen rows then rejected rows in one [2B, T] batch: one forward pass scores both."""
    rows = [c for c, _ in encoded] + [r for _, r in encoded]
    input_ids, attention_mask = right_pad(rows, pad_token_id)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pairs": len(encoded),
        "tokens": int(attention_mask.sum()),
    }


def pack_pairs(encoded: list[tuple[list[int], list[int]]]) -> dict:
    """Chosen sequences then rejected ones, back to back in one [1, N] row, no padding."""
    rows = [c for c, _ in encoded] + [r for _, r in encoded]
    input_ids = torch.tensor([[token for row in rows for token in row]], dtype=torch.long)
    return {
        "input_ids": input_ids,
        "sequence_lengths": [len(row) for row in rows],
        "pairs": len(encoded),
        "tokens": input_ids.shape[1],
    }


def supports_packing(model) -> bool:
    """Whether `model` takes packed input: Paddock's reward model, bare or wrapped by PEFT."""
    from alignment.base_model.modeling import PaddockLlamaForReward

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return isinstance(base, PaddockLlamaForReward)


def make_pair_batch(encoded, pad_token_id: int, packed: bool) -> dict:
    return pack_pairs(encoded) if packed else pair_batch(encoded, pad_token_id)


def rewards(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen [B], r_rejected [B]) for a pair batch, padded or packed, already on the model's device."""
    if "sequence_lengths" in batch:
        output = model(input_ids=batch["input_ids"], sequence_lengths=batch["sequence_lengths"])
    else:
        output = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    scores = output.logits.squeeze(-1)
    return scores[: batch["pairs"]], scores[batch["pairs"] :]


@torch.no_grad()
def score_pairs(
    model,
    tokenizer,
    pairs,
    batch_size: int = 16,
    style: str = "template",
    max_length: int = 512,
    autocast: bool = False,
    packed: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of every pair's chosen and rejected response: two float tensors [N]. Batches are
    packed when the model supports it (`packed=None`), or as told."""
    model.eval()
    packed = supports_packing(model) if packed is None else packed
    chosen, rejected = [], []
    # Off means off: scoring inside a caller's autocast still runs in the model's own precision.
    device = device_type(model)
    context = torch.autocast(device, dtype=torch.bfloat16, enabled=autocast)
    with context:
        for start in range(0, len(pairs), batch_size):
            encoded = [
                encode_pair(p, tokenizer, style, max_length) for p in pairs[start : start + batch_size]
            ]
            batch = to_device(make_pair_batch(encoded, tokenizer.pad_token_id, packed), module_device(model))
            c, r = rewards(model, batch)
            chosen.append(c.float())
            rejected.append(r.float())
    if not chosen:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(chosen), torch.cat(rejected)
