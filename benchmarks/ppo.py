"""One PPO iteration: Paddock's PPOTrainer vs the same iteration built the transformers/TRL way.

Both sides run the LoRA setup of the PPO stage on SmolLM2-135M: fp32 master weights, bf16 autocast,
LoRA r=16, alpha=32 on all seven projections (dropout 0.05 is configured but never active: both
sides train in eval mode, as the PPO stage does), a frozen reference, a critic with a scalar value
head, two reward models (helpfulness and safety, random score heads: only the time matters) combined
by Llama 2's rule through the same RewardScorer on decoded texts. One iteration = rollout of
`--batch` gym prompts (~`--prompt-tokens` tokens each, tokenizer chat template) with `--new-tokens`
sampled tokens at temperature 1.0 (no EOS stop on either side, so both generate the same number of
tokens), reward scoring, reference log-probs and values, KL-penalised rewards, GAE, then one clipped
policy + value gradient step per minibatch (alignment/rl/functional.py on both).

- Paddock: PPOTrainer (alignment/rl/ppo.py) unchanged. The policy's adapter "default", the reference
  is the base with adapters off (AdapterReference), the critic a second adapter "critic" on the same
  base plus a value head (AdapterCritic). Rollouts come from the generation engine on the trainer's
  merged bf16 copy of the policy (alignment/rl/sampler.py; rewriting it before each rollout is
  timed as generation; `--no-merged-sampling` samples from the PEFT policy instead), log-probs from
  the fused linear + log-prob kernel. Phases are timed by wrapping the engine call, the reference,
  the critic and the reward function; the trainer's code is not changed.
- transformers: LlamaForCausalLM + PEFT LoRA policy sampled with `generate` (left-padded prompts,
  do_sample, top_k=0, min_new_tokens = max_new_tokens); log-probs of policy and reference from the
  full logits (log_softmax + gather) with the reference as `disable_adapter()`, as TRL's
  PPOTrainer does with a PEFT policy; critic = its own LlamaForTokenClassification (num_labels=1)
  with its own LoRA adapter and trainable score head (TRL's separate value model); RMs are
  LlamaForSequenceClassification. Entropy is computed without gradient, for logging, as in TRL.

Speed: the two sides alternate in one process after a warm-up iteration each; medians. Peak memory:
each side runs alone in a fresh subprocess (as benchmarks/train_step.py) and reports how far its
resident memory rises during one iteration above the level before it, and its whole-process peak.

    python benchmarks/ppo.py [--repeats 3] [--threads 1] [--device cpu]

The last line is a JSON object with `speedup` (transformers seconds / Paddock seconds for a whole
iteration), per-phase speedups, `peak_memory_ratio` (Paddock / transformers) and
`speedup_bound_free_generation`: the whole-iteration speedup if Paddock's generation took no time
at all. Scoring and update are forward and backward passes of the same models over the same
tokens on both sides, so this bounds what a faster engine alone can give. `matmul_floor_seconds`
times the iteration's linear layers alone (bf16, no LoRA, attention, norms or optimizer), and
`speedup_bound` = transformers seconds / that floor: nothing built on torch's matmuls does better.

`--vllm` adds a third contender to the alternating rounds: Paddock's trainer with its rollouts from
vLLM (alignment/engines/vllm_client.py), weight sync before each rollout timed as generation. The
summary's `vllm_speedup` is Paddock-engine seconds / vLLM-engine seconds per iteration.

`--device cuda` (or cuda:N, auto) puts both sides' models (policy, reference, critic, both RMs) and
inputs on the GPU, and the memory subprocesses too; the default is the CPU. A GPU that is not there
is a one-line usage error before any model loads. On the GPU every phase timer waits for the GPU's
queued work before it is read, and the memory figures are the CUDA allocator's (exact, no sampling):
`peak_allocated_ratio` replaces `peak_rss_ratio`, as in benchmarks/train_step.py. The CUDA path is
not yet run on a GPU: only its argument handling is tested (tests/test_benchmarks_device.py).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

import alignment.rl.ppo as ppo_module
from alignment import load_model, load_tokenizer
from alignment.base_model.default_models import prepare
from alignment.base_model.families import LORA_TARGETS
from alignment.base_model.generation import SamplingConfig, left_pad
from alignment.data.chat_format import encode_prompt
from alignment.rl.functional import (
    clipped_policy_loss,
    clipped_value_loss,
    gae,
    kl_penalised_rewards,
    kl_per_token,
    masked_mean,
    whiten,
)
from alignment.rl.ppo import (
    AdapterCritic,
    AdapterReference,
    PPOSettings,
    PPOTrainer,
    critic_parameters,
    make_optimizer,
    policy_parameters,
)
from safety.rewards import RewardScorer

from common import (
    BareLinears,
    alternate,
    fastest,
    machine,
    median,
    memory_sampler,
    parse_device_args,
    print_summary,
    print_table,
    sync,
)

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = ROOT / "data" / "gym" / "rl_prompts_train.jsonl"
PHASES = ("generation", "scoring", "update")
PHASE_NAMES = {
    "generation": "generation",
    "scoring": "scoring + ref + values",
    "update": "update",
    "seconds": "whole iteration",
}
LR, CRITIC_LR = 1e-6, 5e-6  # the PPO stage's defaults (Llama 2: 1e-6)


class Clock:
    """Sums the seconds spent in named sections until `take` hands them over and starts afresh.
    On a CUDA `device` each section waits for the GPU as it starts and ends, so it is charged the
    GPU work it queued and none queued before it."""

    def __init__(self, device: torch.device | None = None):
        self.times: dict[str, float] = {}
        self.device = device or torch.device("cpu")

    @contextmanager
    def __call__(self, name: str):
        sync(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            sync(self.device)
            self.times[name] = self.times.get(name, 0.0) + time.perf_counter() - start

    def take(self) -> dict[str, float]:
        times, self.times = self.times, {}
        return times


CLOCK = Clock()  # build() points it at the run's device


def lora(**extra):
    from peft import LoraConfig

    return LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=list(LORA_TARGETS), **extra)


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16)


def select_prompts(tokenizer, batch: int, target: int, path: Path = PROMPTS) -> tuple[list[dict], list]:
    """The first `batch` gym RL prompts (file order) whose chat-template encoding is within 8 tokens
    of `target`, as records (prompt, category) and token lists."""
    records, prompt_ids = [], []
    with open(path) as lines:
        for line in lines:
            row = json.loads(line)
            ids = encode_prompt(row["prompt"], tokenizer, style="template")
            if abs(len(ids) - target) <= 8:
                records.append({"prompt": row["prompt"], "category": row["category"]})
                prompt_ids.append(ids)
            if len(records) == batch:
                return records, prompt_ids
    raise SystemExit(f"only {len(records)} prompts of {target} +- 8 tokens in {path}")


def settings(args) -> PPOSettings:
    return PPOSettings(
        minibatch_size=args.minibatch,
        merged_sampling=not args.no_merged_sampling,
        rollout_logprobs=args.rollout_logprobs,
    )


def make_reward_fn(scorer: RewardScorer):
    """Both sides' reward: the two RMs on the decoded answers, combined by Llama 2's rule."""

    def reward_fn(records, texts, sequences, response_mask):
        with CLOCK("rewards"):
            is_safety = torch.tensor([r["category"] == "safety" for r in records])
            return scorer([r["prompt"] for r in records], texts, is_safety)

    return reward_fn


def split_phases(times: dict[str, float], rollout_s: float, update_s: float) -> dict:
    scoring = rollout_s - times["generation"]
    known = sum(times.get(k, 0.0) for k in ("reference", "values", "rewards"))
    return {
        "generation": times["generation"],
        "scoring": scoring,
        "update": update_s,
        "seconds": rollout_s + update_s,
        "reference": times.get("reference", 0.0),
        "values": times.get("values", 0.0),
        "rewards": times.get("rewards", 0.0),
        "policy_logprobs_and_rest": scoring - known,
    }


def iteration_floor(path, args, prompt_width: int) -> float:
    """Seconds one iteration's linear layers alone take in bf16 (see BareLinears): the rollout's
    prefill and decode steps, the reference (vocabulary projection over the answers), the critic,
    both RMs, then per minibatch the policy's and the critic's forward and input-gradient
    matmuls. The LoRA matmuls are left out, so this is below what either side must do."""
    linears = BareLinears(load_model(path, dtype=torch.bfloat16, device=args.device))
    rows, answer = args.batch, args.new_tokens
    sequence = prompt_width + answer

    def job():
        linears.generation(rows, prompt_width, rows, answer - 1)  # the rollout
        if args.rollout_logprobs == "policy":
            linears.forward(rows * sequence, head_tokens=rows * answer)
        linears.forward(rows * sequence, head_tokens=rows * answer)  # reference
        for _ in range(3):  # critic and the two RMs
            linears.forward(rows * sequence)
        for start in range(0, rows, args.minibatch):
            m = min(args.minibatch, rows - start)
            for head_tokens in (m * answer, 0):  # policy, then critic
                linears.forward(m * sequence, head_tokens)
                linears.backward(m * sequence, head_tokens)

    return fastest(job, device=args.device)


# ----------------------------------------------------------------------------------------- Paddock


@contextmanager
def timed_engine():
    """Time the engine call inside PPOTrainer.rollout (which looks the function up at call time)."""
    engine = ppo_module.generate_from_tokens

    def timed(*args, **kwargs):
        with CLOCK("generation"):
            return engine(*args, **kwargs)

    ppo_module.generate_from_tokens = timed
    try:
        yield
    finally:
        ppo_module.generate_from_tokens = engine


class TimedReference(AdapterReference):
    def logprobs(self, sequences, attention_mask, prompt_length):
        with CLOCK("reference"):
            return super().logprobs(sequences, attention_mask, prompt_length)


class TimedCritic(AdapterCritic):
    def values(self, sequences, attention_mask, prompt_length):
        with CLOCK("values"):
            return super().values(sequences, attention_mask, prompt_length)


class PaddockSide:
    engine_kind = "paddock"

    def __init__(self, path, tokenizer, records, prompt_ids, args):
        from peft import get_peft_model

        dtype, device = getattr(torch, args.base_dtype), args.device
        policy = get_peft_model(load_model(path, head="causal_lm", dtype=dtype, device=device), lora())
        policy.add_adapter("critic", lora())
        policy.set_adapter("default")
        helpful, safety = (
            load_model(path, head="reward", dtype=dtype, device=device).requires_grad_(False).eval()
            for _ in range(2)
        )
        for rm in (helpful, safety):
            rm.config.pad_token_id = tokenizer.pad_token_id
        value_head = nn.Linear(policy.config.hidden_size, 1, device=device)
        with torch.no_grad():  # as the PPO stage: the value head starts from the helpfulness RM's
            value_head.weight.copy_(helpful.score.weight.float())
            value_head.bias.zero_()
        critic = TimedCritic(policy, value_head)
        optimizer = make_optimizer(
            policy_parameters(policy, critic), critic_parameters(critic), LR, CRITIC_LR
        )
        sampling = SamplingConfig(
            max_new_tokens=args.new_tokens,
            temperature=1.0,
            eos_token_ids=(),  # no EOS stop: every row generates new_tokens, as on the other side
            pad_token_id=tokenizer.pad_token_id,
        )
        scorer = RewardScorer(helpful, safety, tokenizer, autocast=True)
        self.engine = self.start_engine(policy, tokenizer, args)
        self.trainer = PPOTrainer(
            policy,
            TimedReference(policy),
            critic,
            make_reward_fn(scorer),
            tokenizer,
            settings(args),
            sampling,
            optimizer,
            autocast=True,
            engine=self.engine,
        )
        self.records, self.prompt_ids, self.device = records, prompt_ids, device
        sampler = self.trainer.sampler
        if sampler is not None:  # copying the policy into the merged copy is part of generating
            refresh = sampler.refresh

            def timed_refresh():
                with CLOCK("generation"):
                    refresh()

            sampler.refresh = timed_refresh

    def start_engine(self, policy, tokenizer, args):
        return None

    def iteration(self, seed: int) -> dict:
        """PPOTrainer.iteration, with the rollout and the update timed apart."""
        trainer = self.trainer
        CLOCK.take()
        sync(self.device)
        start = time.perf_counter()
        with timed_engine():
            rollout = trainer.rollout(self.records, self.prompt_ids, seed)
        sync(self.device)
        middle = time.perf_counter()
        times = CLOCK.take()
        trainer.policy.eval()
        stats = trainer.train_on(rollout, seed + 1)
        sync(self.device)
        end = time.perf_counter()
        CLOCK.take()
        return {
            **split_phases(times, middle - start, end - middle),
            "tokens": int(rollout.response_mask.sum()),
            "reward": round(rollout.stats["reward"], 3),
            "policy_loss": round(stats["policy_loss"], 4),
        }


class VLLMSide(PaddockSide):
    """Paddock's trainer with rollouts from vLLM (`--vllm`): the worker starts from the merged
    policy; sending it the updated weights before each rollout is timed as generation."""

    engine_kind = "vllm"

    def start_engine(self, policy, tokenizer, args):
        from alignment.engines.vllm_client import VLLMEngine, require_python
        from alignment.recipes.schema import VLLMConfig

        settings = VLLMConfig(python=require_python(), threads=args.threads)
        engine = VLLMEngine(policy, tokenizer, settings, args.device)
        print(f"vLLM {engine.vllm_version} start-up: {engine.startup_seconds:.1f}s (not counted)")
        for method in ("sync", "generate_tokens"):
            untimed = getattr(engine, method)

            def timed(*a, untimed=untimed, **k):
                with CLOCK("generation"):
                    return untimed(*a, **k)

            setattr(engine, method, timed)
        return engine


# ------------------------------------------------------------------------------------ transformers


def token_logprobs(logits: torch.Tensor, sequences: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """Log-probs of the response tokens from the full logits [R, P+N, V]: log_softmax + gather."""
    logits = logits[:, prompt_length - 1 : -1].float()
    return logits.log_softmax(-1).gather(-1, sequences[:, prompt_length:, None]).squeeze(-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    probs = logits.softmax(-1)
    return torch.logsumexp(logits, -1) - (probs * logits).sum(-1)


def mask_through_eos(responses: torch.Tensor, eos_id: int) -> torch.Tensor:
    """1 on each response token up to and including its first EOS (everything if none)."""
    is_eos = responses == eos_id
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, responses.shape[1])
    return (torch.arange(responses.shape[1], device=responses.device)[None] < first[:, None]).long()


def positions(attention_mask: torch.Tensor) -> torch.Tensor:
    """Position ids that skip the left padding (TRL passes them explicitly too)."""
    return (attention_mask.cumsum(1) - 1).clamp(min=0)


class TransformersSide:
    def __init__(self, path, tokenizer, records, prompt_ids, args):
        from peft import get_peft_model
        from transformers import LlamaForCausalLM, LlamaForSequenceClassification, LlamaForTokenClassification

        dtype, self.device = getattr(torch, args.base_dtype), args.device
        base = LlamaForCausalLM.from_pretrained(path, dtype=dtype).to(self.device)
        self.policy = get_peft_model(base, lora())  # PEFT puts each LoRA layer where its base layer is
        helpful, safety = (
            LlamaForSequenceClassification.from_pretrained(path, num_labels=1, dtype=dtype)
            .to(self.device)
            .requires_grad_(False)
            .eval()
            for _ in range(2)
        )
        for rm in (helpful, safety):
            rm.config.pad_token_id = tokenizer.pad_token_id
        value_model = LlamaForTokenClassification.from_pretrained(path, num_labels=1, dtype=dtype).to(
            self.device
        )
        value_model.score.float()  # a trainable head stays fp32, as Paddock's value head
        with torch.no_grad():
            value_model.score.weight.copy_(helpful.score.weight)
            value_model.score.bias.zero_()
        self.critic = get_peft_model(value_model, lora(modules_to_save=["score"]))
        self.policy_params = [p for p in self.policy.parameters() if p.requires_grad]
        self.critic_params = [p for p in self.critic.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.policy_params, self.critic_params, LR, CRITIC_LR)
        self.reward_fn = make_reward_fn(RewardScorer(helpful, safety, tokenizer, autocast=True))
        self.tokenizer, self.settings, self.args = tokenizer, settings(args), args
        self.records = records
        input_ids, prompt_mask = left_pad(prompt_ids, tokenizer.pad_token_id)
        self.input_ids, self.prompt_mask = input_ids.to(self.device), prompt_mask.to(self.device)

    def forward_values(self, sequences, attention_mask, prompt_length):
        out = self.critic(
            input_ids=sequences, attention_mask=attention_mask, position_ids=positions(attention_mask)
        )
        return out.logits[:, prompt_length - 1 : -1, 0]

    def forward_logprobs(self, sequences, attention_mask, prompt_length):
        out = self.policy(
            input_ids=sequences, attention_mask=attention_mask, position_ids=positions(attention_mask)
        )
        return out.logits

    @torch.no_grad()
    def rollout(self, seed: int) -> dict:
        s, tokenizer, N = self.settings, self.tokenizer, self.args.new_tokens
        self.policy.eval()
        self.critic.eval()
        P = self.input_ids.shape[1]
        with autocast(self.device):
            with CLOCK("generation"):
                torch.manual_seed(seed)
                sequences = self.policy.generate(
                    input_ids=self.input_ids,
                    attention_mask=self.prompt_mask,
                    do_sample=True,
                    temperature=1.0,
                    top_k=0,
                    top_p=1.0,
                    max_new_tokens=N,
                    min_new_tokens=N,  # EOS suppressed: the same number of tokens as Paddock
                    eos_token_id=tokenizer.eos_token_id,
                    pad_token_id=tokenizer.pad_token_id,
                )
            assert sequences.shape[1] == P + N, sequences.shape
            response_mask = mask_through_eos(sequences[:, P:], tokenizer.eos_token_id)
            mask = response_mask.float()
            attention = torch.cat([self.prompt_mask, response_mask], dim=1)
            logprobs = token_logprobs(self.forward_logprobs(sequences, attention, P), sequences, P) * mask
            with CLOCK("reference"), self.policy.disable_adapter():
                ref = token_logprobs(self.forward_logprobs(sequences, attention, P), sequences, P) * mask
            with CLOCK("values"):
                values = self.forward_values(sequences, attention, P).float() * mask
        texts = [
            tokenizer.decode(ids[m.bool()], skip_special_tokens=True).strip()
            for ids, m in zip(sequences[:, P:], response_mask, strict=True)
        ]
        # The scorer combines the RMs' scores on the CPU; the rest of the rollout is on the device.
        raw = self.reward_fn(self.records, texts, sequences, response_mask)["reward"].float().to(self.device)
        reward = whiten(raw)  # whiten_rewards="batch", as the Paddock side
        kl = kl_per_token(logprobs, ref, s.kl_estimator) * mask
        rewards = kl_penalised_rewards(reward, kl, mask, s.beta)
        advantages, returns = gae(rewards, values, mask, s.gamma, s.lam)
        advantages = whiten(advantages, mask)
        return {
            "sequences": sequences,
            "attention": attention,
            "mask": mask,
            "P": P,
            "logprobs": logprobs,
            "values": values,
            "advantages": advantages,
            "returns": returns,
            "reward": float(raw.mean()),
        }

    def train_on(self, r: dict, seed: int) -> dict:
        s = self.settings
        generator = torch.Generator().manual_seed(seed)
        R, P = r["sequences"].shape[0], r["P"]
        losses = []
        for _ in range(s.ppo_epochs):
            order = torch.randperm(R, generator=generator)
            for start in range(0, R, s.minibatch_size):
                idx = order[start : start + s.minibatch_size].to(self.device)
                seq, att, mask = r["sequences"][idx], r["attention"][idx], r["mask"][idx]
                with autocast(self.device):
                    logits = self.forward_logprobs(seq, att, P)[:, P - 1 : -1].float()
                logprobs = logits.log_softmax(-1).gather(-1, seq[:, P:, None]).squeeze(-1)
                with torch.no_grad():
                    entropy = masked_mean(entropy_from_logits(logits), mask)
                pg_loss, _ = clipped_policy_loss(
                    logprobs, r["logprobs"][idx], r["advantages"][idx], mask, s.clip
                )
                pg_loss.backward()
                del logits, logprobs
                with autocast(self.device):
                    values = self.forward_values(seq, att, P).float()
                vf_loss, _ = clipped_value_loss(
                    values, r["values"][idx], r["returns"][idx], mask, s.value_clip
                )
                (s.value_coef * vf_loss).backward()
                torch.nn.utils.clip_grad_norm_(self.policy_params, s.max_grad_norm)
                torch.nn.utils.clip_grad_norm_(self.critic_params, s.max_grad_norm)
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                losses.append((float(pg_loss.detach()), float(vf_loss.detach()), float(entropy)))
        return {"policy_loss": sum(loss[0] for loss in losses) / len(losses)}

    def iteration(self, seed: int) -> dict:
        CLOCK.take()
        sync(self.device)
        start = time.perf_counter()
        rollout = self.rollout(seed)
        sync(self.device)
        middle = time.perf_counter()
        times = CLOCK.take()
        stats = self.train_on(rollout, seed + 1)
        sync(self.device)
        end = time.perf_counter()
        CLOCK.take()
        return {
            **split_phases(times, middle - start, end - middle),
            "tokens": int(rollout["mask"].sum()),
            "reward": round(rollout["reward"], 3),
            "policy_loss": round(stats["policy_loss"], 4),
        }


SIDES = {"paddock": PaddockSide, "transformers": TransformersSide}


def build(name: str, path, args):
    """One side on `args.device`; the phase clock waits for that device."""
    CLOCK.device = args.device
    tokenizer = load_tokenizer(path)
    records, prompt_ids = select_prompts(tokenizer, args.batch, args.prompt_tokens)
    side = VLLMSide if name == "paddock+vllm" else SIDES[name]
    return side(path, tokenizer, records, prompt_ids, args), prompt_ids


# ------------------------------------------------------------------------------------------ memory


def measure_memory(name: str, args) -> None:
    """Child process: how far resident memory rises above its pre-iteration level during one
    iteration (after a warm-up one), and the whole process's peak. Started with a low
    MALLOC_MMAP_THRESHOLD_ so RSS follows live memory; a thread samples it every half millisecond.
    On a GPU the same figures come from the CUDA allocator instead (AllocatorPeak)."""
    side, _ = build(name, prepare(), args)
    side.iteration(seed=0)
    sampler = memory_sampler(args.device)
    sampler.start()
    side.iteration(seed=1)
    print(json.dumps(sampler.stop("iteration_mb")))


def child_memory(name: str, args) -> dict:
    cmd = [sys.executable, __file__, "--measure-memory", name]
    for key in (
        "batch",
        "prompt_tokens",
        "new_tokens",
        "minibatch",
        "threads",
        "base_dtype",
        "rollout_logprobs",
        "device",
    ):
        cmd += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    if args.no_merged_sampling:
        cmd.append("--no-merged-sampling")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(args.threads)}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------- main


def profile_update(path, args) -> None:
    """Where an update's time goes, by op: one rollout, one update to warm up, one profiled. On a
    GPU the kernels are recorded too and the ops are ranked by their GPU time."""
    from torch.profiler import ProfilerActivity, profile

    side, _ = build("paddock", path, args)
    trainer = side.trainer
    rollout = trainer.rollout(side.records, side.prompt_ids, seed=0)
    trainer.train_on(rollout, seed=1)
    on_gpu = args.device.type == "cuda"
    activities = [ProfilerActivity.CPU, ProfilerActivity.CUDA] if on_gpu else [ProfilerActivity.CPU]
    with profile(activities=activities) as prof:
        trainer.train_on(rollout, seed=2)
        sync(args.device)
    key = "self_device_time_total" if on_gpu else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=args.profile_update))


def build_parser() -> argparse.ArgumentParser:
    """The command line, separate from main() so that tests can parse it without running anything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--prompt-tokens", type=int, default=64)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--minibatch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument(
        "--base-dtype",
        choices=["float32", "bfloat16"],
        default="float32",
        help="dtype of the frozen base weights (LoRA adapters and heads stay fp32; bf16 autocast either way)",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument(
        "--vllm",
        action="store_true",
        help="also time Paddock's trainer with vLLM rollouts (make install-vllm); speed only, no memory run",
    )
    parser.add_argument(
        "--no-merged-sampling", action="store_true", help="Paddock samples from the PEFT policy itself"
    )
    parser.add_argument(
        "--rollout-logprobs",
        choices=["policy", "sampler"],
        default="policy",
        help="Paddock's rollout log-probs: a policy forward pass (the stage's default) or the engine's own",
    )
    parser.add_argument(
        "--profile-update",
        type=int,
        metavar="ROWS",
        help="instead of the comparison, profile one Paddock update and print the ROWS costliest ops",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="where both sides' models, inputs and memory subprocesses go: cpu, cuda, cuda:N or auto",
    )
    parser.add_argument("--measure-memory", choices=sorted(SIDES), help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Arguments with `device` resolved before any model loads; a GPU that is not there is a
    one-line usage error."""
    return parse_device_args(build_parser(), argv)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    if args.measure_memory:
        return measure_memory(args.measure_memory, args)
    if args.profile_update:
        return profile_update(prepare(), args)

    path = prepare()
    print(f"machine: {machine(args.device)}")
    print(f"device: {args.device}, load: {os.getloadavg()}")
    sides = {}
    for name in [*SIDES, "paddock+vllm"] if args.vllm else SIDES:
        sides[name], prompt_ids = build(name, path, args)
    lengths = [len(p) for p in prompt_ids]
    print(
        f"{args.batch} prompts ({min(lengths)}-{max(lengths)} tokens, "
        f"mean {sum(lengths) / len(lengths):.0f}), "
        f"{args.new_tokens} new tokens, minibatch {args.minibatch} "
        f"({-(-args.batch // args.minibatch)} gradient steps), LoRA r=16, "
        f"{args.base_dtype} base weights + bf16 autocast, Paddock's rollout log-probs from the "
        f"{args.rollout_logprobs}"
    )
    seeds = iter(range(1, 10_000))
    print("warm-up")
    for name, side in sides.items():
        print(f"  {name}: {side.iteration(seed=0)}", flush=True)
    results = alternate(
        {name: (lambda side=side: side.iteration(seed=next(seeds))) for name, side in sides.items()},
        args.repeats,
    )
    for side in sides.values():
        if getattr(side, "engine", None) is not None:
            side.engine.close()
    del sides
    floor = iteration_floor(path, args, max(lengths))

    memory = {}
    if not args.no_memory:
        for name in SIDES:
            memory[name] = child_memory(name, args)
            print(f"memory {name}: {memory[name]}", flush=True)

    on_gpu = args.device.type == "cuda"
    keys = [*PHASES, "seconds"]
    med = {
        name: {k: median(runs, k) for k in [*keys, "reference", "values", "rewards"]}
        for name, runs in results.items()
    }
    for name, runs in results.items():
        med[name]["policy_logprobs_and_rest"] = median(runs, "policy_logprobs_and_rest")
    ours, theirs = med["paddock"], med["transformers"]
    rows = [
        [PHASE_NAMES[k], f"{ours[k]:.2f}", f"{theirs[k]:.2f}", f"{theirs[k] / ours[k]:.2f}x"] for k in keys
    ]
    rows += [
        [f"  of which {k}", f"{ours[k]:.2f}", f"{theirs[k]:.2f}", f"{theirs[k] / ours[k]:.2f}x"]
        for k in ("policy_logprobs_and_rest", "reference", "values", "rewards")
    ]
    if memory:
        rows.append(
            [
                "iteration memory MB",
                f"{memory['paddock']['iteration_mb']:.0f}",
                f"{memory['transformers']['iteration_mb']:.0f}",
                "",
            ]
        )
        rows.append(
            [
                "peak allocated MB" if on_gpu else "peak RSS MB",
                f"{memory['paddock']['peak_mb']:.0f}",
                f"{memory['transformers']['peak_mb']:.0f}",
                "",
            ]
        )
    print()
    print(f"medians of {args.repeats} alternating iterations, {torch.get_num_threads()} threads")
    print_table(["phase (s)", "Paddock", "transformers", "speedup"], rows)
    bound = theirs["seconds"] / (ours["seconds"] - ours["generation"])
    print(f"speedup if Paddock's generation took no time: at most {bound:.2f}x")
    print(
        f"the iteration's matmuls alone: {floor:.2f}s ({floor / ours['seconds']:.0%} of Paddock's); "
        f"speedup of a contender doing nothing else: at most {theirs['seconds'] / floor:.2f}x"
    )
    summary = {
        "benchmark": "ppo",
        "device": str(args.device),
        "speedup": round(theirs["seconds"] / ours["seconds"], 2),
        "phase_speedup": {k: round(theirs[k] / ours[k], 2) for k in PHASES},
        "speedup_bound_free_generation": round(bound, 2),
        "matmul_floor_seconds": round(floor, 2),
        "speedup_bound": round(theirs["seconds"] / floor, 2),
        "round_speedups": [
            round(t["seconds"] / o["seconds"], 2)
            for o, t in zip(results["paddock"], results["transformers"], strict=True)
        ],
        "seconds": {name: {k: round(v, 2) for k, v in m.items()} for name, m in med.items()},
        "threads": torch.get_num_threads(),
        "base_dtype": args.base_dtype,
        "rollout_logprobs": args.rollout_logprobs,
    }
    if args.vllm:
        with_vllm = med["paddock+vllm"]
        print(
            f"Paddock with vLLM rollouts: {with_vllm['seconds']:.2f}s per iteration "
            f"(generation {with_vllm['generation']:.2f}s, weight sync included) against "
            f"{ours['seconds']:.2f}s (generation {ours['generation']:.2f}s) with Paddock's engine"
        )
        summary["vllm_speedup"] = round(ours["seconds"] / with_vllm["seconds"], 2)
        summary["vllm_generation_speedup"] = round(ours["generation"] / with_vllm["generation"], 2)
    if memory:
        summary["peak_memory_ratio"] = round(
            memory["paddock"]["iteration_mb"] / memory["transformers"]["iteration_mb"], 2
        )
        summary["peak_allocated_ratio" if on_gpu else "peak_rss_ratio"] = round(
            memory["paddock"]["peak_mb"] / memory["transformers"]["peak_mb"], 2
        )
    print_summary(summary)


if __name__ == "__main__":
    main()
