"""The evaluation stage: every policy the run produced (and the base model) on the same held-out gym
prompts, scored by the gold graders and the reward models, then the run report.

Each model's results are cached in the stage dir (eval-<stage>.json), so a resumed evaluation only
scores the models it has not scored yet.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alignment import distributed
from alignment.plotting import save_plot
from alignment.recipes.config import setting
from alignment.recipes.schema import StageConfig
from alignment.runs import write_atomic, write_json
from alignment.stages.common import StageContext, data_path
from safety.evaluation import GoldSuiteConfig, suite_rows
from safety.gold_compare import gold_table
from safety.rewards import RewardModelsConfig

POLICY_STAGES = ("sft", "rejection_sampling", "ppo", "gatt", "context_distillation")


@dataclass(kw_only=True)
class EvaluationConfig(StageConfig):
    """Gold-grader and reward-model evaluation of each stage's model, and the run report."""

    models: list[str] | None = setting(
        "Stages whose models to evaluate. Default: every earlier SFT/RS/PPO/GAtt/distillation stage.",
        default=None,
    )
    include_base: bool = setting("Evaluate the recipe's base model too (as `base`).", default=True)
    reward_models: RewardModelsConfig = setting(
        "Reward models that score every answer (and their combination threshold).",
        default_factory=RewardModelsConfig,
    )
    gold: GoldSuiteConfig = setting(
        "Held-out gym prompts and answer length.", default_factory=GoldSuiteConfig
    )
    chat_style: Literal["template", "llama2"] = setting("Chat format of prompts.", default="template")

    def upstream_stages(self, earlier: list) -> list[str]:
        """The stages whose models this evaluation compares (for the stage's fingerprint)."""
        return self.models or [s.name for s in earlier if s.type in POLICY_STAGES]


def models_to_evaluate(ctx: StageContext) -> dict[str, str]:
    cfg: EvaluationConfig = ctx.stage
    names = [s.name for s in ctx.recipe.stages]
    chosen = cfg.upstream_stages(ctx.recipe.stages[: names.index(cfg.name)])  # the recipe checked them
    out = {"base": ctx.recipe.model.name_or_path} if cfg.include_base else {}
    out.update({name: str(ctx.run_dir / name / "model") for name in chosen})
    return out


def run_evaluation(ctx: StageContext) -> dict:
    from alignment.model_setup import load_frozen
    from alignment.report import write_report
    from safety.stage_eval import evaluate_model

    cfg: EvaluationConfig = ctx.stage
    tokenizer = ctx.tokenizer()
    scorer = ctx.reward_scorer(cfg.reward_models, tokenizer, cfg.chat_style, lazy=False, split=True)
    rows = suite_rows(cfg.gold, data_path)
    autocast = ctx.autocast_on
    results = {}
    for name, path in models_to_evaluate(ctx).items():
        cache = ctx.dir.root / f"eval-{name}.json"
        if cache.is_file():
            results[name] = json.loads(cache.read_text())
            continue
        answers_file = answers_cache(ctx, path, rows)
        # every process takes the same path: the generation below is shared among them
        everywhere = all(distributed.all_gather_objects(answers_file.is_file()))
        texts = json.loads(answers_file.read_text()) if everywhere else None
        print(f"[{cfg.name}] {'scoring the earlier answers of' if texts else 'evaluating'} {name}")
        model = None if texts else load_frozen(ctx.recipe.model, path)
        results[name] = evaluate_model(
            None if texts else ctx.sampler(model),
            tokenizer,
            scorer,
            rows,
            cfg.gold.max_new_tokens,
            cfg.chat_style,
            autocast,
            split=True,
            texts=texts,
        )
        if texts is None and distributed.is_main():
            answers = results[name]["answers"]
            write_json(answers_file, {kind: [a["answer"] for a in answers[kind]] for kind in answers})
        write_json(cache, results[name])
        del model
    answers = {
        name: {kind: [a["answer"] for a in r["answers"][kind]] for kind in r["answers"]}
        for name, r in results.items()
    }
    table = gold_table(rows, answers)
    plots = plot_stages(results, table, ctx.dir.plots, cfg.reward_models.threshold)
    md, page = write_report(ctx.run_dir, ctx.recipe, ctx.dir.root, results, table)
    summary = {
        "stage": cfg.name,
        "type": cfg.type,
        "models": list(results),
        "gold": {name: r["gold"] for name, r in results.items()},
        "gold_table": table,
        "rm": {name: r["rm"] for name, r in results.items()},
        "report": str(md),
        "report_html": str(page),
        "plots": [str(p.relative_to(ctx.dir.root)) for p in plots],
    }
    summary = ctx.write_summary(summary)
    ctx.dir.mark_complete()
    if distributed.is_main():  # the run directory itself is the main process's alone
        print(f"[{cfg.name}] report: {md}")
        write_atomic(ctx.run_dir / "REPORT", f"{md}\n")
    return summary


def answers_cache(ctx: StageContext, model_path: str, rows: dict) -> Path:
    """Where a model's greedy answers to this gold suite are kept, across reruns of the evaluation:
    named by the model's content (adapter and base), the prompts and everything the answers depend
    on, so an evaluation rerun after a later stage changed answers again only for models that did.
    In the run directory, never beside the models."""
    from alignment.fingerprints import content_digest, digest_of
    from alignment.model_setup import resolve_init

    base, adapter = resolve_init(model_path)
    key = {
        "model": content_digest(base),
        "adapter": content_digest(adapter) if adapter else None,
        "rows": digest_of(rows),
        "max_new_tokens": ctx.stage.gold.max_new_tokens,
        "style": ctx.stage.chat_style,
        "precision": ctx.recipe.model.precision,
        "engine": ctx.engine_name,
    }
    return ctx.run_dir / ".answers" / f"{digest_of(key)}.json"


def plot_stages(results: dict[str, dict], table: dict, plots_dir, threshold: float) -> list:
    import math

    from matplotlib.figure import Figure

    names = list(results)
    written = []

    fig = Figure(figsize=(8, 4.5))
    ax = fig.add_subplot()
    positions = range(len(names))
    for offset, (key, label) in zip(
        (-0.12, 0.0, 0.12),
        (
            ("helpful_correct", "helpful correct"),
            ("unsafe_compliance", "unsafe compliance"),
            ("false_refusal", "false refusal"),
        ),
        strict=True,
    ):
        cells = [table[n].get(key) for n in names]
        if not any(cells):
            continue
        xs = [i + offset for i, c in zip(positions, cells, strict=True) if c]
        rates = [c["rate"] for c in cells if c]
        # max(0, ...): a Wilson bound at 0 or 1 can land a rounding error past the rate itself
        errors = [
            [max(0.0, c["rate"] - c["ci95"][0]) for c in cells if c],
            [max(0.0, c["ci95"][1] - c["rate"]) for c in cells if c],
        ]
        ax.errorbar(xs, rates, yerr=errors, fmt="-o", capsize=3, label=f"gold: {label} (95 % interval)")
    rm_unsafe = [results[n]["rm"].get("rm_unsafe") for n in names]
    ax.plot(list(positions), rm_unsafe, ":s", color="grey", label="RM: unsafe (σ(rs) < thr)")
    ax.set_xticks(list(positions), names, rotation=20, fontsize=8)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("rate")
    ax.set_title("Gold and RM rates after each stage")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    written.append(plots_dir / "rates_by_stage.png")
    save_plot(fig, written[-1])

    fig = Figure(figsize=(10, 4))
    for i, rm in enumerate(("helpful", "safety")):
        ax = fig.add_subplot(1, 2, i + 1)
        data = [[v for kind in results[n]["scores"].values() for v in kind[rm]] for n in names]
        ax.boxplot(data, tick_labels=names)
        ax.set_title(f"{rm} RM scores of the answers")
        ax.grid(alpha=0.3)
    written.append(plots_dir / "rm_scores_by_stage.png")
    save_plot(fig, written[-1])

    fig = Figure(figsize=(6, 5))
    ax = fig.add_subplot()
    for name in (names[0], names[-1]) if len(names) > 1 else names:
        for kind, marker in (("helpful", "o"), ("safety", "x"), ("borderline", "^")):
            scores = results[name]["scores"].get(kind)
            if scores:
                ax.scatter(
                    scores["helpful"], scores["safety"], marker=marker, alpha=0.6, label=f"{name}: {kind}"
                )
    ax.axhline(math.log(threshold / (1 - threshold)), color="grey", ls="--", lw=1, label="safety threshold")
    ax.set_xlabel("helpfulness RM score")
    ax.set_ylabel("safety RM score")
    ax.set_title("Helpfulness vs safety RM score per answer")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    written.append(plots_dir / "helpful_vs_safety.png")
    save_plot(fig, written[-1])
    return written
