"""The PPO stage (Llama 2 §3.2.3): the policy from rejection sampling (or SFT), a frozen reference,
a critic initialised from the helpfulness RM, both RMs frozen and combined by the paper's rule.

With LoRA and `shared_base` (the default), policy, reference and critic cost one copy of the base
weights: the policy is adapter "default", the reference is the base with adapters off, and the
critic is adapter "critic" plus a value head. When the helpfulness RM is itself a LoRA adapter on
the same base (PPO straight after SFT), the critic adapter starts from the RM's adapter and head;
otherwise it starts as a fresh adapter (the base's features) with the RM's scalar head, and the
summary says so. `shared_base: false` loads the critic as its own model from the RM instead.

The loop itself (rollout, KL penalty, GAE, clipped losses) is alignment/rl/ppo.py.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file
from torch import nn

from alignment import distributed
from alignment.answers import answer, sampling_for
from alignment.data.chat_format import encode_prompt
from alignment.data.records import category_of
from alignment.errors import PaddockError
from alignment.recipes.config import RecipeError, check_range, field_values, join, setting
from alignment.recipes.schema import StageConfig
from alignment.rl.ppo import PPOSettings
from alignment.runs import write_json
from alignment.stages.common import (
    StageContext,
    data_path,
    finish_stage,
    load_records,
    resolve_stage_model,
)
from alignment.training.checkpoint import (
    announce_resume,
    latest_checkpoint,
    load_trainable,
    load_training_checkpoint,
    save_file_atomic,
    save_training_checkpoint,
)
from alignment.training.guards import at_step
from safety.evaluation import GoldSuiteConfig, gold_rates, suite_rows
from safety.rewards import RewardModelsConfig


@dataclass(kw_only=True)
class PPOConfig(StageConfig, PPOSettings):
    """PPO against both reward models with Llama 2's reward combination and KL penalty (§3.2.3)."""

    reward_models: RewardModelsConfig = setting(
        "Reward models and their combination.", default_factory=RewardModelsConfig
    )
    critic_from: str | None = setting(
        "Checkpoint or stage the critic starts from. Default: the helpfulness RM.", default=None
    )
    shared_base: bool = setting(
        "With LoRA: policy, reference and critic share one frozen base (critic = a second adapter).",
        default=True,
    )
    iterations: int = setting("PPO iterations (paper: 200-400, with early stopping).", default=200)
    batch_size: int = setting("Prompts rolled out per iteration (paper: 512).", default=512)
    samples_per_prompt: int = setting("Answers sampled per prompt in a rollout.", default=1)
    critic_warmup: int = setting(
        "Iterations at the start that train the critic only (not in the paper; OpenRLHF's "
        "freezing_actor_steps). A critic that starts from the RM's head on the policy's features "
        "predicts the whitened rewards worse than zero, so early advantages are mostly its error.",
        default=0,
    )
    learning_rate: float = setting("Policy learning rate, constant (paper: 1e-6).", default=1e-6)
    critic_learning_rate: float = setting(
        "Critic learning rate (not in the paper; our choice).", default=5e-6
    )
    weight_decay: float = setting("AdamW weight decay (paper: 0.1).", default=0.1)
    adam_betas: list[float] = setting("AdamW β1, β2 (paper: 0.9, 0.95).", default_factory=lambda: [0.9, 0.95])
    adam_eps: float = setting("AdamW epsilon (paper: 1e-5).", default=1e-5)
    temperature: float = setting("Rollout sampling temperature.", default=1.0)
    max_new_tokens: int = setting("Answer length cap in rollouts and evals.", default=64)
    max_prompt_tokens: int = setting("Prompts are cut from the left to this many tokens.", default=384)
    chat_style: Literal["template", "llama2"] = setting("Chat format of prompts.", default="template")
    eval_every: int = setting(
        "Evaluate on held-out prompts every N iterations (0: start and end only).", default=10
    )
    eval_prompts: int = setting(
        "Held-out prompts for proxy reward and KL when no `gold` suite is set.", default=32
    )
    early_stopping_patience: int = setting(
        "Stop after this many evals without a better held-out proxy reward (0: never).", default=0
    )
    keep_best: bool = setting(
        "Save the policy of the held-out eval with the best proxy reward (the starting policy counts as "
        "the eval of iteration 0) instead of the last one. Early stopping then keeps the policy before "
        "the decline, not the one that triggered the stop. Costs one copy of the trained weights on disk.",
        default=True,
    )
    checkpoint_every: int = setting("Save a resumable checkpoint every N iterations.", default=10)
    gold: GoldSuiteConfig | None = setting(
        "Held-out gym prompts scored by the gold graders at every eval (proxy reward and KL on them too).",
        default=None,
    )

    def check_config(self, path: str) -> None:
        super().check_config(path)
        for key in ("iterations", "batch_size", "samples_per_prompt", "minibatch_size", "ppo_epochs"):
            check_range(getattr(self, key), join(path, key), low=1)
        check_range(self.critic_warmup, join(path, "critic_warmup"), low=0, high=self.iterations - 1)
        if self.rollout_logprobs == "sampler" and self.temperature != 1.0:
            raise RecipeError(
                f"{join(path, 'rollout_logprobs')}: 'sampler' needs temperature 1 (the engine's "
                f"log-probs are under the sampling distribution), got {self.temperature}",
                path,
            )
        check_range(self.clip, join(path, "clip"), low=0, high=1, high_open=True)
        check_range(self.gamma, join(path, "gamma"), low=0, high=1)
        check_range(self.lam, join(path, "lam"), low=0, high=1)
        check_range(self.beta, join(path, "beta"), low=0)
        if len(self.adam_betas) != 2:
            raise RecipeError(f"{join(path, 'adam_betas')}: give two numbers (β1, β2)", path)


def build_models(ctx: StageContext, cfg: PPOConfig):
    """(policy, reference, critic, how the critic was initialised)."""
    from alignment.model_setup import build_trainable, load_frozen
    from alignment.rl.ppo import AdapterReference, ModelCritic, ModelReference

    policy = ctx.trainable_model()
    critic_init = resolve_stage_model(ctx, cfg.critic_from or cfg.reward_models.helpful)
    if not Path(critic_init).exists():
        raise PaddockError(
            f"stage {cfg.name}: critic checkpoint {critic_init} does not exist (train the RM first)"
        )
    lora = hasattr(policy, "peft_config")
    reference = AdapterReference(policy) if lora else ModelReference(load_frozen(ctx.recipe.model, ctx.init))
    if lora and cfg.shared_base:
        critic, note = shared_critic(ctx, policy, critic_init)
    else:
        critic = ModelCritic(build_trainable(ctx.recipe.model, critic_init, head="value"))
        note = f"own model from {critic_init}"
    return policy, reference, critic, note


def shared_critic(ctx: StageContext, policy, critic_init: str):
    from peft import LoraConfig, set_peft_model_state_dict

    from alignment.model_setup import ADAPTER_BASE_FILE, load_frozen, resolve_init
    from alignment.rl.ppo import AdapterCritic

    lora = ctx.recipe.model.lora
    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)
    )
    policy.add_adapter("critic", config)
    policy.set_adapter("default")
    rm = load_frozen(ctx.recipe.model, critic_init, head="reward")
    value_head = nn.Linear(rm.config.hidden_size, 1, bias=True, device=rm.score.weight.device)
    with torch.no_grad():
        value_head.weight.copy_(rm.score.weight.float())
        value_head.bias.zero_()
    del rm
    note = "adapter on the policy's base (fresh), value head from " + critic_init
    rm_dir = Path(critic_init)
    policy_base = resolve_init(ctx.init)[0].resolve()
    if (rm_dir / ADAPTER_BASE_FILE).is_file():
        rm_base = Path((rm_dir / ADAPTER_BASE_FILE).read_text().strip()).resolve()
        rm_config = json.loads((rm_dir / "adapter_config.json").read_text())
        if rm_base == policy_base and rm_config.get("r") == lora.r:
            weights = load_file(rm_dir / "adapter_model.safetensors")
            set_peft_model_state_dict(
                policy, {k: v for k, v in weights.items() if "lora_" in k}, adapter_name="critic"
            )
            note = f"adapter and value head from the RM adapter {critic_init}"
    return AdapterCritic(policy, value_head), note


def held_out_sets(ctx: StageContext, cfg: PPOConfig, test_prompts) -> dict[str, list[dict]]:
    if cfg.gold is not None:
        return suite_rows(cfg.gold, data_path)
    rows = [{"prompt": r.prompt, "category": category_of(r), "meta": r.meta} for r in test_prompts]
    return {"held_out": rows[: cfg.eval_prompts]}


@torch.no_grad()
def evaluate_policy(trainer, scorer, tokenizer, sets: dict[str, list[dict]], cfg: PPOConfig) -> dict:
    """Greedy answers to held-out prompts: proxy reward (combined), gold rates and KL to π0."""
    from alignment.rl.ppo import response_logprobs

    sampling = sampling_for(tokenizer, max_new_tokens=cfg.max_new_tokens, temperature=0)
    texts, rewards, kls, per_kind = {}, [], [], {}
    for kind, rows in sets.items():
        if not rows:
            continue
        out = answer(
            trainer.sampling_model(),
            tokenizer,
            [r["prompt"] for r in rows],
            sampling,
            cfg.chat_style,
            trainer.autocast,
            max_prompt_tokens=cfg.max_prompt_tokens,
        )
        texts[kind] = out.texts
        with trainer._autocast():
            for gen in out.outputs:
                mask = gen.response_mask.float()
                attention = torch.cat([gen.prompt_mask, gen.response_mask], dim=1)
                logp = response_logprobs(trainer.policy, gen.sequences, attention, gen.prompt_length)[
                    0
                ].float()
                ref = trainer.reference.logprobs(gen.sequences, attention, gen.prompt_length).float()
                kls += ((logp - ref) * mask).sum(1).tolist()
        is_safety = torch.tensor([r.get("category") == "safety" for r in rows])
        scores = scorer([r["prompt"] for r in rows], out.texts, is_safety)
        rewards += scores["reward"].tolist()
        per_kind[f"proxy_reward_{kind}"] = float(scores["reward"].mean())
    result = {
        "proxy_reward": sum(rewards) / max(len(rewards), 1),
        "kl": sum(kls) / max(len(kls), 1),
        **per_kind,
    }
    known = {k: v for k, v in sets.items() if k in ("helpful", "safety", "borderline")}
    result.update(gold_rates(known, {k: texts[k] for k in known if k in texts}))
    result["examples"] = {kind: t[:2] for kind, t in texts.items()}
    return result


def run_ppo(ctx: StageContext) -> dict:
    from alignment.rl.plots import plot_ppo
    from alignment.rl.ppo import PPOTrainer, make_optimizer

    cfg: PPOConfig = ctx.stage
    tokenizer = ctx.tokenizer()
    train_prompts, test_prompts, data_report = load_records(ctx, kind="rl_prompts")
    distributed.check_batch(cfg.batch_size, f"stage {cfg.name}")
    policy, reference, critic, critic_note = build_models(ctx, cfg)
    scorer = ctx.reward_scorer(cfg.reward_models, tokenizer, cfg.chat_style)

    def reward_fn(records, texts, sequences, response_mask):
        is_safety = torch.tensor([category_of(r) == "safety" for r in records])
        return scorer([r.prompt for r in records], texts, is_safety)

    settings = PPOSettings(**field_values(PPOSettings, cfg))
    sampling = sampling_for(
        tokenizer, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, n=cfg.samples_per_prompt
    )
    from alignment.rl.ppo import critic_parameters, policy_parameters

    optimizer = make_optimizer(
        policy_parameters(policy, critic),
        critic_parameters(critic),
        cfg.learning_rate,
        cfg.critic_learning_rate,
        cfg.weight_decay,
        tuple(cfg.adam_betas),
        cfg.adam_eps,
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)  # constant LR (paper)
    autocast = ctx.autocast_on
    trainer = PPOTrainer(
        policy,
        reference,
        critic,
        reward_fn,
        tokenizer,
        settings,
        sampling,
        optimizer,
        autocast,
        group_of=category_of,
        engine=ctx.sampler(policy) if ctx.engine_name == "vllm" else None,
    )
    modules = nn.ModuleDict({"policy": policy, "critic": critic})
    sets = held_out_sets(ctx, cfg, test_prompts)

    start, evals = 0, []
    checkpoint = latest_checkpoint(ctx.dir.checkpoints)
    if checkpoint is not None:
        state = load_training_checkpoint(checkpoint, modules, optimizer, scheduler)
        start, evals = state["step"], state["evals"]
        trainer.running.load_state_dict(state["running"])
        announce_resume(f"{ctx.run_name}/{cfg.name}", start, cfg.iterations, checkpoint)
    ctx.dir.metrics.truncate_after(start)  # also rows a killed run logged before its first checkpoint
    before_file = ctx.dir.root / "eval_before.json"
    if before_file.is_file():
        before = json.loads(before_file.read_text())
    else:
        before = evaluate_policy(trainer, scorer, tokenizer, sets, cfg)
        write_json(before_file, before)
    if not evals:
        evals = [{"iteration": 0, **_numbers(before)}]
    best_file = ctx.dir.root / "best_policy.safetensors"
    if cfg.keep_best and start == 0 and distributed.is_main():
        save_file_atomic(trained_weights(modules, optimizer), best_file)  # iteration 0: the start

    from tqdm.auto import tqdm

    bar = tqdm(
        total=cfg.iterations,
        initial=start,
        desc=f"{ctx.run_name}/{cfg.name}",
        unit="iter",
        disable=not ctx.recipe.logging.progress,
    )
    stopped_early = False
    for it in range(start, cfg.iterations):
        rng = random.Random(ctx.seed * 1_000_003 + it)
        records = rng.sample(train_prompts, min(cfg.batch_size, len(train_prompts)))
        prompt_ids = [
            encode_prompt(r.prompt, tokenizer, style=cfg.chat_style)[-cfg.max_prompt_tokens :]
            for r in records
        ]
        with at_step(
            it + 1, lambda records=records: [train_prompts.index(r) for r in records]
        ):  # NaN/inf: say where
            stats = trainer.iteration(
                records, prompt_ids, seed=ctx.seed * 1_000_003 + it, train_policy=it >= cfg.critic_warmup
            )
        row = {"step": it + 1, **_numbers(stats)}
        done = it + 1 == cfg.iterations
        # Warm-up leaves the policy as it was at iteration 0, so there is nothing new to evaluate.
        trained = it + 1 > cfg.critic_warmup
        if cfg.eval_every and (it + 1) % cfg.eval_every == 0 and trained and not done:
            result = evaluate_policy(trainer, scorer, tokenizer, sets, cfg)
            evals.append({"iteration": it + 1, **_numbers(result)})
            row.update({f"eval_{k}": v for k, v in _numbers(result).items()})
            stopped_early = _should_stop(evals, cfg.early_stopping_patience)
            if cfg.keep_best and best_eval(evals) is evals[-1] and distributed.is_main():
                save_file_atomic(trained_weights(modules, optimizer), best_file)
        ctx.dir.metrics.log(row)
        bar.set_postfix(reward=f"{stats['reward']:.3f}", kl=f"{stats['kl']:.3f}")
        bar.update(1)
        if stopped_early:
            print(
                f"[{cfg.name}] early stop at iteration {it + 1}: no better held-out proxy reward in "
                f"{cfg.early_stopping_patience} evals"
            )
            break
        if (it + 1) % cfg.checkpoint_every == 0 and not done:
            extra = {"evals": evals, "running": trainer.running.state_dict()}
            if distributed.is_main():  # every process holds the same weights and optimizer state
                save_training_checkpoint(
                    ctx.dir.checkpoints,
                    it + 1,
                    modules,
                    optimizer,
                    scheduler,
                    extra,
                    weights=trained_weights(modules, optimizer),
                )
            distributed.barrier()
    bar.close()
    after = evaluate_policy(trainer, scorer, tokenizer, sets, cfg)
    last_iteration = evals[-1]["iteration"] if stopped_early else cfg.iterations
    if evals[-1]["iteration"] != last_iteration:
        evals.append({"iteration": last_iteration, **_numbers(after)})
    # Without the snapshot (a run resumed from before keep_best existed) the last policy is kept.
    kept = best_eval(evals) if cfg.keep_best and best_file.is_file() else evals[-1]
    if kept is not evals[-1]:
        load_trainable(modules, best_file)
        print(
            f"[{cfg.name}] keeping the policy of iteration {kept['iteration']} (best held-out proxy reward)"
        )
    if hasattr(policy, "peft_config") and "critic" in policy.peft_config:
        policy.delete_adapter("critic")  # the saved policy is the policy alone
    summary = {
        "data": data_report,
        "critic_init": critic_note,
        "iterations_run": last_iteration,
        "stopped_early": stopped_early,
        "kept_iteration": kept["iteration"],
        "eval_kept": kept,
        "eval_before": before,
        "eval_after": after,
        "evals": evals,
        "ppo_plots": plot_ppo(ctx.dir.metrics.rows(), evals, ctx.dir.plots, ctx.dir.root),
        "rm_health": scorer.health.summary(),
    }
    return finish_stage(ctx, policy, tokenizer, summary, plot_keys=("reward", "eval_proxy_reward"))


def trained_weights(modules: nn.Module, optimizer) -> dict[str, torch.Tensor]:
    """Every tensor the optimizer updates, by name: PEFT marks only the active adapter trainable, so
    requires_grad alone would miss the critic adapter."""
    updated = {id(p) for group in optimizer.param_groups for p in group["params"]}
    return {name: p.detach().contiguous() for name, p in modules.named_parameters() if id(p) in updated}


def best_eval(evals: list[dict]) -> dict:
    """The eval with the highest held-out proxy reward; the earliest of equals (the less-trained)."""
    return max(evals, key=lambda e: (e["proxy_reward"], -e["iteration"]))


def _numbers(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if isinstance(v, int | float) and not isinstance(v, bool)}


def _should_stop(evals: list[dict], patience: int) -> bool:
    """True when the last `patience` evals are all below the best proxy reward before them."""
    if patience <= 0 or len(evals) <= patience:
        return False
    best_before = max(e["proxy_reward"] for e in evals[:-patience])
    return all(e["proxy_reward"] <= best_before for e in evals[-patience:])
