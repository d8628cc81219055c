"""Scoring sampled answers with the frozen helpfulness and safety reward models, combined by Llama 2's
rule (safety/reward_combination.py). Rejection sampling and PPO share this scorer.

Answers are re-encoded from text in the RM's chat format (prompt + answer + EOS), exactly as the RMs
saw pairs in training, so an RM trained elsewhere with its own tokenizer scores what it was trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignment import distributed
from alignment.data.chat_format import encode_dialogue
from alignment.placement import module_device
from alignment.precision import bf16_autocast
from alignment.recipes.config import check_range, join, setting
from reward_models.health import ScoreHealth
from safety.reward_combination import combine_rewards, logit


def encode_answer(tokenizer, conversation: list[dict], text: str, style: str, max_length: int) -> list[int]:
    ids = encode_dialogue(
        conversation + [{"role": "assistant", "content": text}], tokenizer, style=style
    ).input_ids
    eos = tokenizer.eos_token_id
    while len(ids) > 1 and ids[-1] != eos and eos in ids[-3:]:  # template separators after EOS
        ids = ids[:-1]
    return ids[-max_length:]


@torch.no_grad()
def rm_scores(
    model,
    tokenizer,
    conversations,
    texts,
    style="template",
    max_length=512,
    batch_size=16,
    autocast=False,
    split=False,
):
    """Raw scalar scores r(x, y) [N] of each (conversation, answer), on the CPU. `split`: under
    several processes each scores its share of the batches and all get every score (as
    alignment/answers.py shares generation)."""
    from reward_models.scoring import right_pad

    rows = [
        encode_answer(tokenizer, c, t, style, max_length) for c, t in zip(conversations, texts, strict=True)
    ]
    context = bf16_autocast(model, autocast)
    device = module_device(model)
    starts = range(0, len(rows), batch_size)
    scores = {}
    with context:
        for index in distributed.my_batches(len(starts)) if split else range(len(starts)):
            ids, mask = right_pad(rows[starts[index] : starts[index] + batch_size], tokenizer.pad_token_id)
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
            scores[index] = logits.squeeze(-1).float().cpu().tolist()  # combined on the CPU
    return torch.tensor(distributed.gather_batches(scores, across_processes=split), dtype=torch.float32)


class RewardScorer:
    """Both RMs and the combination: `scorer(conversations, texts, is_safety)` -> dict of [N] tensors
    `helpful`, `safety` (raw scores), `combined` (probability Rc) and `reward` = logit(Rc)."""

    def __init__(
        self,
        helpful,
        safety,
        tokenizer,
        style="template",
        threshold=0.15,
        max_length=512,
        autocast=False,
        safety_cap=None,
        split=False,
    ):
        self.helpful, self.safety, self.tokenizer = helpful, safety, tokenizer
        self.split = split  # share the scoring among processes (rm_scores)
        self.style, self.threshold, self.max_length, self.autocast = style, threshold, max_length, autocast
        self.safety_cap = safety_cap
        self.health = ScoreHealth()  # collapsed or exploded scores: warned once, flagged in summary.json

    def __call__(self, conversations, texts, is_safety: torch.Tensor) -> dict[str, torch.Tensor]:
        kwargs = dict(style=self.style, max_length=self.max_length, autocast=self.autocast, split=self.split)
        helpful = rm_scores(self.helpful, self.tokenizer, conversations, texts, **kwargs)
        safety = rm_scores(self.safety, self.tokenizer, conversations, texts, **kwargs)
        self.health.check("helpful", helpful, texts)
        self.health.check("safety", safety, texts)
        combined = combine_rewards(
            helpful, safety, is_safety, threshold=self.threshold, safety_cap=self.safety_cap
        )
        return {"helpful": helpful, "safety": safety, "combined": combined, "reward": logit(combined)}


@dataclass(kw_only=True)
class RewardModelsConfig:
    """The frozen reward models that score samples, and Llama 2's rule for combining them."""

    helpful: str = setting(
        "Helpfulness RM: an earlier stage's name or a checkpoint path.", default="rm_helpful"
    )
    safety: str = setting("Safety RM: an earlier stage's name or a checkpoint path.", default="rm_safety")
    threshold: float = setting(
        "Use the safety score when σ(safety score) is below this, even on helpfulness prompts (paper: 0.15).",
        default=0.15,
    )
    max_length: int = setting(
        "Tokens of prompt + answer an RM reads; prompts are cut from the left.", default=512
    )
    safety_cap: float | None = setting(
        "Not in the paper: count σ(safety score) above this as this, so refusals the safety RM is sure of "
        "all score the same and only doubtful answers are pushed down (null: the paper's uncapped score).",
        default=None,
    )

    def check_config(self, path: str) -> None:
        check_range(self.threshold, join(path, "threshold"), low=0, high=1)
        if self.safety_cap is not None:
            check_range(self.safety_cap, join(path, "safety_cap"), low=self.threshold, high=1, high_open=True)


def load_reward_model(model_cfg, path: str, tokenizer, what: str, role: str):
    """A frozen reward model (scalar head) built as `model_cfg` says, padded as `tokenizer` pads;
    `what` (the stage) and `role` name it in the one-line error when it cannot be loaded."""
    from alignment.errors import PaddockError
    from alignment.model_setup import load_frozen

    try:
        model = load_frozen(model_cfg, path, head="reward")
    except (OSError, ValueError) as err:
        raise PaddockError(f"{what}: cannot load the {role} reward model {path}: {err}") from None
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def load_scorer(
    model_cfg,
    cfg: RewardModelsConfig,
    paths: dict[str, str],
    tokenizer,
    style: str,
    autocast: bool,
    what: str,
    split: bool = False,
) -> RewardScorer:
    """Both RMs (`paths`: role -> checkpoint) and Llama 2's combination as `cfg` sets it."""
    models = {
        role: load_reward_model(model_cfg, paths[role], tokenizer, what, role)
        for role in ("helpful", "safety")
    }
    return RewardScorer(
        models["helpful"],
        models["safety"],
        tokenizer,
        style,
        cfg.threshold,
        cfg.max_length,
        autocast,
        safety_cap=cfg.safety_cap,
        split=split,
    )


class LazyScorer:
    """A RewardScorer built on first use: a stage resumed past its scoring never loads the RMs.
    `health` is the loaded scorer's, or a clean record when nothing was scored."""

    def __init__(self, load):
        self._load, self._scorer = load, None

    def __call__(self, conversations, texts, is_safety: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._scorer is None:
            self._scorer = self._load()
        return self._scorer(conversations, texts, is_safety)

    @property
    def health(self) -> ScoreHealth:
        return self._scorer.health if self._scorer is not None else ScoreHealth()
