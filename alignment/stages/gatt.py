"""Ghost Attention (Llama 2 §3.3): teach a model to keep a system instruction for a whole dialogue.

1. Take multi-turn dialogues (only their user turns are used) and draw an instruction for each
   from the gym's instruction set: a single kind (case, sign-off, figure, opening, length, bullets,
   language, hobby) or, with `combine_probability`, a combination of two of different kinds.
2. Append the instruction to every user turn and sample every assistant turn with the current
   model, turn by turn, batched across dialogues, feeding back its own answers (best of K by the
   reward models when `samples_per_turn` > 1).
3. Build the training dialogue: the instruction only in the first turn, as the system message
   (half the time in its short form, "Figure: Napoleon"), the user turns without it, the sampled
   answers kept. Train with the SFT loss on the last assistant turn only: every earlier token,
   earlier assistant turns included, is masked, because those answers were sampled with the
   instruction in view and the training input no longer shows it.
4. Evaluate adherence by turn index (1 to 20 turns) with the gold checker, before and after
   (alignment/gatt/evaluation.py), as a table in the summary and `plots/gatt_adherence.png`.

Training examples: one per dialogue, loss on its last answer (the paper's recipe, `examples: last`).
The gym's dialogues have 2 to 8 turns, so the last answers already sit at every depth. `examples:
every_prefix` also emits each shorter prefix (loss on that prefix's last answer): n times the
examples from the same sampling, every sampled answer trained on once, at a cost of n times the
training tokens.

Resume: the sampled dialogues are cached turn by turn (`gatt_sampling_state.json`, then
`gatt_data.jsonl`), the fine-tune checkpoints like any stage's, its finished weights are saved
(`trainable.safetensors`), and both evaluations are cached.
"""

from __future__ import annotations

import dataclasses
import json
import random
from dataclasses import dataclass
from typing import Literal

import torch

from alignment import distributed
from alignment.answers import answer, sampling_for
from alignment.data.records import Dialogue
from alignment.errors import PaddockError
from alignment.gatt.dialogues import (
    SEPARATOR,
    instruction_pools,
    pick,
    plan_dialogues,
    select_examples,
    training_dialogue,
)
from alignment.gatt.evaluation import (
    GAttEvalConfig,
    adherence_table,
    context_fits,
    context_limit,
    converse,
    evaluate_model,
    plot_adherence,
    user_turns,
)
from alignment.gym.graders import check_instruction
from alignment.recipes.config import RecipeError, check_range, join, setting
from alignment.recipes.schema import StageConfig
from alignment.runs import write_atomic, write_json
from alignment.stages.common import StageContext, data_path, finish_stage, load_records
from alignment.stages.sft import FinetuneConfig, finetune
from alignment.training.checkpoint import load_trainable, save_file_atomic, trainable_state
from safety.rewards import RewardModelsConfig


@dataclass(kw_only=True)
class GAttConfig(StageConfig):
    """Ghost Attention: sample with the instruction on every user turn, train with it only in the
    first turn's system message and the loss on the last answer (Llama 2 §3.3)."""

    instructions: str = setting(
        "GAtt instruction file (gym format: id, text, short, checks, split).",
        default="data/gym/gatt_instructions.jsonl",
    )
    instruction_split: str = setting(
        "Only instructions of this split are trained on (the gym holds some out for `test`).", default="train"
    )
    combine_probability: float = setting(
        "Chance that a dialogue's instruction is a combination of two instructions of different kinds.",
        default=0.3,
    )
    combinations: Literal["random", "gym"] = setting(
        "`random`: pair two single-check instructions of different kinds at random (never a pair the "
        "gym holds out for test); `gym`: draw from the instruction file's own two-check instructions.",
        default="random",
    )
    short_form_probability: float = setting(
        "Chance that the training system message is the instruction's short form ('Figure: Napoleon') "
        "instead of its full text (paper: half the time). Sampling always appends the full text.",
        default=0.5,
    )
    n_dialogues: int = setting(
        "Dialogues sampled and trained on (drawn from the training rows; all if fewer).", default=64
    )
    max_turns: int = setting("User turns kept per dialogue (longer dialogues are cut).", default=8)
    samples_per_turn: int = setting(
        "K answers sampled per turn; the best is kept (by the reward models and/or the gold checker, "
        "see `reward_models`, `gold_select`). 1: the single sample is kept.",
        default=1,
    )
    reward_models: RewardModelsConfig | None = setting(
        "Reward models ranking the K samples of a turn (combined by Llama 2's rule); null: no RM.",
        default=None,
    )
    gold_select: bool = setting(
        "Prefer samples that pass the gym's gold instruction checker when picking among K (a gold "
        "grader used as a training signal; off by default). Ties go to the reward, then the earliest.",
        default=False,
    )
    gold_filter: bool = setting(
        "Train only on examples whose last (trained) answer passes the gold instruction checker (a gold "
        "grader used as a training signal; off by default, as in the paper).",
        default=False,
    )
    temperature: float = setting("Sampling temperature for the assistant turns.", default=0.7)
    top_p: float = setting("Nucleus sampling cut (1.0: none).", default=1.0)
    max_new_tokens: int = setting("Answer length cap per sampled turn.", default=96)
    examples: Literal["last", "every_prefix"] = setting(
        "`last`: one training example per dialogue, loss on its last answer (paper); `every_prefix`: "
        "also one per shorter prefix, loss on that prefix's last answer.",
        default="last",
    )
    eval_examples: int = setting(
        "Held-out gold dialogues (the data's test rows) for the fine-tune's eval loss on their last "
        "answer, with the instruction only in the system message.",
        default=32,
    )
    chat_style: Literal["template", "llama2"] = setting(
        "Chat format for sampling, training and evaluation.", default="template"
    )
    generation_batch_size: int = setting("Dialogues per generation batch (each gives K rows).", default=16)
    finetune: FinetuneConfig = setting(
        "How the model is fine-tuned on the GAtt examples (loss on the last answer only). A sampled "
        "dialogue ends before the turn whose prompt plus max_new_tokens exceeds `finetune.max_length`.",
        default_factory=FinetuneConfig,
    )
    eval: GAttEvalConfig | None = setting(
        "Adherence by turn on held-out dialogues before and after training; null: skip.",
        default_factory=GAttEvalConfig,
    )

    def check_config(self, path: str) -> None:
        super().check_config(path)
        for key in (
            "n_dialogues",
            "max_turns",
            "samples_per_turn",
            "max_new_tokens",
            "generation_batch_size",
        ):
            check_range(getattr(self, key), join(path, key), low=1)
        for key in ("combine_probability", "short_form_probability"):
            check_range(getattr(self, key), join(path, key), low=0, high=1)
        check_range(self.temperature, join(path, "temperature"), low=0)
        check_range(self.top_p, join(path, "top_p"), low=0, high=1)
        if self.samples_per_turn > 1 and self.reward_models is None and not self.gold_select:
            where = join(path, "samples_per_turn")
            raise RecipeError(
                f"{where}: {self.samples_per_turn} samples per turn need a way to pick one: set "
                "`reward_models` or `gold_select: true`",
                where,
            )


# ---------------------------------------------------------------------------------------------
# Sampling


def sample_dialogues(ctx: StageContext, model, tokenizer, plan: list[dict], scorer=None) -> list[dict]:
    """Every assistant turn of every planned dialogue, sampled with the instruction on each user turn;
    progress is cached after every turn, so a killed stage resumes at the next one."""
    cfg: GAttConfig = ctx.stage
    state_file = ctx.dir.root / "gatt_sampling_state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    answers = state.get("answers") or [[] for _ in plan]
    samples: dict[str, list] = state.get("samples", {})  # "dialogue/turn" -> K samples with scores
    k = cfg.samples_per_turn
    autocast = ctx.autocast_on
    openings: list[list[dict]] = [[] for _ in plan]
    users = [[u + SEPARATOR + p["instruction"]["text"] for u in p["users"]] for p in plan]
    limit = min(cfg.finetune.max_length, context_limit(model, None))
    fits = context_fits(tokenizer, cfg.chat_style, limit, cfg.max_new_tokens)

    def respond(indices, conversations, turn):
        sampling = sampling_for(
            tokenizer,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            n=k,
            seed=ctx.seed * 7919 + 100 + turn,
        )
        kwargs = {"progress": f"GAtt sampling, turn {turn + 1}"} if ctx.recipe.logging.progress else {}
        texts = answer(
            ctx.sampler(model),
            tokenizer,
            conversations,
            sampling,
            cfg.chat_style,
            autocast=autocast,
            batch_size=cfg.generation_batch_size,
            split=True,
            **kwargs,
        ).texts
        rewards = None
        if k > 1 and cfg.reward_models is not None:
            helpfulness = torch.zeros(len(texts), dtype=torch.bool)  # instructions, not safety prompts
            repeated = [c for c in conversations for _ in range(k)]
            rewards = scorer(repeated, texts, helpfulness)["reward"].tolist()
        kept = []
        for row, i in enumerate(indices):
            group = texts[row * k : (row + 1) * k]
            followed = [check_instruction(plan[i]["instruction"], t) for t in group]
            group_rewards = rewards[row * k : (row + 1) * k] if rewards is not None else None
            j = pick(group_rewards, followed if cfg.gold_select else None)
            kept.append(group[j])
            if k > 1:
                samples[f"{i}/{turn}"] = [
                    {"text": t, "followed": f, **({"reward": group_rewards[s]} if group_rewards else {})}
                    for s, (t, f) in enumerate(zip(group, followed, strict=True))
                ]
        return kept

    def save_progress(turn, answers_so_far):
        write_atomic(state_file, json.dumps({"answers": answers_so_far, "samples": samples}))

    answers = converse(openings, users, respond, cfg.max_turns, fits, answers=answers, on_turn=save_progress)
    out = []
    for p, texts in zip(plan, answers, strict=True):
        if not texts:
            continue  # even the first turn did not fit finetune.max_length
        sampled = []
        for t, text in enumerate(texts):
            sampled += [
                {"role": "user", "content": users[p["index"]][t]},
                {"role": "assistant", "content": text},
            ]
        out.append(
            {
                **{key: p[key] for key in ("index", "instruction", "system_form")},
                "sampled": sampled,
                "training": training_dialogue(sampled, p["instruction"]["text"], p["system"]),
                "followed": [check_instruction(p["instruction"], text) for text in texts],
                "samples": [samples.get(f"{p['index']}/{t}") for t in range(len(texts))] if k > 1 else None,
            }
        )
    return out


SAMPLING_KEYS = (
    "instructions", "instruction_split", "combine_probability", "combinations", "short_form_probability",
    "n_dialogues", "max_turns", "samples_per_turn", "reward_models", "gold_select", "temperature", "top_p",
    "max_new_tokens", "chat_style",
)  # fmt: skip


def sampling_settings(ctx: StageContext) -> dict:
    """Everything the sampled data depends on; cached data is only reused under the same settings."""
    cfg: GAttConfig = ctx.stage
    settings = {key: getattr(cfg, key) for key in SAMPLING_KEYS}
    if cfg.reward_models is not None:
        settings["reward_models"] = dataclasses.asdict(cfg.reward_models)
    return {**settings, "max_length": cfg.finetune.max_length, "seed": ctx.seed, "init": str(ctx.init)}


def check_cached_settings(ctx: StageContext, path, settings: dict) -> None:
    saved = json.loads(path.read_text()).get("settings") if path.is_file() else None
    if saved != json.loads(json.dumps(settings)):
        differ = sorted(k for k in settings if (saved or {}).get(k) != json.loads(json.dumps(settings[k])))
        raise PaddockError(
            f"stage {ctx.stage.name}: {ctx.dir.root} holds GAtt data sampled with other settings "
            f"(differing: {', '.join(differ) or 'unknown'}); delete that directory to sample again"
        )


def sampled_data(ctx: StageContext, model, tokenizer, train_rows, scorer=None) -> list[dict]:
    """The stage's GAtt dialogues, sampled once and reused from `gatt_data.jsonl` when present (and
    sampled with the same settings, recorded in `gatt_data_settings.json`)."""
    cfg: GAttConfig = ctx.stage
    data_file = ctx.dir.root / "gatt_data.jsonl"
    settings_file = ctx.dir.root / "gatt_data_settings.json"
    settings = sampling_settings(ctx)
    state_file = ctx.dir.root / "gatt_sampling_state.json"
    if data_file.is_file() or state_file.is_file():
        check_cached_settings(ctx, settings_file, settings)
    if data_file.is_file():
        return [json.loads(line) for line in data_file.read_text().splitlines() if line.strip()]
    write_json(settings_file, {"settings": settings})
    rows = [json.loads(line) for line in data_path(cfg.instructions).read_text().splitlines() if line.strip()]
    singles, combos = instruction_pools(rows, cfg.instruction_split, cfg.combinations)
    if not singles:
        raise PaddockError(
            f"stage {cfg.name}: no `{cfg.instruction_split}` single-check instructions in {cfg.instructions}"
        )
    dialogues = [r for r in train_rows if user_turns(r.messages)]
    rng = random.Random(ctx.seed * 1_000_003 + 17)
    if len(dialogues) > cfg.n_dialogues:
        dialogues = rng.sample(dialogues, cfg.n_dialogues)
    plan = plan_dialogues(
        [user_turns(d.messages)[: cfg.max_turns] for d in dialogues],
        singles,
        combos if cfg.combine_probability > 0 else [],
        cfg.combine_probability,
        cfg.short_form_probability,
        seed=ctx.seed,
    )
    print(
        f"[{cfg.name}] sampling {len(plan)} dialogues, up to {cfg.max_turns} turns, K={cfg.samples_per_turn}"
    )
    data = sample_dialogues(ctx, model, tokenizer, plan, scorer)
    write_atomic(data_file, "".join(json.dumps(d) + "\n" for d in data))
    (ctx.dir.root / "gatt_sampling_state.json").unlink(missing_ok=True)
    return data


def data_report(data: list[dict]) -> dict:
    """What was sampled: sizes, forms, and how often the sampled answers followed the instruction
    (the quality of the teacher signal: GAtt can only distil adherence the sampler had)."""
    followed = [f for d in data for f in d["followed"]]
    last = [d["followed"][-1] for d in data]
    return {
        "dialogues": len(data),
        "turns": len(followed),
        "short_form": sum(d["system_form"] == "short" for d in data),
        "combined": sum(len(d["instruction"]["checks"]) > 1 for d in data),
        "sampled_adherence": sum(followed) / max(len(followed), 1),
        "sampled_adherence_last_turn": sum(last) / max(len(last), 1),
    }


# ---------------------------------------------------------------------------------------------
# The runner


def _evaluate(ctx: StageContext, model, tokenizer, when: str) -> dict | None:
    """Adherence by turn, cached in the stage dir (a resumed stage reports the same 'before')."""
    cfg: GAttConfig = ctx.stage
    if cfg.eval is None:
        return None
    cache = ctx.dir.root / f"adherence_{when}.json"
    settings = json.loads(json.dumps({**dataclasses.asdict(cfg.eval), "chat_style": cfg.chat_style}))
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("settings") == settings:
            return cached
    print(
        f"[{cfg.name}] adherence by turn ({when}): {cfg.eval.n_dialogues} dialogues, "
        f"up to {cfg.eval.max_turns} turns"
    )
    summary, transcripts = evaluate_model(
        model,
        tokenizer,
        cfg.eval,
        cfg.chat_style,
        ctx.autocast_on,
        resolve=data_path,
        progress=f"GAtt eval ({when})" if ctx.recipe.logging.progress else None,
        split=True,
        sampler=ctx.sampler(model),
    )
    write_atomic(
        ctx.dir.root / f"adherence_{when}_dialogues.jsonl", "".join(json.dumps(t) + "\n" for t in transcripts)
    )
    summary["settings"] = settings
    write_json(cache, summary)
    return summary


def run_gatt(ctx: StageContext) -> dict:
    cfg: GAttConfig = ctx.stage
    tokenizer = ctx.tokenizer()
    train_rows, test_rows, loaded = load_records(ctx, kind="dialogues")
    model = ctx.trainable_model()
    before = _evaluate(ctx, model, tokenizer, "before")
    scorer = None  # best-of-K by reward needs the RMs; they load only if sampling runs
    if cfg.reward_models is not None and cfg.samples_per_turn > 1:
        scorer = ctx.reward_scorer(cfg.reward_models, tokenizer, cfg.chat_style, split=True)
    data = sampled_data(ctx, model, tokenizer, train_rows, scorer)
    dialogues = [Dialogue(m) for m in select_examples(data, cfg.examples, cfg.gold_filter)]
    if not dialogues:
        why = (
            "no trained answer passed the gold checker (`gold_filter`)" if cfg.gold_filter else "no dialogue"
        )
        raise PaddockError(f"stage {cfg.name}: nothing to train on: {len(data)} sampled dialogues, {why}")
    done_file = ctx.dir.root / "trainable.safetensors"
    if done_file.is_file():
        load_trainable(model, done_file)
        fit = json.loads((ctx.dir.root / "finetune.json").read_text())
        if distributed.is_main():
            print(f"[{ctx.run_name}/{cfg.name}] resumed after its fine-tune ({done_file})")
    else:
        # Sampling may or may not have run in this process (it is cached): reseed, so dropout in the
        # fine-tune draws the same masks either way.
        torch.manual_seed(ctx.seed * 1_000_003 + 29)
        fit = finetune(
            ctx,
            model,
            tokenizer,
            cfg.finetune,
            dialogues,
            test_rows,
            style=cfg.chat_style,
            loss_on="last",
            eval_examples=cfg.eval_examples,
        )
        write_json(ctx.dir.root / "finetune.json", fit)
        save_file_atomic(trainable_state(model), done_file)  # last: marks the fine-tune finished
    after = _evaluate(ctx, model, tokenizer, "after")
    plots = []
    if before or after:
        path = ctx.dir.plots / "gatt_adherence.png"
        plot_adherence(before, after, path, title=f"{ctx.run_name}/{cfg.name}: adherence by turn")
        plots.append(str(path.relative_to(ctx.dir.root)))
    summary = {
        **fit,
        "data": loaded,
        "gatt_data": {
            **data_report(data),
            "examples_mode": cfg.examples,
            "samples_per_turn": cfg.samples_per_turn,
            "gold_select": cfg.gold_select,
            "gold_filter": cfg.gold_filter,
            "train_dialogues": len(dialogues),
        },
        "adherence_before": before,
        "adherence_after": after,
        "adherence_table": adherence_table(before, after) if (before or after) else None,
        "adherence_plots": plots,
    }
    if scorer is not None:
        summary["rm_health"] = scorer.health.summary()
    summary = finish_stage(ctx, model, tokenizer, summary)
    done_file.unlink(missing_ok=True)  # scratch once the model is saved, like the resume checkpoints
    return summary
