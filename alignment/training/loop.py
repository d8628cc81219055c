"""The fine-tuning loop shared by SFT, reward models and the later fine-tuning stages.

Our own loop rather than transformers' Trainer / TRL's trainers, for three reasons that matter
to this project: resume must reproduce an uninterrupted run bit for bit (we control every RNG
and the data order, which is a pure function of seed and epoch); Paddock's fused loss returns no
logits, which the TRL trainers' metrics expect; and every stage writes the same artifacts
(metrics.jsonl, TensorBoard, plots) the same way.

The loop only knows examples (dicts of token lists), a collate function and a loss function
`loss_fn(model, batch, num_items) -> (loss, stats)`; the stage decides what a loss is.

Under several processes (alignment/distributed.py) each process takes every world_size-th example
of each micro-batch and accelerate wraps the model (DDP or FSDP) to average gradients.
The loss is divided by the global item count and scaled by world_size, so the averaged gradient is
the one-process gradient of the whole batch and the run follows the same trajectory (to float
summation order). Only the main process logs and checkpoints.
"""

from __future__ import annotations

import math
import random
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from alignment import distributed
from alignment.errors import PaddockError
from alignment.placement import module_device, to_device
from alignment.precision import bf16_autocast
from alignment.recipes.config import RecipeError, check_range, field_values, join, setting
from alignment.runs import StageDir
from alignment.training import sharded
from alignment.training.checkpoint import (
    announce_resume,
    latest_checkpoint,
    load_training_checkpoint,
    save_training_checkpoint,
)
from alignment.training.schedule import cosine_multiplier, warmup_steps


@dataclass(kw_only=True)
class TrainingConfig:
    """The fine-tuning loop's optimiser, schedule and bookkeeping: the recipe fields of every stage that
    trains on this loop (SFT, reward models, and the fine-tune at the end of rejection sampling, Ghost
    Attention and context distillation). Defaults are the paper's SFT values; a stage whose paper
    values differ (the reward model) sets its own defaults."""

    learning_rate: float = setting("Peak learning rate (paper: 2e-5).", default=2e-5)
    epochs: float = setting("Passes over the data (paper: 2); fractions allowed.", default=2.0)
    batch_size: int = setting(
        "Examples per micro-batch (a preference pair counts as one; paper SFT: 64 of 4096 tokens).", default=8
    )
    grad_accum: int = setting("Micro-batches per optimizer step.", default=1)
    weight_decay: float = setting("AdamW weight decay (paper: 0.1).", default=0.1)
    warmup_ratio: float = setting("Share of steps spent warming up the LR.", default=0.03)
    min_warmup_steps: int = setting("Warm up for at least this many steps.", default=0)
    min_lr_ratio: float = setting("Cosine schedule floor as a share of the peak LR.", default=0.0)
    max_grad_norm: float = setting("Gradient clipping norm.", default=1.0)
    max_steps: int | None = setting("Stop after this many optimizer steps (quick runs).", default=None)
    log_every: int = setting("Log metrics every N steps.", default=1)
    eval_every: int = setting("Held-out evaluation every N steps (0: at the end only).", default=0)
    checkpoint_every: int = setting("Save a resumable checkpoint every N steps.", default=20)

    def check_config(self, path: str) -> None:
        for key in ("batch_size", "grad_accum", "log_every", "checkpoint_every"):
            check_range(getattr(self, key), join(path, key), low=1)
        for key in ("weight_decay", "min_warmup_steps", "max_grad_norm", "eval_every"):
            check_range(getattr(self, key), join(path, key), low=0)
        check_range(self.learning_rate, join(path, "learning_rate"), low=0)
        if not self.epochs > 0:
            raise RecipeError(f"{join(path, 'epochs')}: {self.epochs} must be above 0", join(path, "epochs"))
        for key in ("warmup_ratio", "min_lr_ratio"):
            check_range(getattr(self, key), join(path, key), low=0, high=1)
        if self.max_steps is not None:
            check_range(self.max_steps, join(path, "max_steps"), low=1)


@dataclass(kw_only=True)
class LoopSettings(TrainingConfig):
    """What the loop reads: a stage's TrainingConfig fields (`from_config`) plus what the run decides."""

    betas: tuple[float, float] = (0.9, 0.95)  # the paper's AdamW betas and epsilon
    adam_eps: float = 1e-5
    autocast: bool = False  # bf16 autocast (the recipe's model.precision)
    seed: int = 0
    progress: bool = True

    @classmethod
    def from_config(cls, cfg: TrainingConfig, **run) -> LoopSettings:
        return cls(**field_values(TrainingConfig, cfg), **run)


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    return torch.randperm(n, generator=generator).tolist()


def steps_per_epoch(n_examples: int, settings: TrainingConfig) -> int:
    """Full optimizer steps in one pass over `n_examples` (the remainder is left out), at least 1."""
    return max(n_examples // (settings.batch_size * settings.grad_accum), 1)


def total_steps(n_examples: int, settings: TrainingConfig) -> int:
    """How many optimizer steps a run over `n_examples` takes: `epochs` passes of
    `steps_per_epoch` (a fractional `epochs` takes that share of the last epoch, rounded up),
    at least 1, and at most `max_steps` where that is set."""
    total = max(math.ceil(steps_per_epoch(n_examples, settings) * settings.epochs), 1)
    if settings.max_steps:
        total = min(total, settings.max_steps)
    return total


def step_batches(n_examples: int, settings: LoopSettings) -> list[list[list[int]]]:
    """The whole run's data order: for each optimizer step, its micro-batches of example indices.
    A fractional `epochs` takes that share of the last epoch."""
    per_step = settings.batch_size * settings.grad_accum
    per_epoch = steps_per_epoch(n_examples, settings)
    plan = []
    for step in range(total_steps(n_examples, settings)):
        epoch, index = divmod(step, per_epoch)
        order = epoch_order(n_examples, settings.seed, epoch)
        chunk = order[index * per_step : (index + 1) * per_step] or order[:per_step]
        plan.append([chunk[i : i + settings.batch_size] for i in range(0, len(chunk), settings.batch_size)])
    return plan


def make_optimizer(model, settings: LoopSettings):
    decay, no_decay = [], []
    for param in model.parameters():
        if param.requires_grad:
            # Norm weights and biases are not decayed (the usual AdamW practice).
            (no_decay if param.ndim < 2 else decay).append(param)
    groups = [
        {"params": decay, "weight_decay": settings.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    if not decay and not no_decay:
        raise PaddockError("nothing to train: every parameter is frozen")
    return torch.optim.AdamW(
        groups,
        lr=settings.learning_rate,
        betas=settings.betas,
        eps=settings.adam_eps,
        fused=fused_adamw_supported(decay + no_decay) or None,
    )


def fused_adamw_supported(params) -> bool:
    """The fused AdamW kernel (one pass over each tensor, same results as the default to float
    rounding) runs on CPU and CUDA floating-point tensors. On CPU the default per-tensor path
    took ~0.9 s a step for SmolLM2-135M on one thread, the fused kernel ~0.17 s."""
    return all(
        p.device.type in ("cpu", "cuda") and p.is_floating_point() and not isinstance(p, sharded.DTensor)
        for p in params
    )


def check_finite(value: torch.Tensor, what: str, step: int, batch: Sequence[int]) -> None:
    if not torch.isfinite(value).all():
        raise PaddockError(
            f"{what} is {value.item() if value.numel() == 1 else 'not finite'} at step {step} "
            f"(examples {list(batch)[:8]}); the last good checkpoint is kept"
        )


def train(
    model,
    examples: Sequence[dict],
    collate: Callable,
    loss_fn: Callable,
    settings: LoopSettings,
    stage: StageDir,
    evaluate: Callable | None = None,
    description: str = "train",
) -> dict:
    """Run (or resume) the loop; returns the final metrics. Writes checkpoints and metrics to `stage`."""
    plan = step_batches(len(examples), settings)
    total = len(plan)
    warmup = warmup_steps(total, settings.warmup_ratio, settings.min_warmup_steps)
    fsdp = sharded.ShardedModel(model) if sharded.requested() else None
    net = fsdp.work if fsdp else model  # what trains; `model` gets the weights back at the end
    optimizer = make_optimizer(net, settings)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: cosine_multiplier(s, total, warmup, settings.min_lr_ratio)
    )
    start = 0
    checkpoint = latest_checkpoint(stage.checkpoints)
    if checkpoint is None:
        # The loop's own randomness (dropout) must not depend on what ran before it: a resumed
        # stage skips finished work (cached samples, reward models it no longer loads) whose
        # draws the uninterrupted run made. A checkpoint restores the state instead.
        seed = settings.seed * 1_000_003 + zlib.crc32(stage.root.name.encode())
        torch.manual_seed(seed)
        random.seed(seed)
    else:
        restore = fsdp.restore(optimizer) if fsdp else None
        start = load_training_checkpoint(checkpoint, model, optimizer, scheduler, restore)["step"]
        announce_resume(description, start, total, checkpoint)
    stage.metrics.truncate_after(start)  # also rows a killed run logged before its first checkpoint
    # The scheduler stays on the bare optimizer: accelerate's prepared scheduler would step once
    # per process.
    accelerator = None if fsdp else distributed.accelerator()
    step_model, step_optimizer = (net, optimizer) if fsdp else distributed.prepare(model, optimizer)
    scale = distributed.world_size()
    main = distributed.is_main()
    net.train()
    autocast = bf16_autocast(step_model, settings.autocast)
    bar = tqdm(
        total=total, initial=start, desc=description, disable=not (settings.progress and main), unit="step"
    )
    last = {}
    device = module_device(model)  # where every micro-batch goes
    for step in range(start, total):
        began = time.perf_counter()
        shards = [distributed.shard(ids) for ids in plan[step]]
        # A process whose share of a micro-batch is empty (fewer examples than processes) runs one
        # borrowed example at weight 0, so every process makes the same collective calls.
        weights = [1.0 if ids else 0.0 for ids in shards]
        shards = [ids or whole[:1] for ids, whole in zip(shards, plan[step], strict=True)]
        micro_batches = [to_device(collate([examples[i] for i in ids]), device) for ids in shards]
        (num_items,) = distributed.all_reduce_sum(
            [sum(b["num_items"] * w for b, w in zip(micro_batches, weights, strict=True))]
        )
        stats_sum: dict[str, float] = {}
        loss_total = 0.0
        for ids, batch, weight in zip(shards, micro_batches, weights, strict=True):
            with autocast:
                loss, stats = loss_fn(step_model, batch, num_items)
            check_finite(loss.detach(), "loss", step + 1, ids)
            loss = loss * weight
            if accelerator:
                accelerator.backward(loss * scale)  # DDP averages over processes; we want the sum
            else:
                (loss * scale).backward()  # FSDP averages too; scale is 1 for one process
            loss_total += float(loss.detach())
            for key, value in stats.items():
                stats_sum[key] = stats_sum.get(key, 0.0) + value * weight
        trainable = [p for p in net.parameters() if p.requires_grad]
        if accelerator:
            grad_norm = accelerator.clip_grad_norm_(trainable, settings.max_grad_norm)
        else:
            grad_norm = torch.nn.utils.clip_grad_norm_(trainable, settings.max_grad_norm)
        if grad_norm is not None:
            check_finite(grad_norm, "gradient norm", step + 1, [i for ids in shards for i in ids])
        lr = scheduler.get_last_lr()[0]
        step_optimizer.step()
        scheduler.step()
        step_optimizer.zero_grad(set_to_none=True)
        seconds = time.perf_counter() - began
        tokens = sum(b.get("tokens", 0) * w for b, w in zip(micro_batches, weights, strict=True))
        if distributed.enabled():  # every process's share of the loss and stats, summed
            keys = sorted(stats_sum)
            loss_total, tokens, *values = distributed.all_reduce_sum(
                [loss_total, tokens, *(stats_sum[k] for k in keys)]
            )
            stats_sum = dict(zip(keys, values, strict=True))
        last = {
            "step": step + 1,
            "loss": loss_total,
            "lr": lr,
            "grad_norm": sharded.to_float(grad_norm) if grad_norm is not None else None,
            "tokens_per_s": tokens / seconds,
            **stats_sum,
        }
        done = step + 1 == total
        if evaluate is not None and (done or (settings.eval_every and (step + 1) % settings.eval_every == 0)):
            # Every process evaluates the bare model (no collective inside), so all stay in step.
            net.eval()
            last.update({f"eval_{k}": v for k, v in evaluate(net).items()})
            net.train()
        if main and ((step + 1) % settings.log_every == 0 or done or "eval_loss" in last):
            stage.metrics.log(last)
        bar.set_postfix(loss=f"{loss_total:.4f}", tok_s=f"{last['tokens_per_s']:.0f}")
        bar.update(1)
        if (step + 1) % settings.checkpoint_every == 0 and not done:
            weights, optimizer_state = fsdp.checkpoint_state(optimizer) if fsdp else (None, None)
            if main:
                save_training_checkpoint(
                    stage.checkpoints,
                    step + 1,
                    model,
                    optimizer,
                    scheduler,
                    {},
                    weights=weights,
                    optimizer_state=optimizer_state,
                )
            distributed.barrier()
    bar.close()
    if fsdp:
        fsdp.finish()
    model.eval()
    return last
