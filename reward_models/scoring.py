"""Scoring (prompt, response) pairs with a reward model, chosen and rejected in one forward pass."""

from __future__ import annotations

import torch

from alignment.data.chat_format import encode_dialogue


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


def rewards(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(r_chosen [B], r_rejected [B]) for a pair batch."""
    scores = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.squeeze(-1)
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
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of every pair's chosen and rejected response: two float tensors [N]."""
    model.eval()
    chosen, rejected = [], []
    context = (
        torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    )
    with context:
        for start in range(0, len(pairs), batch_size):
            encoded = [
                encode_pair(p, tokenizer, style, max_length) for p in pairs[start : start + batch_size]
            ]
            c, r = rewards(model, pair_batch(encoded, tokenizer.pad_token_id))
            chosen.append(c.float())
            rejected.append(r.float())
    if not chosen:
        return torch.zeros(0), torch.zeros(0)
    return torch.cat(chosen), torch.cat(rejected)
