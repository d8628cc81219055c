"""Training-step throughput and peak memory: Paddock's model vs transformers' LlamaForCausalLM.

One step = forward + backward of the causal-LM loss on a batch of 8 x 256 tokens of SmolLM2-135M,
fp32 master weights under bf16 autocast. Speed: the two contenders alternate in one
process after a warm-up; medians. Peak memory: each contender runs alone in a fresh subprocess and
reports how far its resident memory rose above the level before its first step (weights and
interpreter excluded, activations + gradients + logits included).

    python benchmarks/train_step.py [--repeats 5] [--batch 8] [--length 256]

The last line is a JSON object with `speedup` (Paddock tokens/s / transformers tokens/s),
`peak_memory_ratio` (Paddock / transformers) and `matmul_peak_fraction` (achieved model TFLOP/s
over this machine's measured bf16 matmul peak).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from alignment import load_model
from alignment.base_model.default_models import prepare

from common import RssSampler, alternate, machine, median, print_summary, print_table


def load(name: str, path):
    if name == "paddock":
        return load_model(path, dtype=torch.float32).train()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).train()


def batch(args, vocab: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (args.batch, args.length), generator=generator)


def step(model, input_ids: torch.Tensor) -> float:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return float(loss)


def measure_memory(name: str, args) -> None:
    """Child process: how far resident memory rises above its pre-step level during one step.

    The parent starts this process with MALLOC_MMAP_THRESHOLD_ low, so freed tensors go back to
    the OS and RSS follows live memory; a thread samples RSS every half millisecond.
    """
    model = load(name, prepare())
    input_ids = batch(args, model.config.vocab_size)
    step(model, input_ids)  # touch the memory-mapped weights, build any lazy state
    sampler = RssSampler()
    sampler.start()
    step(model, input_ids)
    print(json.dumps(sampler.stop("step_mb")))


def matmul_peak_tflops(repeats: int = 10) -> float:
    a = torch.randn(2048, 2048, dtype=torch.bfloat16)
    b = torch.randn(2048, 2048, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * 2048**3 * repeats / (time.perf_counter() - start) / 1e12


def model_flops_per_token(config) -> float:
    """Forward + backward ~ 6 x matmul parameters (LM head included) + attention scores."""
    h, layers = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * config.intermediate_size
    return 6 * (layers * per_layer + h * config.vocab_size)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument("--measure-memory", choices=["paddock", "transformers"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_memory:
        return measure_memory(args.measure_memory, args)

    path = prepare()
    print(f"machine: {machine()}")
    print(f"batch {args.batch} x {args.length} tokens, fp32 weights, bf16 autocast, forward + backward")
    models = {name: load(name, path) for name in ("paddock", "transformers")}
    input_ids = batch(args, models["paddock"].config.vocab_size)
    losses = {name: step(model, input_ids) for name, model in models.items()}  # warm-up
    print(f"warm-up losses: {losses}")
    results = alternate(
        {name: (lambda m=model: {"loss": step(m, input_ids)}) for name, model in models.items()}, args.repeats
    )
    tokens = args.batch * args.length
    rate = {name: tokens / median(runs, "seconds") for name, runs in results.items()}
    del models

    memory = {}
    for name in ("paddock", "transformers"):
        cmd = [
            sys.executable,
            __file__,
            "--measure-memory",
            name,
            "--batch",
            str(args.batch),
            "--length",
            str(args.length),
        ]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
        memory[name] = json.loads(out.strip().splitlines()[-1])

    peak = matmul_peak_tflops()
    flops = model_flops_per_token(AutoConfig.from_pretrained(path))
    achieved = rate["paddock"] * flops / 1e12
    rows = [
        [
            name,
            f"{median(results[name], 'seconds'):.2f}",
            f"{rate[name]:.0f}",
            f"{rate[name] * flops / 1e12:.3f}",
            f"{memory[name]['step_mb']:.0f}",
            f"{memory[name]['peak_mb']:.0f}",
        ]
        for name in ("paddock", "transformers")
    ]
    print()
    print_table(
        ["contender", "s/step (median)", "tokens/s", "model TFLOP/s", "step memory MB", "peak RSS MB"], rows
    )
    print(
        f"bf16 matmul peak (2048^3) measured now: {peak:.2f} TFLOP/s; Paddock reaches {achieved / peak:.0%}"
    )
    print_summary(
        {
            "benchmark": "train_step",
            "speedup": round(rate["paddock"] / rate["transformers"], 2),
            "peak_memory_ratio": round(memory["paddock"]["step_mb"] / memory["transformers"]["step_mb"], 2),
            "peak_rss_ratio": round(memory["paddock"]["peak_mb"] / memory["transformers"]["peak_mb"], 2),
            "tokens_per_s": {k: round(v, 1) for k, v in rate.items()},
            "matmul_peak_tflops": round(peak, 2),
            "matmul_peak_fraction": round(achieved / peak, 3),
        }
    )


if __name__ == "__main__":
    main()
