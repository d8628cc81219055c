"""Supervised fine-tuning (Llama 2 §3.1): loss on answer tokens only, optional packing, cosine LR.

Runs on Paddock's own loop (alignment/training/loop.py; why not TRL's SFTTrainer is said there):
the loss is the model's fused linear + cross-entropy on the answer tokens that the chat formatter
marked, so the full logits never exist.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Literal

import torch

from alignment.data.chat_format import IGNORE_INDEX, encode_dialogue
from alignment.errors import PaddockError
from alignment.placement import module_device, to_device
from alignment.recipes.config import setting
from alignment.recipes.schema import StageConfig
from alignment.stages.common import (
    StageContext,
    cached_gold_suite,
    finish_stage,
    load_records,
)
from alignment.training.loop import TrainingConfig, train
from safety.evaluation import GoldSuiteConfig


@dataclass(kw_only=True)
class FinetuneConfig(TrainingConfig):
    """Fine-tuning on dialogues: the loop's settings plus how dialogues become sequences. The SFT
    stage's settings, reused by stages that end in SFT (rejection sampling's pool, Ghost Attention,
    context distillation)."""

    max_length: int = setting("Tokens per sequence; longer dialogues are cut.", default=512)
    packing: bool = setting(
        "Concatenate examples (each ends with EOS, the separator) into full-length sequences.", default=False
    )


@dataclass(kw_only=True)
class SFTConfig(StageConfig, FinetuneConfig):
    """Supervised fine-tuning on dialogues, loss on assistant answers only (Llama 2 §3.1)."""

    chat_style: Literal["template", "llama2"] = setting(
        "`template`: the tokenizer's chat template; `llama2`: [INST] / <<SYS>> format.", default="template"
    )
    eval_examples: int = setting("Held-out examples used for the eval loss (the first N).", default=64)
    gold: GoldSuiteConfig | None = setting(
        "Gold-grader evaluation on held-out gym prompts before and after training (helpful correct, "
        "unsafe compliance, false refusal; set a kind's count to 0 to skip it).",
        default=None,
    )


def encode_all(
    dialogues, tokenizer, cfg: FinetuneConfig, style: str, loss_on: str = "all"
) -> tuple[list[dict], int]:
    """Encoded examples with at least one loss token after truncation; also how many were dropped."""
    examples, dropped = [], 0
    for dialogue in dialogues:
        enc = encode_dialogue(dialogue.messages, tokenizer, style=style, loss_on=loss_on)
        ids, labels = enc.input_ids[: cfg.max_length], enc.labels[: cfg.max_length]
        if all(label == IGNORE_INDEX for label in labels[1:]):
            dropped += 1  # the answer starts past max_length: nothing to learn from this one
            continue
        examples.append({"input_ids": ids, "labels": labels})
    return examples, dropped


def pack(examples: list[dict], max_length: int, seed: int) -> list[dict]:
    """Concatenate shuffled examples and cut into max_length sequences (the paper's packing)."""
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    ids = [t for i in order for t in examples[i]["input_ids"]]
    labels = [t for i in order for t in examples[i]["labels"]]
    return [
        {"input_ids": ids[s : s + max_length], "labels": labels[s : s + max_length]}
        for s in range(0, len(ids) - 1, max_length)
    ]


def collate(batch: list[dict], pad_token_id: int) -> dict:
    """Right-pad to the longest row; `num_items` counts the loss tokens after the causal shift."""
    width = max(len(row["input_ids"]) for row in batch)
    input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for row, example in enumerate(batch):
        n = len(example["input_ids"])
        input_ids[row, :n] = torch.tensor(example["input_ids"])
        labels[row, :n] = torch.tensor(example["labels"])
        mask[row, :n] = 1
    return {
        "input_ids": input_ids,
        "labels": labels,
        "attention_mask": None if bool(mask.all()) else mask,  # unpadded: SDPA's causal fast path
        "num_items": int((labels[:, 1:] != IGNORE_INDEX).sum()),
        "tokens": int(mask.sum()),
    }


def lm_loss(model, batch: dict, num_items: int):
    out = model(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        labels=batch["labels"],
        num_items_in_batch=num_items,
    )
    return out.loss, {}


def token_weighted_loss(model, examples: list[dict], pad_token_id: int, batch_size: int = 8) -> float:
    total, count, device = 0.0, 0, module_device(model)
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = to_device(collate(examples[start : start + batch_size], pad_token_id), device)
            total += float(lm_loss(model, batch, 1)[0])  # num_items=1: the summed loss
            count += batch["num_items"]
    return total / max(count, 1)


def finetune(
    ctx: StageContext,
    model,
    tokenizer,
    cfg: FinetuneConfig,
    train_dialogues,
    test_dialogues=(),
    style: str = "template",
    loss_on: str = "all",
    stage_dir=None,
    eval_examples: int = 64,
) -> dict:
    """Train `model` on dialogues with the SFT loss; returns the loop's final metrics and counts."""
    train_examples, dropped = encode_all(train_dialogues, tokenizer, cfg, style, loss_on)
    test_examples = encode_all(test_dialogues, tokenizer, cfg, style, loss_on)[0][:eval_examples]
    if cfg.packing:
        train_examples = pack(train_examples, cfg.max_length, ctx.seed)
    if not train_examples:
        raise PaddockError(f"stage {ctx.stage.name}: no training example has an answer within max_length")
    stage_dir = stage_dir or ctx.dir
    pad = tokenizer.pad_token_id
    final = train(
        model,
        train_examples,
        lambda batch: collate(batch, pad),
        lm_loss,
        ctx.loop_settings(cfg),
        stage_dir,
        evaluate=(lambda m: {"loss": token_weighted_loss(m, test_examples, pad)}) if test_examples else None,
        description=f"{ctx.run_name}/{ctx.stage.name}",
    )
    return {
        "final": final,
        "train_examples": len(train_examples),
        "test_examples": len(test_examples),
        "dropped_too_long": dropped,
    }


def run_sft(ctx: StageContext) -> dict:
    cfg: SFTConfig = ctx.stage
    tokenizer = ctx.tokenizer()
    train_rows, test_rows, data_report = load_records(ctx, kind="dialogues")
    model = ctx.trainable_model()
    gold_before = cached_gold_suite(ctx, model, tokenizer, "before")
    result = finetune(
        ctx,
        model,
        tokenizer,
        cfg,
        train_rows,
        test_rows,
        style=cfg.chat_style,
        eval_examples=cfg.eval_examples,
    )
    gold_after = cached_gold_suite(ctx, model, tokenizer, "after")
    summary = {**result, "data": data_report, "gold_before": gold_before, "gold_after": gold_after}
    return finish_stage(ctx, model, tokenizer, summary)
