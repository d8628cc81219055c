"""One PPO iteration (Llama 2 §3.2.3): roll out with the generation engine, score, penalise the KL to
the frozen reference, estimate advantages with GAE, then one gradient step per minibatch.

The pieces it is made of are pure functions in alignment/rl/functional.py; this module only wires
models to them. Models come in through three small adapters, so the same loop runs a full
fine-tune (separate reference and critic models) or LoRA with one shared frozen base:

- policy: a causal LM (PEFT-wrapped or not); its log-probs come from the fused linear + log-prob
  kernel, so the [tokens x vocab] logits never exist;
- reference: the policy with its adapters switched off, or a separate frozen model;
- critic: a value head on a backbone, either its own model or a second adapter on the policy's base.

Under several processes (alignment/distributed.py) each process rolls out its share of the
prompts; reward and advantage whitening use statistics over every process's rollouts, each
minibatch is the one-process minibatch (same global indices) with the loss divided by its global
token count, and gradients are summed across processes, so an iteration takes the one-process
optimizer steps. Samples differ from a one-process run (each process draws its own), greedy
rollouts do not.

Choices the paper leaves open (documented in docs/stages/ppo.md): per-token k1 KL penalty, the scalar
reward on the last answer token, GAE with γ = 1 and λ = 0.95, whitened advantages, a clipped value
loss, dropout off (eval mode) everywhere so the first minibatch's ratio is exactly 1 (unless
`rollout_logprobs: sampler` takes the old log-probs from the bf16 sampling copy).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from alignment import distributed
from alignment.base_model import kernels
from alignment.base_model.generation import SamplingConfig, generate_from_tokens
from alignment.errors import PaddockError
from alignment.precision import bf16_autocast
from alignment.recipes.config import setting
from alignment.rl.functional import (
    RunningMoments,
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalised_rewards,
    kl_per_token,
    masked_mean,
    whiten,
    whiten_by_group,
)
from alignment.rl.sampler import MergedSampler, can_merge


@dataclass(kw_only=True)
class PPOSettings:
    """The PPO algorithm's settings; the PPO stage's recipe config inherits them (alignment/stages/ppo.py)."""

    beta: float = setting("KL penalty coefficient β (paper: 0.01; 0.005 at 34B/70B).", default=0.01)
    kl_estimator: Literal["k1", "k3"] = setting(
        "Per-token KL estimate: k1 = log π − log π0 (as the paper's penalty); k3 is non-negative.",
        default="k1",
    )
    gamma: float = setting(
        "GAE discount γ (the paper gives none; 1.0: the reward is for the whole answer).", default=1.0
    )
    lam: float = setting("GAE λ (our choice: 0.95).", default=0.95)
    clip: float = setting("PPO ratio clip ε (paper: 0.2).", default=0.2)
    value_clip: float | None = setting(
        "Clip of the value update around the rollout's values; null: off.", default=0.2
    )
    value_coef: float = setting("Weight of the value loss.", default=0.5)
    entropy_coef: float = setting("Entropy bonus weight (0: none, as the paper).", default=0.0)
    minibatch_size: int = setting("Rows per gradient step; one step per minibatch (paper: 64).", default=64)
    ppo_epochs: int = setting("Passes over each rollout (paper: one step per minibatch, so 1).", default=1)
    whiten_rewards: Literal["batch", "running", "group", "none"] = setting(
        "Whitening of logit(Rc): per rollout batch (paper), with running statistics, per prompt "
        "category within the batch (`group`: helpfulness and safety prompts each on their own, so the "
        "safety RM's higher scores do not read as advantages while the critic has not learned them), "
        "or none.",
        default="batch",
    )
    max_grad_norm: float = setting("Gradient clipping, policy and critic each (paper: 1.0).", default=1.0)
    rollout_logprobs: Literal["policy", "sampler"] = setting(
        "Where the rollout's log-probs come from: a forward pass of the policy (exact), or the "
        "generation engine's own (one forward pass fewer per iteration; equal to the policy's only up "
        "to the bf16 sampling copy's rounding). `sampler` needs temperature 1.",
        default="policy",
    )
    whiten_advantages: bool = setting(
        "Whiten advantages over the rollout batch before the policy loss.", default=True
    )
    merged_sampling: bool = setting(
        "With LoRA, roll out from a merged bf16 copy of the policy (alignment/rl/sampler.py) rather than "
        "through the adapters.",
        default=True,
    )

    def __post_init__(self):
        if self.rollout_logprobs not in ("policy", "sampler"):
            raise ValueError(f"rollout_logprobs must be 'policy' or 'sampler', got {self.rollout_logprobs!r}")


def causal_lm_of(model):
    """The PaddockLlamaForCausalLM inside a PEFT wrapper (adapters injected in place) or the model."""
    return model.get_base_model() if hasattr(model, "peft_config") else model


def response_logprobs(model, sequences, attention_mask, prompt_length: int, with_entropy=False):
    """(log-prob [R, N], entropy [R, N] or None) of the response tokens sequences[:, P:]."""
    inner = causal_lm_of(model)
    hidden = inner.model(input_ids=sequences, attention_mask=attention_mask).last_hidden_state  # [R, P+N, C]
    head = inner.lm_head
    return kernels.fused_linear_logprobs(
        hidden[:, prompt_length - 1 : -1],
        head.weight,
        sequences[:, prompt_length:],
        head.bias,
        with_entropy=with_entropy,
    )


class AdapterReference:
    """π_0 = the policy with every adapter off: no second copy of the weights."""

    def __init__(self, policy):
        self.policy = policy

    def logprobs(self, sequences, attention_mask, prompt_length):
        with self.policy.disable_adapter():
            return response_logprobs(self.policy, sequences, attention_mask, prompt_length)[0]


class ModelReference:
    def __init__(self, model):
        self.model = model

    def logprobs(self, sequences, attention_mask, prompt_length):
        return response_logprobs(self.model, sequences, attention_mask, prompt_length)[0]


class ModelCritic(nn.Module):
    """A value model (PaddockLlamaForValue, PEFT-wrapped or not) of its own."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    @contextmanager
    def active(self):
        yield

    def values(self, sequences, attention_mask, prompt_length):
        """V(s_t) [R, N]: the value of the state before each response token."""
        return self.model(input_ids=sequences, attention_mask=attention_mask).values[
            :, prompt_length - 1 : -1
        ]


class AdapterCritic(nn.Module):
    """A second LoRA adapter ("critic") on the policy's own frozen base plus a value head."""

    def __init__(self, policy, value_head: nn.Linear, adapter: str = "critic"):
        super().__init__()
        self.value_head = value_head
        self._policy = [policy]  # not a submodule: its parameters belong to the policy
        self.adapter = adapter

    @contextmanager
    def active(self):
        """Switch the shared base to the critic adapter (PEFT makes only the active one trainable)."""
        policy = self._policy[0]
        policy.set_adapter(self.adapter)
        try:
            yield
        finally:
            policy.set_adapter("default")

    def values(self, sequences, attention_mask, prompt_length):
        with self.active():
            inner = causal_lm_of(self._policy[0])
            hidden = inner.model(input_ids=sequences, attention_mask=attention_mask).last_hidden_state
            return self.value_head(hidden[:, prompt_length - 1 : -1]).squeeze(-1)

    def adapter_parameters(self):
        policy = self._policy[0]
        return [p for name, p in policy.named_parameters() if f".{self.adapter}." in name]


@dataclass
class Rollout:
    sequences: torch.Tensor  # [R, P+N]
    attention_mask: torch.Tensor  # [R, P+N]
    response_mask: torch.Tensor  # [R, N] float
    prompt_length: int
    logprobs: torch.Tensor  # [R, N] under the policy that sampled
    values: torch.Tensor  # [R, N]
    advantages: torch.Tensor
    returns: torch.Tensor
    stats: dict
    global_rows: list[int]  # each row's index in the whole (all processes') rollout batch
    global_count: int


class PPOTrainer:
    """reward_fn(records, texts, sequences, response_mask) -> dict of [R] tensors with at least
    `reward` (the scalar to maximise, before whitening); other entries are logged as means.

    group_of(record) -> str, optional: the rollout's mean reward is also logged per group
    (`reward_on_<group>`), since a batch's mean moves with its mix of prompt kinds (safety prompts
    score far higher than helpfulness prompts) as much as with the policy.

    engine, optional: an external rollout engine (alignment/engines, e.g. vLLM) that rollouts and
    evaluations sample from; it is synced to the policy's weights before each use."""

    def __init__(
        self,
        policy,
        reference,
        critic,
        reward_fn,
        tokenizer,
        settings: PPOSettings,
        sampling: SamplingConfig,
        optimizer,
        autocast: bool = False,
        style: str = "template",
        group_of=None,
        engine=None,
    ):
        self.policy, self.reference, self.critic = policy, reference, critic
        self.reward_fn, self.tokenizer, self.settings, self.sampling = (
            reward_fn,
            tokenizer,
            settings,
            sampling,
        )
        self.optimizer, self.autocast, self.style, self.group_of = optimizer, autocast, style, group_of
        self.engine = engine
        if settings.rollout_logprobs == "sampler" and not is_plain_sampling(sampling):
            raise ValueError(
                "rollout_logprobs='sampler' needs temperature 1 and no top-k/top-p: the engine's "
                "log-probs are under the sampling distribution, and PPO's ratio needs the policy's"
            )
        if settings.whiten_rewards == "group" and group_of is None:
            raise ValueError("whiten_rewards='group' needs group_of (each prompt record's group)")
        self.running = RunningMoments()
        self.sampler = None
        if engine is None and settings.merged_sampling and can_merge(policy):
            dtype = torch.bfloat16 if autocast else causal_lm_of(policy).lm_head.weight.dtype
            self.sampler = MergedSampler(policy, dtype)
        self.policy_params = policy_parameters(policy, critic)
        self.critic_params = critic_parameters(critic)
        distributed.broadcast_parameters(self.policy_params + self.critic_params)

    def eval_mode(self) -> None:
        """Dropout off in every model (PEFT creates LoRA dropout in training mode even inside an
        eval-mode model), so rollout values and the update see the same deterministic networks."""
        self.policy.eval()
        self.critic.eval()
        model = getattr(self.reference, "model", None)
        if model is not None:
            model.eval()

    def sampling_model(self):
        """What to generate from: the external engine synced to the policy's weights, the merged
        copy brought up to date, or the policy."""
        if self.engine is not None:
            self.engine.sync(self.policy)
            return self.engine
        if self.sampler is None:
            return self.policy
        self.sampler.refresh()
        return self.sampler.model

    def _autocast(self):
        return bf16_autocast(self.policy, self.autocast)

    @torch.no_grad()
    def rollout(self, records, prompt_ids: list[list[int]], seed: int) -> Rollout:
        s, n = self.settings, self.sampling.n
        global_count = len(records) * n
        mine = distributed.shard(list(range(len(records))))
        records, prompt_ids = [records[i] for i in mine], [prompt_ids[i] for i in mine]
        global_rows = [p * n + k for p in mine for k in range(n)]  # generation keeps prompt order
        seed += 7919 * distributed.rank()  # each process draws its own samples
        self.eval_mode()
        with self._autocast():
            sampler, sampling = self.sampling_model(), _with_seed(self.sampling, seed)
            if self.engine is not None:
                out = sampler.generate_tokens(prompt_ids, sampling)
            else:
                out = generate_from_tokens(sampler, prompt_ids, sampling, self.tokenizer)
            P = out.prompt_length
            mask = out.response_mask.float()
            attention = torch.cat([out.prompt_mask, out.response_mask], dim=1)
            if s.rollout_logprobs == "sampler":
                logprobs = out.logprobs.float() * mask
            else:
                logprobs = response_logprobs(self.policy, out.sequences, attention, P)[0].float() * mask
            ref = self.reference.logprobs(out.sequences, attention, P).float() * mask
            values = self.critic.values(out.sequences, attention, P).float() * mask
        if not bool((mask.sum(1) > 0).all()):
            raise PaddockError("a rollout produced an empty answer; raise max_new_tokens")
        texts = [
            self.tokenizer.decode(ids[m.bool()], skip_special_tokens=True).strip()
            for ids, m in zip(out.responses, out.response_mask, strict=True)
        ]
        scores = self.reward_fn(
            [r for r in records for _ in range(n)], texts, out.sequences, out.response_mask
        )
        raw = scores["reward"].float().to(mask.device)
        check_finite(raw, "reward")
        groups = None if self.group_of is None else [self.group_of(r) for r in records for _ in range(n)]
        everyone, own = gathered(raw)  # whitening statistics over the whole batch
        if s.whiten_rewards == "running":
            self.running.update(everyone)
            reward = self.running.whiten(raw)
        elif s.whiten_rewards == "batch" and len(everyone) > 1:
            reward = whiten(everyone)[own]
        elif s.whiten_rewards == "group":
            reward = whiten_by_group(
                everyone, [g for part in distributed.all_gather_objects(groups) for g in part]
            )[own]
        else:
            reward = raw
        kl = kl_per_token(logprobs, ref, s.kl_estimator) * mask
        rewards = kl_penalised_rewards(reward, kl, mask, s.beta)
        advantages, returns = gae(rewards, values, mask, s.gamma, s.lam)
        if s.whiten_advantages:
            advantages = whiten_across_processes(advantages, mask)
        check_finite(advantages, "advantage")
        means = {f"reward_{k}": v.float() for k, v in scores.items() if k != "reward"}
        means.update({"reward": raw, "kl": kl.sum(1), "response_length": mask.sum(1)})
        keys = list(means)
        sums = distributed.all_reduce_sum([float(means[k].sum()) for k in keys])
        stats = {k: total / global_count for k, total in zip(keys, sums, strict=True)}
        if groups is not None:
            stats.update(group_means(raw.tolist(), groups, prefix="reward_on_"))
        stats["samples"] = texts[:4]
        return Rollout(
            out.sequences,
            attention,
            mask,
            P,
            logprobs,
            values,
            advantages,
            returns,
            stats,
            global_rows,
            global_count,
        )

    def train_on(self, rollout: Rollout, seed: int, train_policy: bool = True) -> dict:
        """One pass of minibatch steps per PPO epoch. `train_policy=False` updates the critic only
        (critic warm-up): the policy, and so the next rollout's distribution, stays as it is."""
        s = self.settings
        generator = torch.Generator().manual_seed(seed)
        R = rollout.global_count
        local = {g: i for i, g in enumerate(rollout.global_rows)}
        totals: dict[str, list[float]] = {}
        for _ in range(s.ppo_epochs):
            order = torch.randperm(R, generator=generator)
            for start in range(0, R, s.minibatch_size):
                minibatch = order[start : start + s.minibatch_size].tolist()
                idx = torch.tensor([local[g] for g in minibatch if g in local], dtype=torch.long)
                stats = self._minibatch_step(rollout, idx, train_policy)
                for key, value in stats.items():
                    totals.setdefault(key, []).append(value)
        return {key: sum(v) / len(v) for key, v in totals.items()}

    def _minibatch_step(self, r: Rollout, idx: torch.Tensor, train_policy: bool = True) -> dict:
        s = self.settings
        seq, att, mask = r.sequences[idx], r.attention_mask[idx], r.response_mask[idx]
        # This process's share of the minibatch's tokens: its masked means, weighted by it, sum
        # over processes to the masked mean of the whole minibatch (1 for one process).
        (tokens,) = distributed.all_reduce_sum([float(mask.sum())])
        share = float(mask.sum()) / tokens
        stats: dict[str, float] = {}
        if len(idx):
            if train_policy:
                stats = self._policy_backward(r, idx, share)
            # The critic's backward runs while its adapter is the active (trainable) one.
            with self._autocast():
                values = self.critic.values(seq, att, r.prompt_length).float()
            vf_loss, vf_stats = clipped_value_loss(values, r.values[idx], r.returns[idx], mask, s.value_clip)
            check_finite(vf_loss.detach(), "value loss")
            with self.critic.active():
                (s.value_coef * vf_loss * share).backward()
            stats.update({"value_loss": float(vf_loss.detach()), **vf_stats})
        if distributed.enabled():
            # In warm-up the policy has no gradients to sum, and zeros would let AdamW move it.
            distributed.all_reduce_gradients(
                (self.policy_params if train_policy else []) + self.critic_params
            )
            keys = STEP_STATS if train_policy else CRITIC_STATS
            sums = distributed.all_reduce_sum([stats.get(k, 0.0) * share for k in keys])
            stats = dict(zip(keys, sums, strict=True))
        critic_norm = torch.nn.utils.clip_grad_norm_(self.critic_params, s.max_grad_norm)
        check_finite(critic_norm, "critic gradient norm")
        if train_policy:
            policy_norm = torch.nn.utils.clip_grad_norm_(self.policy_params, s.max_grad_norm)
            check_finite(policy_norm, "policy gradient norm")
            stats["policy_grad_norm"] = float(policy_norm)
        # AdamW skips parameters without a gradient (no step, no weight decay), so in warm-up the
        # policy's weights and its optimizer state stay untouched.
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return stats

    def _policy_backward(self, r: Rollout, idx: torch.Tensor, share: float) -> dict:
        s = self.settings
        seq, att, mask = r.sequences[idx], r.attention_mask[idx], r.response_mask[idx]
        with self._autocast():
            logprobs, entropy = response_logprobs(self.policy, seq, att, r.prompt_length, with_entropy=True)
        logprobs = logprobs.float()
        pg_loss, pg_stats = clipped_policy_loss(logprobs, r.logprobs[idx], r.advantages[idx], mask, s.clip)
        entropy = masked_mean(entropy.float(), mask)
        loss = pg_loss - s.entropy_coef * entropy if s.entropy_coef else pg_loss
        check_finite(loss.detach(), "policy loss")
        (loss * share).backward()
        return {"policy_loss": float(pg_loss.detach()), "entropy": float(entropy.detach()), **pg_stats}

    def iteration(self, records, prompt_ids, seed: int, train_policy: bool = True) -> dict:
        rollout = self.rollout(records, prompt_ids, seed)
        self.eval_mode()  # dropout off for the update too: see the module docstring
        stats = self.train_on(rollout, seed + 1, train_policy)
        return {**rollout.stats, **stats}


STEP_STATS = (
    "policy_loss",
    "value_loss",
    "entropy",
    "clip_fraction",
    "approx_kl",
    "ratio_mean",
    "value_clip_fraction",
    "value_error",
)
CRITIC_STATS = ("value_loss", "value_clip_fraction", "value_error")


def group_means(values: list[float], groups: list[str], prefix: str) -> dict[str, float]:
    """{prefix + group: mean of the values in that group}, over every process's rows."""
    local: dict[str, list[float]] = {}
    for value, group in zip(values, groups, strict=True):
        total = local.setdefault(group, [0.0, 0])
        total[0] += value
        total[1] += 1
    merged: dict[str, list[float]] = {}
    for part in distributed.all_gather_objects(local):
        for group, (total, count) in part.items():
            merged.setdefault(group, [0.0, 0])
            merged[group][0] += total
            merged[group][1] += count
    return {prefix + group: total / count for group, (total, count) in sorted(merged.items())}


def gathered(x: torch.Tensor) -> tuple[torch.Tensor, slice]:
    """Every process's `x` concatenated in rank order, and where this process's rows sit in it."""
    parts = distributed.all_gather_objects(x.tolist())
    before = sum(len(p) for p in parts[: distributed.rank()])
    flat = [v for p in parts for v in p]
    everyone = x if len(parts) == 1 else torch.tensor(flat, dtype=x.dtype, device=x.device)
    return everyone, slice(before, before + len(x))


def whiten_across_processes(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """`whiten(x, mask)` with the mean and (population) variance of every process's masked entries."""
    if not distributed.enabled():
        return whiten(x, mask, eps=eps)
    count, total = distributed.all_reduce_sum([float(mask.sum()), float((x * mask).sum())])
    mean = total / count
    (squares,) = distributed.all_reduce_sum([float((((x - mean) ** 2) * mask).sum())])
    return (x - mean) * torch.rsqrt(torch.tensor(squares / count + eps)) * mask


def policy_parameters(policy, critic) -> list[nn.Parameter]:
    """The policy's trainable weights: its own adapter's when LoRA (not the critic's adapter on the
    same base, whatever PEFT's requires_grad flags say at the moment), else every trainable one."""
    if hasattr(policy, "peft_config"):
        return [p for name, p in policy.named_parameters() if ".default." in name]
    critic_ids = {id(p) for p in critic_parameters(critic)}
    return [p for p in policy.parameters() if p.requires_grad and id(p) not in critic_ids]


def critic_parameters(critic) -> list[nn.Parameter]:
    if isinstance(critic, AdapterCritic):
        return [*critic.adapter_parameters(), *critic.value_head.parameters()]
    return [p for p in critic.parameters() if p.requires_grad]


def make_optimizer(
    policy_params, critic_params, lr, critic_lr, weight_decay=0.1, betas=(0.9, 0.95), eps=1e-5
):
    """AdamW with the paper's PPO settings; policy and critic as two parameter groups."""
    groups = [
        {"params": list(policy_params), "lr": lr},
        {"params": list(critic_params), "lr": critic_lr},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


def check_finite(value: torch.Tensor, what: str) -> None:
    from alignment.training import guards  # names the bad rows; the stage adds step and prompt ids

    guards.check_finite(value, f"PPO: {what}")


def is_plain_sampling(sampling: SamplingConfig) -> bool:
    """True when the engine samples from π itself (no temperature, top-k or top-p change)."""
    return sampling.temperature == 1.0 and sampling.top_k == 0 and sampling.top_p == 1.0


def _with_seed(sampling: SamplingConfig, seed: int) -> SamplingConfig:
    from dataclasses import replace

    return replace(sampling, seed=seed)
