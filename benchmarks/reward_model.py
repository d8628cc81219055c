"""Reward-model training throughput and peak memory: Paddock's loop step vs TRL's RewardTrainer.

Same backbone weights (SmolLM2-135M; TRL on transformers' LlamaForSequenceClassification with
num_labels=1 and pad_token_id set, its score head copied from Paddock's so both start identical),
same data (the first N gym helpfulness pairs in order, chat-template formatted: Paddock through
`encode_pair`, TRL from the conversational prompt/chosen/rejected it tokenizes itself), same batch
(8 pairs = 16 sequences in one forward: Paddock packs them into one row without padding, as its
reward_model stage does; TRL pads them to [16, T]), the same device (`--device` below), fp32
weights under bf16 autocast (Paddock: torch.autocast; TRL: `bf16=True`), the same optimizer
(torch's fused AdamW, TRL's default `adamw_torch_fused` and what Paddock's loop builds; lr 1e-5,
betas (0.9, 0.999), eps 1e-8, no weight decay, constant lr), gradient clipping at 1.0 in both
(Paddock's loop and Trainer both clip by default), no gradient checkpointing (TRL's default turns
it on; off here so both do the same work), margin none for both (or `--margin small`: the paper's
rating margins, TRL through its `margin` column).

One Paddock step = the reward_model stage's training step as the loop runs it: the stage's
`collate` (packed) of 8 pre-encoded pairs, its `rm_loss` under autocast, backward, clip, the
loop's `make_optimizer` AdamW step, scheduler step, zero_grad. One TRL step = everything
`trainer.train()` does between two `on_step_end` callbacks (fetch + collate, training_step, clip,
optimizer and scheduler step, zero_grad, logging bookkeeping). Speed: one `trainer.train()` run;
after TRL's warm-up, a callback runs Paddock's steps in rounds between TRL's rounds (Paddock k,
TRL k, Paddock k, ...), the step index advancing through the same batches for both; medians of
per-step time. Peak memory: each contender alone in a fresh subprocess, resident memory (the
CUDA allocator's on a GPU) above its level before the measured step (after a first full step, so
optimizer state is already in the baseline).

    pip install -e '.[bench]'   # TRL: the only user of it in the project
    python benchmarks/reward_model.py [--rounds 3] [--steps 4] [--warmup 2] [--batch 8] [--padded]
                                      [--device cpu]

`--padded` runs Paddock on right-padded batches instead (the stage's `packing: false`). On a
busy machine set OMP_NUM_THREADS=1: both contenders (and the memory subprocesses) use it.

`--device` is the CPU by default: Paddock's model and batches stay there and TRL runs with
`use_cpu=True`. `--device cuda` puts Paddock's model and batches on the GPU and leaves TRL's
`use_cpu` off, so its Trainer moves the model to the GPU itself; the memory subprocesses follow,
with the CUDA allocator's peak in place of resident memory (`peak_allocated_ratio` replaces
`peak_rss_ratio`, as in benchmarks/train_step.py), and every step timer waits for the GPU before
it is read. Trainer always takes the first visible GPU (and spreads over several with
DataParallel), so with more than one GPU visible the run is refused: choose one with
CUDA_VISIBLE_DEVICES. A GPU that is not there is a one-line usage error before any model loads.
The CUDA path is not yet run on a GPU: only its argument handling is tested
(tests/test_benchmarks_device.py).

The last line is a JSON object with `speedup` (Paddock pairs/s / TRL pairs/s), `peak_memory_ratio`
(Paddock / TRL), pairs/s, mean tokens per sequence and tokens computed per step of each.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from alignment import load_model, load_tokenizer
from alignment.base_model.default_models import prepare
from alignment.data.loading import load_preferences
from alignment.data.margins import margin_table, pair_margin
from alignment.placement import to_device
from alignment.training.loop import LoopSettings, make_optimizer
from reward_models.scoring import encode_pair, supports_packing
from reward_models.training import collate, rm_loss

from common import machine, memory_sampler, parse_device_args, print_summary, print_table, sync

ROOT = Path(__file__).resolve().parent.parent
PAIRS = ROOT / "data" / "gym" / "helpfulness_pairs_train.jsonl"
LR = 1e-5
BETAS = (0.9, 0.999)  # TRL's (transformers') AdamW defaults
EPS = 1e-8
MAX_GRAD_NORM = 1.0


def load_pairs(n: int) -> list:
    pairs = load_preferences(PAIRS, "llama2").pairs
    if len(pairs) < n:
        raise SystemExit(f"{PAIRS}: {len(pairs)} pairs, the run needs {n}")
    return pairs[:n]


def margins(pairs, mode: str) -> list[float]:
    table = margin_table(mode)
    return [float(pair_margin(p, table)) for p in pairs]


# ---- Paddock -----------------------------------------------------------------------------------


class PaddockContender:
    def __init__(self, path, pairs, args):
        self.device = args.device
        self.tokenizer = load_tokenizer(path)
        self.model = load_model(path, head="reward", dtype=torch.float32, device=self.device).train()
        settings = LoopSettings(
            learning_rate=LR, epochs=1, batch_size=args.batch, weight_decay=0.0, betas=BETAS, adam_eps=EPS
        )
        self.optimizer = make_optimizer(self.model, settings)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)
        self.examples = [
            {"chosen": c, "rejected": r, "margin": m}
            for (c, r), m in zip(
                (encode_pair(p, self.tokenizer) for p in pairs), margins(pairs, args.margin), strict=True
            )
        ]
        self.packed = not args.padded and supports_packing(self.model)
        self.batch = args.batch
        self.computed: list[int] = []  # token positions each step's forward computes (padding included)
        self.losses: list[float] = []

    def step(self, index: int) -> None:
        """The loop's step (alignment/training/loop.py `train`) on the reward_model stage's pieces."""
        batch = collate(
            self.examples[index * self.batch : (index + 1) * self.batch],
            self.tokenizer.pad_token_id,
            self.packed,
        )
        batch = to_device(batch, self.device)  # as the loop moves each micro-batch to its model
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            loss, _stats = rm_loss(self.model, batch, batch["num_items"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.computed.append(batch["input_ids"].numel())
        self.losses.append(float(loss.detach()))

    def sequence_lengths(self) -> list[int]:
        return [len(ex[key]) for ex in self.examples for key in ("chosen", "rejected")]


# ---- TRL ---------------------------------------------------------------------------------------


def trl_trainer(path, pairs, args, max_steps: int, callbacks, output_dir: str, score_weight=None):
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification

    try:
        from trl import RewardConfig, RewardTrainer
    except ImportError:
        raise SystemExit("this benchmark needs TRL: pip install -e '.[bench]'") from None

    tokenizer = load_tokenizer(path)
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=torch.float32, pad_token_id=tokenizer.pad_token_id
    )
    if score_weight is not None:
        with torch.no_grad():
            model.score.weight.copy_(score_weight)
    rows = [
        {
            "prompt": p.prompt,
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ]
    if args.margin != "none":
        for row, m in zip(rows, margins(pairs, args.margin), strict=True):
            row["margin"] = m
    config = RewardConfig(
        output_dir=output_dir,
        use_cpu=args.device.type == "cpu",  # off: Trainer puts the model on the (one visible) GPU
        bf16=True,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=max_steps,
        learning_rate=LR,
        lr_scheduler_type="constant",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=MAX_GRAD_NORM,
        activation_checkpointing=False,  # TRL's default (gradient_checkpointing=True) would recompute
        train_sampling_strategy="sequential",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    return RewardTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        callbacks=callbacks,
    )


def trl_sequence_lengths(trainer) -> list[int]:
    data = trainer.train_dataset
    return [len(ids) for column in ("chosen_ids", "rejected_ids") for ids in data[column]]


# ---- speed -------------------------------------------------------------------------------------


def make_interleave_callback(paddock: PaddockContender, args, times: dict):
    from transformers import TrainerCallback

    class Interleave(TrainerCallback):
        """Times TRL's steps (on_step_end to on_step_end) and runs Paddock's rounds in between."""

        def __init__(self):
            self.last = None

        def on_train_begin(self, *_args, **_kwargs):
            self.last = time.perf_counter()

        def on_step_end(self, _args, state, _control, **_kwargs):
            sync(args.device)  # TRL's step ends when the GPU has done its work, not when it is queued
            now = time.perf_counter()
            done = state.global_step  # TRL steps finished; the one just ended used batch done - 1
            measured = done - args.warmup
            if measured > 0:
                times["trl"].append(now - self.last)
                if measured % args.steps == 0:
                    recent = times["trl"][-args.steps :]
                    print(f"  round {measured // args.steps}/{args.rounds} trl: {fmt(recent)}", flush=True)
            if measured >= 0 and measured % args.steps == 0 and measured // args.steps < args.rounds:
                rnd = []
                for index in range(done, done + args.steps):  # the batches TRL takes next
                    start = time.perf_counter()
                    paddock.step(index)
                    sync(args.device)
                    rnd.append(time.perf_counter() - start)
                times["paddock"] += rnd
                print(f"  round {measured // args.steps + 1}/{args.rounds} paddock: {fmt(rnd)}", flush=True)
            self.last = time.perf_counter()

    return Interleave()


def fmt(seconds: list[float]) -> str:
    return "s/step " + " ".join(f"{s:.2f}" for s in seconds)


# ---- memory ------------------------------------------------------------------------------------


def measure_memory(name: str, args) -> None:
    """Child process (started with MALLOC_MMAP_THRESHOLD_ low so RSS follows live memory): one
    full step to build optimizer state and touch the weights, then the rise during the second.
    On a GPU the figures are the CUDA allocator's (AllocatorPeak)."""
    path = prepare()
    pairs = load_pairs(2 * args.batch)
    sampler = memory_sampler(args.device)
    if name == "paddock":
        paddock = PaddockContender(path, pairs, args)
        paddock.step(0)
        sampler.start()
        paddock.step(1)
        result = sampler.stop()
    else:
        from transformers import TrainerCallback

        class Measure(TrainerCallback):
            def on_step_end(self, _args, state, _control, **_kwargs):
                if state.global_step == 1:
                    sampler.start()
                elif state.global_step == 2:
                    self.result = sampler.stop()

        measure = Measure()
        with tempfile.TemporaryDirectory() as out:
            trl_trainer(path, pairs, args, 2, [measure], out).train()
        result = measure.result
    print(json.dumps(result))


# ---- main --------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The command line, separate from main() so that tests can parse it without running anything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4, help="steps per contender per round")
    parser.add_argument("--warmup", type=int, default=2, help="unmeasured steps per contender")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--margin", choices=["none", "small", "large"], default="none")
    parser.add_argument("--padded", action="store_true", help="Paddock on padded batches, not packed")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument(
        "--device",
        default="cpu",
        help="where both contenders train (and the memory subprocesses run): cpu, cuda, cuda:N or auto",
    )
    parser.add_argument("--measure-memory", choices=["paddock", "trl"], help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Arguments with `device` resolved before any model loads: a GPU that is not there, or one
    GPU among several (TRL's Trainer would take the first visible one, or all of them), is a
    one-line usage error."""
    parser = build_parser()
    args = parse_device_args(parser, argv)
    if args.device.type == "cuda" and torch.cuda.device_count() > 1:
        parser.error(
            f"device {args.device}: {torch.cuda.device_count()} GPUs visible and TRL's Trainer takes the "
            "first (or all, with DataParallel); show it one with CUDA_VISIBLE_DEVICES=N and use --device cuda"
        )
    return args


def main() -> None:
    args = parse_args()
    warnings.filterwarnings("ignore", category=UserWarning)
    if args.measure_memory:
        return measure_memory(args.measure_memory, args)

    path = prepare()
    total_steps = args.warmup + args.rounds * args.steps
    pairs = load_pairs(total_steps * args.batch)
    print(f"machine: {machine(args.device)}")
    print(
        f"device {args.device}; {len(pairs)} gym helpfulness pairs, {args.batch} pairs/step "
        f"({2 * args.batch} sequences, one forward; Paddock {'padded' if args.padded else 'packed'}, "
        "TRL padded), "
        f"fp32 weights, bf16 autocast, fused AdamW lr {LR}, clip {MAX_GRAD_NORM}, margin {args.margin}; "
        f"{args.warmup} warm-up steps each, then {args.rounds} rounds x {args.steps} steps alternating"
    )

    paddock = PaddockContender(path, pairs, args)
    for index in range(args.warmup):
        paddock.step(index)
    times: dict[str, list[float]] = {"paddock": [], "trl": []}
    callback = make_interleave_callback(paddock, args, times)
    with tempfile.TemporaryDirectory() as out:
        trainer = trl_trainer(path, pairs, args, total_steps, [callback], out, paddock.model.score.weight)
        trl_lengths = trl_sequence_lengths(trainer)
        collator = trainer.data_collator
        train_dataset = trainer.train_dataset
        result = trainer.train()
        optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
        groups = optimizer.param_groups
        print(
            f"trl: device={trainer.args.device}, mixed_precision={trainer.accelerator.mixed_precision}, "
            f"checkpointing={trainer.model.is_activation_checkpointing}, optimizer={type(optimizer).__name__}"
            f"(lr={sorted({g['lr'] for g in groups})}, "
            f"weight_decay={sorted({g['weight_decay'] for g in groups})}"
            f", fused={groups[0]['fused']}, foreach={groups[0]['foreach']}), scheduler="
            f"{type(trainer.lr_scheduler).__name__}, max_grad_norm={trainer.args.max_grad_norm}"
        )
    trl_computed = [
        collator([train_dataset[i] for i in range(s * args.batch, (s + 1) * args.batch)])["input_ids"].numel()
        for s in range(total_steps)
    ]
    print(
        f"mean training loss over the same {total_steps} batches: paddock "
        f"{statistics.mean(paddock.losses):.4f}, trl {result.training_loss:.4f} (TRL reads the reward one "
        "token later, at the template's newline after EOS, so the two need not agree exactly)"
    )
    del trainer, paddock.model, paddock.optimizer

    seconds = {name: statistics.median(t) for name, t in times.items()}
    rate = {name: args.batch / s for name, s in seconds.items()}
    lengths = {"paddock": paddock.sequence_lengths(), "trl": trl_lengths}
    mean_tokens = {name: statistics.mean(v) for name, v in lengths.items()}
    computed = {"paddock": paddock.computed, "trl": trl_computed}
    mean_computed = {name: statistics.mean(v) for name, v in computed.items()}

    memory = {}
    if not args.skip_memory:
        for name in ("paddock", "trl"):
            cmd = [sys.executable, __file__, "--measure-memory", name, "--batch", str(args.batch)]
            cmd += ["--device", str(args.device)]
            cmd += ["--margin", args.margin] + (["--padded"] if args.padded else [])
            env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            memory[name] = json.loads(out.strip().splitlines()[-1])

    on_gpu = args.device.type == "cuda"
    labels = {"paddock": "Paddock (loop step)", "trl": "TRL RewardTrainer"}
    rows = [
        [
            labels[name],
            f"{seconds[name]:.2f}",
            f"{rate[name]:.2f}",
            f"{rate[name] * 2 * mean_tokens[name]:.0f}",
            f"{mean_tokens[name]:.1f}",
            f"{mean_computed[name]:.0f}",
            f"{memory[name]['step_mb']:.0f}" if memory else "-",
            f"{memory[name]['peak_mb']:.0f}" if memory else "-",
        ]
        for name in ("paddock", "trl")
    ]
    print()
    print_table(
        [
            "contender",
            f"s/step (median of {args.rounds * args.steps})",
            "pairs/s",
            "tokens/s",
            "tokens/seq",
            "tokens computed/step",
            "step memory MB",
            "peak allocated MB" if on_gpu else "peak RSS MB",
        ],
        rows,
    )
    summary = {
        "benchmark": "reward_model",
        "device": str(args.device),
        "speedup": round(rate["paddock"] / rate["trl"], 2),
        "pairs_per_s": {k: round(v, 2) for k, v in rate.items()},
        "mean_tokens_per_sequence": {k: round(v, 2) for k, v in mean_tokens.items()},
        "tokens_computed_per_step": {k: round(v, 1) for k, v in mean_computed.items()},
        "paddock_layout": "padded" if args.padded else "packed",
        "threads": torch.get_num_threads(),
        "seconds_per_step": {k: round(v, 3) for k, v in seconds.items()},
        "batch_pairs": args.batch,
        "margin": args.margin,
    }
    if memory:
        summary["peak_memory_ratio"] = round(memory["paddock"]["step_mb"] / memory["trl"]["step_mb"], 2)
        summary["peak_allocated_ratio" if on_gpu else "peak_rss_ratio"] = round(
            memory["paddock"]["peak_mb"] / memory["trl"]["peak_mb"], 2
        )
        summary["step_memory_mb"] = {k: round(v["step_mb"]) for k, v in memory.items()}
    print_summary(summary)


if __name__ == "__main__":
    main()
