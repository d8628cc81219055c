"""Training-step throughput and peak memory: Paddock's model vs transformers' LlamaForCausalLM.

One step = forward + backward of the causal-LM loss on a batch of 8 x 256 tokens of SmolLM2-135M,
fp32 master weights under bf16 autocast. Speed: the two contenders alternate in one
process after a warm-up; medians. Peak memory: each contender runs alone in a fresh subprocess and
reports how far its resident memory rose above the level before its first step (weights and
interpreter excluded, activations + gradients + logits included).

    python benchmarks/train_step.py [--repeats 5] [--batch 8] [--length 256] [--device cpu]

The last line is a JSON object with `speedup` (Paddock tokens/s / transformers tokens/s),
`peak_memory_ratio` (Paddock / transformers) and `matmul_peak_fraction` (achieved model TFLOP/s
over this machine's measured bf16 matmul peak).

`--device cuda` puts both models and the batch on the GPU (`make gpu-check` does, with one repeat).
There the memory figures are the CUDA allocator's (exact, no sampling), still one fresh process per
contender, and `peak_allocated_ratio` replaces `peak_rss_ratio`.
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

from common import RssSampler, alternate, machine, median, parse_device_args, print_summary, print_table, sync


def load(name: str, path, device: torch.device):
    if name == "paddock":
        return load_model(path, dtype=torch.float32, device=device).train()
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).to(device).train()


def batch(args, vocab: int) -> torch.Tensor:
    """The same tokens on every device: drawn on the CPU, then moved."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab, (args.batch, args.length), generator=generator).to(args.device)


def step(model, input_ids: torch.Tensor) -> float:
    with torch.autocast(input_ids.device.type, dtype=torch.bfloat16):
        loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return float(loss)  # waits for the GPU's queued backward too, so a timed step is a whole step


def measure_memory(name: str, args) -> None:
    """Child process: how far resident memory rises above its pre-step level during one step.

    The parent starts this process with MALLOC_MMAP_THRESHOLD_ low, so freed tensors go back to
    the OS and RSS follows live memory; a thread samples RSS every half millisecond.
    """
    model = load(name, prepare(), args.device)
    input_ids = batch(args, model.config.vocab_size)
    step(model, input_ids)  # touch the memory-mapped weights, build any lazy state
    if args.device.type == "cuda":
        # The caching allocator counts every live tensor byte, so its peak needs no sampling thread.
        torch.cuda.reset_peak_memory_stats(args.device)
        before = torch.cuda.memory_allocated(args.device) / 2**20
        step(model, input_ids)
        peak = torch.cuda.max_memory_allocated(args.device) / 2**20
        print(json.dumps({"before_mb": before, "peak_mb": peak, "step_mb": peak - before}))
        return
    sampler = RssSampler()
    sampler.start()
    step(model, input_ids)
    print(json.dumps(sampler.stop("step_mb")))


def matmul_size(device: torch.device) -> int:
    """The peak matmul's side: 2048 on the CPU, 8192 on a GPU (2048 takes a GPU microseconds, too
    short to time against the launch cost)."""
    return 2048 if device.type == "cpu" else 8192


def matmul_peak_tflops(device: torch.device, repeats: int = 10) -> float:
    """bf16 TFLOP/s of a large square matmul on `device`."""
    n = matmul_size(device)
    a = torch.randn(n, n, dtype=torch.bfloat16).to(device)
    b = torch.randn(n, n, dtype=torch.bfloat16).to(device)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    sync(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def model_flops_per_token(config) -> float:
    """Forward + backward ~ 6 x matmul parameters (LM head included) + attention scores."""
    h, layers = config.hidden_size, config.num_hidden_layers
    kv = config.num_key_value_heads * (h // config.num_attention_heads)
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * config.intermediate_size
    return 6 * (layers * per_layer + h * config.vocab_size)


def build_parser() -> argparse.ArgumentParser:
    """The command line, separate from main() so that tests can parse it without running anything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    parser.add_argument(
        "--device", default="cpu", help="where both models and the batch go: cpu, cuda, cuda:N or auto"
    )
    parser.add_argument("--measure-memory", choices=["paddock", "transformers"], help=argparse.SUPPRESS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Arguments with `device` resolved; a GPU that is not there is a one-line usage error."""
    return parse_device_args(build_parser(), argv)


def main() -> None:
    args = parse_args()
    if args.measure_memory:
        return measure_memory(args.measure_memory, args)

    path = prepare()
    print(f"machine: {machine(args.device)}")
    print(f"batch {args.batch} x {args.length} tokens, fp32 weights, bf16 autocast, forward + backward")
    models = {name: load(name, path, args.device) for name in ("paddock", "transformers")}
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
            "--device",
            str(args.device),
        ]
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
        memory[name] = json.loads(out.strip().splitlines()[-1])

    peak = matmul_peak_tflops(args.device)
    on_gpu = args.device.type == "cuda"
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
    peak_label = "peak allocated MB" if on_gpu else "peak RSS MB"
    print_table(
        ["contender", "s/step (median)", "tokens/s", "model TFLOP/s", "step memory MB", peak_label], rows
    )
    print(
        f"bf16 matmul peak ({matmul_size(args.device)}^3) measured now: {peak:.2f} TFLOP/s; "
        f"Paddock reaches {achieved / peak:.0%}"
    )
    print_summary(
        {
            "benchmark": "train_step",
            "device": str(args.device),
            "speedup": round(rate["paddock"] / rate["transformers"], 2),
            "peak_memory_ratio": round(memory["paddock"]["step_mb"] / memory["transformers"]["step_mb"], 2),
            "peak_allocated_ratio" if on_gpu else "peak_rss_ratio": round(
                memory["paddock"]["peak_mb"] / memory["transformers"]["peak_mb"], 2
            ),
            "tokens_per_s": {k: round(v, 1) for k, v in rate.items()},
            "matmul_peak_tflops": round(peak, 2),
            "matmul_peak_fraction": round(achieved / peak, 3),
        }
    )


if __name__ == "__main__":
    main()
