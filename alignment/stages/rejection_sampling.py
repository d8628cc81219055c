"""Rejection sampling (Llama 2 §3.2.3): K answers per prompt from the current model, each scored by
both reward models combined by the paper's rule, the best kept; then SFT on the kept answers.

Iterations repeat sample -> select -> fine-tune from the model the previous one produced. From
iteration `pool_from_iteration` on (the paper: the third), the fine-tune set is the pool of the best
answer per prompt over every iteration so far, which the paper found to stop regressions on
capabilities an earlier iteration had. The rewards come from frozen RMs, so rewards from different
iterations are comparable and the pool can keep whichever is highest.

Each iteration is resumable: its samples are written once (iter-NN/samples.json), its fine-tune
checkpoints like any stage's, and its finished trainable weights mark it done.
"""

from __future__ import annotations

import json
import random
import statistics
from dataclasses import dataclass
from typing import Literal

import torch

from alignment import distributed
from alignment.answers import answer, sampling_for
from alignment.data.mixtures import prompt_key
from alignment.data.records import Dialogue, category_of
from alignment.errors import PaddockError
from alignment.plotting import figure, save_plot
from alignment.recipes.config import RecipeError, check_range, join, setting
from alignment.recipes.schema import StageConfig
from alignment.runs import StageDir, write_atomic, write_json
from alignment.stages.common import (
    StageContext,
    cached_gold_suite,
    finish_stage,
    load_records,
)
from alignment.stages.sft import FinetuneConfig, finetune
from alignment.training.checkpoint import load_trainable, save_file_atomic, trainable_state
from safety.evaluation import GoldSuiteConfig
from safety.rewards import RewardModelsConfig


@dataclass(kw_only=True)
class RejectionSamplingConfig(StageConfig):
    """Best-of-K sampling scored by both reward models, then SFT on the kept answers (Llama 2 §3.2.3)."""

    reward_models: RewardModelsConfig = setting(
        "Reward models and their combination.", default_factory=RewardModelsConfig
    )
    iterations: int = setting("Sample -> select -> fine-tune rounds.", default=2)
    prompts_per_iteration: int = setting(
        "Prompts sampled each round (drawn from the training prompts).", default=64
    )
    samples_per_prompt: int = setting("K: answers sampled per prompt.", default=8)
    temperature: float = setting(
        "Sampling temperature (paper: 1.2-1.3 was best for 10-100 samples).", default=1.2
    )
    temperature_schedule: list[float] | None = setting(
        "One temperature per iteration instead of `temperature`.", default=None
    )
    temperature_sweep: list[float] | None = setting(
        "Try these temperatures on `sweep_prompts` prompts before the first round and use the one with the "
        "highest mean best-of-K reward (the paper's Figure 8).",
        default=None,
    )
    sweep_prompts: int = setting("Prompts used by the temperature sweep.", default=16)
    top_p: float = setting("Nucleus sampling cut (1.0: none).", default=1.0)
    max_new_tokens: int = setting("Answer length cap.", default=96)
    max_prompt_tokens: int = setting("Prompts longer than this are cut from the left.", default=384)
    greedy_candidate: bool = setting(
        "Also score the current model's greedy answer to each prompt and keep it when none of the K "
        "samples beats it (not in the paper). For a small model, sampled answers are mostly worse than "
        "the greedy one, and best-of-K alone can then train on answers worse than what the model "
        "already says (docs/results/rl.md).",
        default=False,
    )
    pool_from_iteration: int = setting(
        "From this iteration on, fine-tune on the best answer per prompt over all iterations so far "
        "(paper: 3); before it, on this iteration's best only.",
        default=3,
    )
    chat_style: Literal["template", "llama2"] = setting(
        "Chat format for prompts and training.", default="template"
    )
    generation_batch_size: int = setting("Prompts per generation batch (each gives K rows).", default=16)
    finetune: FinetuneConfig = setting(
        "How each round fine-tunes on its kept answers.",
        default_factory=FinetuneConfig,
    )
    gold: GoldSuiteConfig | None = setting(
        "Gold-grader evaluation on held-out gym prompts before the first and after the last round.",
        default=None,
    )

    def check_config(self, path: str) -> None:
        super().check_config(path)
        for key in ("iterations", "prompts_per_iteration", "samples_per_prompt", "max_new_tokens"):
            check_range(getattr(self, key), join(path, key), low=1)
        check_range(self.temperature, join(path, "temperature"), low=0)
        if self.temperature_schedule is not None and self.temperature_sweep is not None:
            where = join(path, "temperature_sweep")
            raise RecipeError(f"{where}: give a temperature_schedule or a temperature_sweep, not both", where)
        if self.temperature_schedule is not None and len(self.temperature_schedule) != self.iterations:
            where = join(path, "temperature_schedule")
            raise RecipeError(
                f"{where}: {len(self.temperature_schedule)} temperatures for {self.iterations} iterations",
                where,
            )
        if self.temperature_sweep is not None and not self.temperature_sweep:
            raise RecipeError(f"{join(path, 'temperature_sweep')}: give at least one temperature", path)


def best_vs_median(rewards: list[list[float]]) -> dict[str, list[float]]:
    """For N = 1..K: the mean over prompts of the max and of the median reward among the first N
    samples (the paper's Figure 7). rewards: per prompt, K rewards in sampling order."""
    k = min(len(r) for r in rewards)
    best = [statistics.fmean(max(r[:n]) for r in rewards) for n in range(1, k + 1)]
    median = [statistics.fmean(statistics.median(r[:n]) for r in rewards) for n in range(1, k + 1)]
    return {"n": list(range(1, k + 1)), "best": best, "median": median}


def select_best(
    records,
    texts: list[str],
    rewards: list[float],
    k: int,
    extra: tuple[list[str], list[float]] | None = None,
) -> list[dict]:
    """The highest-reward answer of each prompt's K (prompt-major order); ties go to the earliest.
    `extra`: one more candidate per prompt (text, reward), after the K, so a tie goes to a sample."""
    kept = []
    for i, record in enumerate(records):
        candidates = list(zip(texts[i * k : (i + 1) * k], rewards[i * k : (i + 1) * k], strict=True))
        if extra is not None:
            candidates.append((extra[0][i], extra[1][i]))
        j = max(range(len(candidates)), key=lambda x: (candidates[x][1], -x))
        text, reward = candidates[j]
        kept.append(
            {"key": prompt_key(record.prompt), "index": i, "text": text, "reward": reward, "sample": j}
        )
    return kept


def update_pool(pool: dict[str, dict], kept: list[dict]) -> dict[str, dict]:
    """Best answer per prompt across iterations: a new answer replaces the pool's only if it scores higher."""
    merged = dict(pool)
    for item in kept:
        if item["key"] not in merged or item["reward"] > merged[item["key"]]["reward"]:
            merged[item["key"]] = item
    return merged


def sample_answers(
    ctx, model, tokenizer, records, temperature: float, n: int, seed: int, label: str
) -> list[str]:
    """`n` answers per record (prompt-major) with the stage's sampling settings (`max_new_tokens`,
    `top_p`, `chat_style`, `generation_batch_size`, `max_prompt_tokens`); `label` names the bar."""
    cfg = ctx.stage
    sampling = sampling_for(
        tokenizer, max_new_tokens=cfg.max_new_tokens, temperature=temperature, top_p=cfg.top_p, n=n, seed=seed
    )
    return answer(
        ctx.sampler(model),
        tokenizer,
        [r.prompt for r in records],
        sampling,
        cfg.chat_style,
        autocast=ctx.autocast_on,
        batch_size=cfg.generation_batch_size,
        max_prompt_tokens=cfg.max_prompt_tokens,
        progress=f"{label}K={n} at T={temperature}" if ctx.recipe.logging.progress else None,
        split=True,
    ).texts


def sample_and_score(
    ctx, model, tokenizer, scorer, records, temperature: float, seed: int, n: int | None = None
) -> dict:
    cfg: RejectionSamplingConfig = ctx.stage
    k = cfg.samples_per_prompt if n is None else n
    texts = sample_answers(ctx, model, tokenizer, records, temperature, k, seed, label="sampling ")
    conversations = [r.prompt for r in records for _ in range(k)]
    is_safety = torch.tensor([category_of(r) == "safety" for r in records for _ in range(k)])
    scores = scorer(conversations, texts, is_safety)
    return {
        "temperature": temperature,
        "texts": texts,
        **{key: value.tolist() for key, value in scores.items()},
    }


def choose_temperature(ctx, model, tokenizer, scorer, prompts, iteration: int) -> tuple[float, dict | None]:
    cfg: RejectionSamplingConfig = ctx.stage
    if cfg.temperature_schedule is not None:
        return cfg.temperature_schedule[iteration - 1], None
    if cfg.temperature_sweep is None:
        return cfg.temperature, None
    cache = ctx.dir.root / "temperature_sweep.json"
    if cache.is_file():
        sweep = json.loads(cache.read_text())
    else:
        subset = prompts[: cfg.sweep_prompts]
        k = cfg.samples_per_prompt
        sweep = {}
        for t in cfg.temperature_sweep:
            result = sample_and_score(ctx, model, tokenizer, scorer, subset, t, seed=ctx.seed * 7919 + 1)
            per_prompt = [result["reward"][i * k : (i + 1) * k] for i in range(len(subset))]
            sweep[str(t)] = best_vs_median(per_prompt)
        write_json(cache, sweep)
    best = max(sweep, key=lambda t: sweep[t]["best"][-1])
    return float(best), sweep


def iteration_prompts(prompts: list, cfg: RejectionSamplingConfig, seed: int, iteration: int) -> list:
    rng = random.Random(seed * 1_000_003 + iteration)
    if len(prompts) <= cfg.prompts_per_iteration:
        return list(prompts)
    return rng.sample(prompts, cfg.prompts_per_iteration)


def gold_scores(record, texts: list[str]) -> list[float] | None:
    """The gym's gold-grader scores of answers to one prompt; None when no grader applies."""
    from alignment.gym.graders import gold_score

    row = {"category": category_of(record), "meta": record.meta}
    try:
        return [gold_score(row, text) for text in texts]
    except (ValueError, KeyError):
        return None  # not a gym prompt


def gold_of(records, texts: list[str]) -> dict:
    """Gold-grader score of answers by category (helpfulness: correct; safety: refused)."""
    by_category: dict[str, list[float]] = {}
    for record, text in zip(records, texts, strict=True):
        score = gold_scores(record, [text])
        if score is not None:
            by_category.setdefault(category_of(record), []).extend(score)
    return {f"gold_{c}": statistics.fmean(v) for c, v in by_category.items() if v}


def gold_pair_agreement(records, texts: list[str], rewards: list[float], k: int) -> dict:
    """How often the reward ranks a gold-better sample above a gold-worse one of the same prompt.

    Over every prompt whose K samples get different gold scores, every pair of its samples with a
    gold difference counts once; a reward tie counts half. This is what best-of-K relies on: pair
    accuracy on the gym's test pairs does not promise it on the model's own samples.
    """
    agree, pairs, prompts = 0.0, 0, 0
    for i, record in enumerate(records):
        gold = gold_scores(record, texts[i * k : (i + 1) * k])
        if gold is None:
            continue
        scores = rewards[i * k : (i + 1) * k]
        found = 0
        for a in range(k):
            for b in range(k):
                if gold[a] > gold[b]:
                    found += 1
                    agree += 1.0 if scores[a] > scores[b] else 0.5 if scores[a] == scores[b] else 0.0
        pairs += found
        prompts += found > 0
    return {"agreement": agree / pairs if pairs else None, "pairs": pairs, "prompts": prompts}


def agreement_by_category(records, texts: list[str], rewards: list[float], k: int) -> dict:
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(category_of(record), []).append(i)
    return {
        category: gold_pair_agreement(
            [records[i] for i in rows],
            [t for i in rows for t in texts[i * k : (i + 1) * k]],
            [x for i in rows for x in rewards[i * k : (i + 1) * k]],
            k,
        )
        for category, rows in sorted(groups.items())
    }


def run_iteration(ctx, model, tokenizer, scorer, prompts, pool, iteration, temperature) -> tuple[dict, dict]:
    cfg: RejectionSamplingConfig = ctx.stage
    root = ctx.dir.root / f"iter-{iteration:02d}"
    records = iteration_prompts(prompts, cfg, ctx.seed, iteration)
    samples_file = root / "samples.json"
    if samples_file.is_file():
        result = json.loads(samples_file.read_text())
    else:
        result = sample_and_score(
            ctx, model, tokenizer, scorer, records, temperature, ctx.seed * 7919 + 100 + iteration
        )
        if cfg.greedy_candidate:
            result["greedy"] = sample_and_score(ctx, model, tokenizer, scorer, records, 0.0, seed=0, n=1)
        write_atomic(samples_file, json.dumps(result))
    k = cfg.samples_per_prompt
    rewards = result["reward"]
    greedy = result.get("greedy") if cfg.greedy_candidate else None
    if cfg.greedy_candidate and greedy is None:
        raise PaddockError(f"{samples_file} was written without greedy answers: delete it to sample again")
    kept = select_best(
        records, result["texts"], rewards, k, (greedy["texts"], greedy["reward"]) if greedy else None
    )
    pool = update_pool(pool, kept)
    by_key = {prompt_key(r.prompt): r for r in prompts}
    train_set = list(pool.values()) if iteration >= cfg.pool_from_iteration else kept
    dialogues = [
        Dialogue(by_key[item["key"]].prompt + [{"role": "assistant", "content": item["text"]}])
        for item in train_set
    ]
    done_file = root / "trainable.safetensors"
    if done_file.is_file():
        load_trainable(model, done_file)
        fit = json.loads((root / "finetune.json").read_text())
        if distributed.is_main():
            print(f"[{ctx.run_name}/{cfg.name}] iteration {iteration}: resumed after its fine-tune ({root})")
    else:
        fit = finetune(
            ctx, model, tokenizer, cfg.finetune, dialogues, style=cfg.chat_style, stage_dir=StageDir(root)
        )
        write_json(root / "finetune.json", fit)
        save_file_atomic(trainable_state(model), done_file)  # last: marks the iteration finished
    kept_records = [records[item["index"]] for item in kept]
    all_records = [r for r in records for _ in range(k)]
    report = {
        "iteration": iteration,
        "temperature": temperature,
        "prompts": len(records),
        "samples": len(rewards),
        "mean_reward": statistics.fmean(rewards),
        "kept_mean_reward": statistics.fmean(item["reward"] for item in kept),
        "pool_size": len(pool),
        "pool_mean_reward": statistics.fmean(item["reward"] for item in pool.values()),
        "trained_on": "pool" if train_set is not kept else "this iteration's best",
        "train_examples": len(dialogues),
        "finetune_loss": fit["final"].get("loss"),
        "best_vs_median": best_vs_median([rewards[i * k : (i + 1) * k] for i in range(len(records))]),
        "gold_all_samples": gold_of(all_records, result["texts"]),
        "gold_kept": gold_of(kept_records, [item["text"] for item in kept]),
        "reward_gold_agreement": agreement_by_category(records, result["texts"], rewards, k),
    }
    if greedy is not None:
        report["greedy_mean_reward"] = statistics.fmean(greedy["reward"])
        report["kept_greedy_share"] = statistics.fmean(item["sample"] == k for item in kept)
        report["gold_greedy"] = gold_of(records, greedy["texts"])
    return report, pool


def plot_curves(ctx, reports: list[dict]) -> list[str]:
    fig, ax = figure(figsize=(6, 4))
    for report in reports:
        curve = report["best_vs_median"]
        line = ax.plot(curve["n"], curve["best"], marker="o", label=f"iter {report['iteration']}: best of N")
        ax.plot(
            curve["n"],
            curve["median"],
            ls="--",
            color=line[0].get_color(),
            label=f"iter {report['iteration']}: median",
        )
    ax.set_xlabel("N samples per prompt")
    ax.set_ylabel("combined reward (logit)")
    ax.set_title("Rejection sampling: best vs median reward as N grows")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return [save_plot(fig, ctx.dir.plots / "best_vs_median.png", root=ctx.dir.root)]


def run_rejection_sampling(ctx: StageContext) -> dict:
    cfg: RejectionSamplingConfig = ctx.stage
    tokenizer = ctx.tokenizer()
    prompts, _, data_report = load_records(ctx, kind="rl_prompts")
    model = ctx.trainable_model()
    scorer = ctx.reward_scorer(cfg.reward_models, tokenizer, cfg.chat_style, split=True)
    gold_before = cached_gold_suite(ctx, model, tokenizer, "before")
    temperature, sweep = choose_temperature(ctx, model, tokenizer, scorer, prompts, 1)
    pool: dict[str, dict] = {}
    reports = []
    for iteration in range(1, cfg.iterations + 1):
        if cfg.temperature_schedule is not None:
            temperature = cfg.temperature_schedule[iteration - 1]
        print(
            f"[{cfg.name}] iteration {iteration}/{cfg.iterations}: "
            f"sampling K={cfg.samples_per_prompt} at T={temperature}"
        )
        report, pool = run_iteration(ctx, model, tokenizer, scorer, prompts, pool, iteration, temperature)
        ctx.dir.metrics.log(
            {"step": iteration, **{k: v for k, v in report.items() if isinstance(v, int | float)}}
        )
        reports.append(report)
    gold_after = cached_gold_suite(ctx, model, tokenizer, "after")
    summary = {
        "data": data_report,
        "iterations": reports,
        "temperature_sweep": sweep,
        "gold_before": gold_before,
        "gold_after": gold_after,
        "curve_plots": plot_curves(ctx, reports),
        "rm_health": scorer.health.summary(),
    }
    return finish_stage(
        ctx, model, tokenizer, summary, plot_keys=("mean_reward", "kept_mean_reward", "pool_mean_reward")
    )
