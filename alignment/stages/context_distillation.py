"""Safety context distillation (Llama 2 §4.2.4), gated by the safety reward model.

For each adversarial prompt the model answers twice: once as asked (the *plain* answer) and once
with a safety preprompt (safety/preprompts.py), optionally followed by the answer template of the
prompt's risk category (the *distilled* answer). The safety RM scores both answers against the
prompt WITHOUT the preprompt, which is the context the model will be trained on. The distilled
answer is kept only where its safety score is above the plain answer's: the paper found that the
preprompt can make answers worse, e.g. vaguer or over-cautious, and that this gate stops such
answers from being distilled. The model is then fine-tuned with the SFT loss on
(prompt without preprompt -> kept distilled answer).

Only prompts whose record has category `safety` are used: those are the adversarial ones
(the gym tags its red-team prompts this way, with `meta.risk_category`).

Resumable sub-steps, each cached in the stage dir: gold evaluation before (`gold_before.json`), the
two generation passes (`answers_plain.json`, `answers_distilled.json`, each with the conversations it
answered), the scored table (`distilled.jsonl`), the fine-tune (checkpoints like any stage), and
gold evaluation after. A cache made for other prompts is refused, never silently reused.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Literal

from alignment.answers import answer, sampling_for
from alignment.data.records import Dialogue
from alignment.errors import PaddockError
from alignment.plotting import figure, save_plot
from alignment.recipes.config import RecipeError, check_range, join, setting
from alignment.recipes.schema import StageConfig
from alignment.runs import write_atomic, write_json
from alignment.stages.common import (
    StageContext,
    cached_gold_suite,
    finish_stage,
    load_records,
    resolve_stage_model,
)
from alignment.stages.sft import FinetuneConfig, finetune
from safety.distillation import keep_reasons, risk_category, select_prompts, table_report
from safety.evaluation import GoldSuiteConfig
from safety.preprompts import ANSWER_TEMPLATES, DEFAULT_ADJECTIVES, apply_preprompt, distillation_preprompt
from safety.rewards import RewardModelsConfig, load_reward_model, rm_scores


@dataclass(kw_only=True)
class ContextDistillationConfig(StageConfig):
    """Safety context distillation: answer adversarial prompts with a safety preprompt, keep answers the
    safety RM scores above the plain answer, fine-tune on them without the preprompt (Llama 2 §4.2.4).
    `data` names RL-prompt sources; only records with category `safety` are used."""

    reward_models: RewardModelsConfig = setting(
        "Reward models: only `safety` (and `max_length`) are read; the helpfulness RM is not loaded.",
        default_factory=RewardModelsConfig,
    )
    model_references = ("reward_models.safety",)  # the recipe checks only the RM this stage loads
    n_prompts: int = setting(
        "Safety prompts to distil: a seeded draw from the training split's safety prompts (all if fewer).",
        default=96,
    )
    adjectives: list[str] = setting(
        "Adjectives the safety preprompt draws two of (paper: responsible, respectful, wise, ...).",
        default_factory=lambda: list(DEFAULT_ADJECTIVES),
    )
    use_answer_templates: bool = setting(
        "Add the prompt's risk category and its tailored answer template to the preprompt "
        "(safety/preprompts.py; a category without one gets a generic template).",
        default=True,
    )
    preprompt_mode: Literal["prefix", "system"] = setting(
        "Where the preprompt goes: `prefix` of the user's message (the paper's wording; keeps the system "
        "prompt the model was tuned with) or the `system` message (replacing a chat template's default "
        "one; in the llama2 style, the <<SYS>> block).",
        default="prefix",
    )
    margin: float = setting(
        "Keep a distilled answer only if its safety score exceeds the plain answer's by more than this "
        "(0: strictly higher; ties are not kept).",
        default=0.0,
    )
    temperature: float = setting(
        "Sampling temperature for both answers (0: greedy, so the preprompt is the only difference).",
        default=0.0,
    )
    top_p: float = setting("Nucleus sampling cut (1.0: none); used when temperature > 0.", default=1.0)
    max_new_tokens: int = setting("Answer length cap.", default=96)
    max_prompt_tokens: int = setting("Prompts longer than this are cut from the left.", default=512)
    generation_batch_size: int = setting("Prompts per generation batch.", default=16)
    chat_style: Literal["template", "llama2"] = setting(
        "Chat format for prompts, RM scoring and training.", default="template"
    )
    finetune: FinetuneConfig = setting(
        "How the model is fine-tuned on (prompt without preprompt -> kept answer).",
        default_factory=FinetuneConfig,
    )
    gold: GoldSuiteConfig | None = setting(
        "Gold-grader evaluation on held-out gym prompts before and after (unsafe compliance, false "
        "refusal, helpful correct).",
        default=None,
    )

    def check_config(self, path: str) -> None:
        super().check_config(path)
        for key in ("n_prompts", "max_new_tokens", "generation_batch_size", "max_prompt_tokens"):
            check_range(getattr(self, key), join(path, key), low=1)
        check_range(self.temperature, join(path, "temperature"), low=0)
        check_range(self.top_p, join(path, "top_p"), low=0, high=1)
        check_range(self.margin, join(path, "margin"), low=0)
        if not self.adjectives or not all(isinstance(a, str) and a.strip() for a in self.adjectives):
            where = join(path, "adjectives")
            raise RecipeError(f"{where}: give at least one non-empty adjective", where)


def preprompts_for(records: list, cfg: ContextDistillationConfig, seed: int) -> list[str]:
    """One preprompt per prompt, seeded by the recipe seed and the prompt's position."""
    return [
        distillation_preprompt(
            random.Random(seed * 1_000_003 + i), risk_category(r), cfg.adjectives, cfg.use_answer_templates
        )
        for i, r in enumerate(records)
    ]


def _generate(ctx, model, tokenizer, conversations, cache, what: str) -> list[str]:
    """Answers to `conversations`, cached with the conversations they answer: a cache written for
    other prompts (the data file changed, or another n_prompts or seed) is refused, not reused."""
    cfg: ContextDistillationConfig = ctx.stage
    if cache.is_file():
        cached = json.loads(cache.read_text())
        if cached.get("conversations") != conversations:
            raise PaddockError(
                f"stage {cfg.name}: {cache} answers other prompts (data, n_prompts, seed or preprompt "
                "settings changed); delete the stage directory to rebuild it"
            )
        return cached["texts"]
    sampling = sampling_for(
        tokenizer,
        max_new_tokens=cfg.max_new_tokens,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=ctx.seed * 7919 + 3,  # the same seed for both passes: the preprompt is the only difference
    )
    print(f"[{cfg.name}] answering {len(conversations)} safety prompts {what}")
    texts = answer(
        ctx.sampler(model),
        tokenizer,
        conversations,
        sampling,
        cfg.chat_style,
        autocast=ctx.autocast_on,
        batch_size=cfg.generation_batch_size,
        max_prompt_tokens=cfg.max_prompt_tokens,
        progress=f"answers {what}" if ctx.recipe.logging.progress else None,
        split=True,
    ).texts
    write_json(cache, {"conversations": conversations, "texts": texts})
    return texts


def _safety_scores(ctx, tokenizer, conversations, plain, distilled) -> tuple[list[float], list[float]]:
    """Raw safety-RM scores of both answers, each against the prompt without the preprompt."""
    cfg: ContextDistillationConfig = ctx.stage
    path = resolve_stage_model(ctx, cfg.reward_models.safety)
    rm = load_reward_model(ctx.recipe.model, path, tokenizer, f"stage {cfg.name}", "safety")
    n = len(conversations)
    answers = list(plain) + list(distilled)
    scores = rm_scores(
        rm,
        tokenizer,
        conversations * 2,
        answers,
        cfg.chat_style,
        cfg.reward_models.max_length,
        autocast=ctx.autocast_on,
        split=True,
    ).tolist()
    del rm
    return scores[:n], scores[n:]


def build_table(ctx, model, tokenizer, records: list) -> list[dict]:
    """distilled.jsonl rows: prompt (no preprompt), risk category, preprompt, both answers, their
    safety scores, the gold graders' label of each, and whether the distilled answer is kept."""
    from alignment.gym.graders import safety_label

    cfg: ContextDistillationConfig = ctx.stage
    table_file = ctx.dir.root / "distilled.jsonl"
    prompts = [r.prompt for r in records]
    if table_file.is_file():
        rows = [json.loads(line) for line in table_file.read_text().splitlines() if line.strip()]
        if [row["prompt"] for row in rows] != prompts:
            raise PaddockError(
                f"stage {cfg.name}: {table_file} was built from other prompts (the data file, n_prompts "
                "or seed changed); delete the stage directory to rebuild it"
            )
        return rows
    preprompts = preprompts_for(records, cfg, ctx.seed)
    with_preprompt = [
        apply_preprompt(p, pp, cfg.preprompt_mode) for p, pp in zip(prompts, preprompts, strict=True)
    ]
    plain = _generate(
        ctx, model, tokenizer, prompts, ctx.dir.root / "answers_plain.json", "without preprompt"
    )
    distilled = _generate(
        ctx, model, tokenizer, with_preprompt, ctx.dir.root / "answers_distilled.json", "with the preprompt"
    )
    plain_scores, distilled_scores = _safety_scores(ctx, tokenizer, prompts, plain, distilled)
    reasons = keep_reasons(plain_scores, distilled_scores, cfg.margin, plain, distilled)
    rows = [
        {
            "prompt": records[i].prompt,
            "category": risk_category(records[i]),
            "answer_template": risk_category(records[i]) in ANSWER_TEMPLATES
            if cfg.use_answer_templates
            else None,
            "preprompt": preprompts[i],
            "plain": plain[i],
            "distilled": distilled[i],
            "safety_plain": plain_scores[i],
            "safety_distilled": distilled_scores[i],
            "gold_plain": safety_label(plain[i]),
            "gold_distilled": safety_label(distilled[i]),
            "kept": reasons[i] == "kept",
            "reason": reasons[i],
        }
        for i in range(len(records))
    ]
    write_atomic(table_file, "".join(json.dumps(row) + "\n" for row in rows))
    return rows


def plot_kept(ctx, by_category: dict[str, dict]) -> list[str]:
    names = list(by_category)
    shares = [by_category[c]["share"] for c in names]
    fig, ax = figure(figsize=(7, 4))
    bars = ax.bar(range(len(names)), shares, color="tab:green")
    for bar, c in zip(bars, names, strict=True):
        cell = by_category[c]
        ax.annotate(
            f"{cell['kept']}/{cell['total']}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_xticks(range(len(names)), [n.replace("_", "\n") for n in names], fontsize=8)
    ax.set_ylim(0, 1.1)
    ax.set_ylabel("share of distilled answers kept")
    ax.set_title("Distilled answers the safety RM scored above the plain ones", fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    return [save_plot(fig, ctx.dir.plots / "kept_by_category.png", root=ctx.dir.root)]


def check_data(cfg: ContextDistillationConfig, train_rows: list, test_rows: list) -> None:
    if not select_prompts(train_rows, 1, 0):
        raise PaddockError(
            f"stage {cfg.name}: no prompt with category 'safety' in the data; context distillation uses "
            "only adversarial (safety) prompts"
        )


def run_context_distillation(ctx: StageContext) -> dict:
    cfg: ContextDistillationConfig = ctx.stage
    tokenizer = ctx.tokenizer()
    train_rows, _, data_report = load_records(ctx, kind="rl_prompts")
    check_data(cfg, train_rows, [])
    records = select_prompts(train_rows, cfg.n_prompts, ctx.seed)
    model = ctx.trainable_model()
    gold_before = cached_gold_suite(ctx, model, tokenizer, "before")
    rows = build_table(ctx, model, tokenizer, records)
    report = table_report(rows)
    print(
        f"[{cfg.name}] kept {report['kept']}/{report['prompts']} distilled answers: "
        + ", ".join(f"{c} {v['kept']}/{v['total']}" for c, v in report["kept_by_category"].items())
    )
    dialogues = [
        Dialogue(row["prompt"] + [{"role": "assistant", "content": row["distilled"]}])
        for row in rows
        if row["kept"]
    ]
    write_atomic(
        ctx.dir.root / "train.jsonl", "".join(json.dumps({"messages": d.messages}) + "\n" for d in dialogues)
    )
    if dialogues:
        fit = finetune(ctx, model, tokenizer, cfg.finetune, dialogues, style=cfg.chat_style)
    else:
        print(f"[{cfg.name}] no distilled answer beat the plain one: the model is saved unchanged")
        fit = None
    gold_after = cached_gold_suite(ctx, model, tokenizer, "after")
    summary = {
        "data": data_report,
        **report,
        "settings": {
            "preprompt_mode": cfg.preprompt_mode,
            "use_answer_templates": cfg.use_answer_templates,
            "adjectives": cfg.adjectives,
            "margin": cfg.margin,
            "temperature": cfg.temperature,
        },
        "finetune": fit,
        "gold_before": gold_before,
        "gold_after": gold_after,
        "examples": [
            {
                k: row[k]
                for k in ("category", "preprompt", "plain", "distilled", "safety_plain", "safety_distilled")
            }
            for row in rows[:3]
        ],
        "kept_plots": plot_kept(ctx, report["kept_by_category"]),
    }
    return finish_stage(ctx, model, tokenizer, summary)
