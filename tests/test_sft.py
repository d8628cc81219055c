"""SFT data handling: packing and collation."""

from __future__ import annotations

from alignment.data.chat_format import IGNORE_INDEX
from alignment.stages.sft import collate, pack


def test_packing_concatenates_examples_and_keeps_their_labels():
    """Three examples of 3, 4 and 5 tokens (12 in all) packed at length 5 -> 5 + 5 + 2 tokens;
    every token keeps its own label, so prompts stay masked inside packed rows."""
    examples = [
        {"input_ids": [1, 2, 3], "labels": [IGNORE_INDEX, 2, 3]},
        {"input_ids": [4, 5, 6, 7], "labels": [IGNORE_INDEX, IGNORE_INDEX, 6, 7]},
        {"input_ids": [8, 9, 10, 11, 12], "labels": [IGNORE_INDEX, 9, 10, 11, 12]},
    ]
    packed = pack(examples, max_length=5, seed=0)
    assert [len(row["input_ids"]) for row in packed] == [5, 5, 2]
    flat_ids = [t for row in packed for t in row["input_ids"]]
    flat_labels = [t for row in packed for t in row["labels"]]
    assert sorted(flat_ids) == list(range(1, 13))
    label_of = {t: label for ex in examples for t, label in zip(ex["input_ids"], ex["labels"], strict=True)}
    assert flat_labels == [label_of[t] for t in flat_ids]
    assert pack(examples, 5, seed=0) == packed and pack(examples, 5, seed=1) != packed


def test_collate_pads_right_and_counts_shifted_loss_tokens():
    """Rows [7, 8, 9] (labels -, 8, 9) and [5, 6] (labels -, 6): padded to 3; after the causal
    shift the loss tokens are 8, 9 and 6 -> num_items 3; 5 real tokens."""
    batch = collate(
        [
            {"input_ids": [7, 8, 9], "labels": [IGNORE_INDEX, 8, 9]},
            {"input_ids": [5, 6], "labels": [IGNORE_INDEX, 6]},
        ],
        pad_token_id=0,
    )
    assert batch["input_ids"].tolist() == [[7, 8, 9], [5, 6, 0]]
    assert batch["labels"].tolist() == [[IGNORE_INDEX, 8, 9], [IGNORE_INDEX, 6, IGNORE_INDEX]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["num_items"] == 3 and batch["tokens"] == 5
    full = collate([{"input_ids": [1, 2], "labels": [1, 2]}], pad_token_id=0)
    assert full["attention_mask"] is None  # unpadded batches take SDPA's causal fast path
