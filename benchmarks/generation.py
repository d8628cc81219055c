"""Best-of-K sampling throughput: Paddock's engine vs transformers `generate` on SmolLM2-135M.

The rejection-sampling workload: 16 prompts (72 tokens each with the chat template) x 8 samples,
64 new tokens, temperature 1.0, no top-k/top-p cut, EOS stops a row. Both sides get the same model
weights, prompts and precision. Throughput counts generated tokens up to and including EOS.

    python benchmarks/generation.py [--repeats 3] [--dtypes bfloat16,float32] [--compile] [--vllm]
                                    [--threads 1,2] [--device cpu]

Prints a table, then one JSON line with `speedup` (Paddock tokens/s / transformers tokens/s, same
precision, the first dtype) and `best_speedup` (each side at its best dtype). It also times the
job's matmuls alone (`matmul_floor`) and reports `speedup_bound`: the speedup a contender built on
torch's matmuls would reach if everything but those matmuls took no time. With `--llama-cpp`, the
bf16 rounds also time llama.cpp's batched decode on the same job shape (benchmarks/llama_cpp_bench.py):
a native engine's figure on this machine, for scale. `--device cuda` runs both contenders' models and
inputs on the GPU (`make gpu-check` does, with one repeat in bf16); the default is the CPU.

`--vllm` adds vLLM (alignment/engines/vllm_client.py: its worker process, `make install-vllm`) to
the same alternating rounds, on the same weights and prompts, with the same contract (n samples per
prompt, EOS stop, each token's log-prob returned). Its worker is started once per thread count and
dtype; start-up is reported apart, not counted. `--threads 1,2` repeats everything at each thread
count (Paddock's and transformers' torch threads, vLLM's bound cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import llama_cpp_bench
import torch
from transformers import AutoModelForCausalLM

from alignment import load_model, load_tokenizer
from alignment.base_model.default_models import prepare
from alignment.base_model.generation import SamplingConfig, generate, left_pad
from alignment.engines.vllm_client import VLLMEngine, require_python
from alignment.recipes.schema import VLLMConfig

from common import (
    BareLinears,
    alternate,
    fastest,
    machine,
    median,
    parse_device_args,
    print_summary,
    print_table,
    sync,
)

NATIVE = "llama.cpp bfloat16 (no sampling)"

TOPICS = [
    "why the sky looks blue during the day and red at sunset",
    "how a refrigerator keeps food cold using a compressor",
    "the difference between weather and climate for a school report",
    "how to start learning to play the guitar as an adult",
    "what photosynthesis does for plants and for the air we breathe",
    "how compound interest makes savings grow over many years",
    "why regular sleep matters for memory and concentration",
    "how vaccines train the immune system to recognise a virus",
    "the main causes of the French Revolution in simple terms",
    "how to write a clear and polite email asking for a deadline extension",
    "how bees communicate the location of flowers to each other",
    "what a binary search does and why it is fast on sorted lists",
    "how tides are caused by the moon and the sun",
    "tips for keeping houseplants healthy during a dry winter",
    "how an electric car battery is charged and what limits its range",
    "why the Roman Empire built so many roads and aqueducts",
]


def build_prompts(tokenizer) -> list[list[int]]:
    prompts = []
    for topic in TOPICS:
        question = (
            f"I am preparing a short talk for a community evening class and I need help with one part. "
            f"Please explain {topic}. Keep the answer friendly and easy to follow."
        )
        messages = [{"role": "user", "content": question}]
        prompts.append(
            list(tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False))
        )
    return prompts


def count_tokens(responses: torch.Tensor, eos_id: int) -> int:
    """Generated tokens per row up to and including the first EOS, summed."""
    is_eos = responses == eos_id
    first = torch.where(is_eos.any(1), is_eos.float().argmax(1) + 1, responses.shape[1])
    return int(first.sum())


def matmul_floor(model, prompt_rows: int, prompt_len: int, rows: int, steps: int, device) -> float:
    """Seconds the job's linear layers alone take (BareLinears.generation). Every row decodes
    every step, while the engine drops finished rows, so this over-counts by the finished
    fraction (a few % here)."""
    linears = BareLinears(model)
    return fastest(lambda: linears.generation(prompt_rows, prompt_len, rows, steps), device=device)


def build_parser() -> argparse.ArgumentParser:
    """The command line, separate from main() so that tests can parse it without running anything."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dtypes", default="bfloat16,float32")
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument(
        "--compile", action="store_true", help="also time Paddock with a compiled decode step"
    )
    parser.add_argument("--vllm", action="store_true", help="also time vLLM (make install-vllm)")
    parser.add_argument("--vllm-tp", type=int, default=1, help="vLLM's tensor-parallel size (GPUs)")
    parser.add_argument(
        "--threads",
        default=str(torch.get_num_threads()),
        help="comma-separated thread counts to run the whole comparison at (default: torch's)",
    )
    parser.add_argument(
        "--llama-cpp",
        action="store_true",
        help="also time llama.cpp's llama-batched-bench in the bf16 rounds (built on first use, ~4 min)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="where both contenders' models and inputs go: cpu, cuda, cuda:N or auto (as model.device)",
    )
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Arguments checked before any model loads: a device that is not there, or llama.cpp's CPU
    build timed against a GPU run, is a one-line usage error."""
    parser = build_parser()
    args = parse_device_args(parser, argv)
    if args.llama_cpp and args.device.type != "cpu":
        parser.error("--llama-cpp times a CPU build; use it with --device cpu")
    try:
        args.threads = [int(t) for t in args.threads.split(",")]
    except ValueError:
        parser.error(f"--threads: expected comma-separated integers, got {args.threads!r}")
    if args.vllm:
        try:
            args.vllm_python = require_python()
        except Exception as err:
            parser.error(str(err))
    return args


def run_dtype(args, path, tokenizer, prompts, input_ids, attention_mask, dtype_name: str, tag: str, native):
    """One alternating comparison at one dtype and thread count: {contender: tokens/s}, table rows,
    the matmul floor (seconds, tokens/s) and vLLM's start-up seconds (None without --vllm)."""
    device, eos = args.device, tokenizer.eos_token_id
    dtype = getattr(torch, dtype_name)
    ours = load_model(path, dtype=dtype, device=device).eval()
    theirs = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    seeds = iter(range(10_000))

    def sampling(compile_step=False) -> SamplingConfig:
        return SamplingConfig(
            max_new_tokens=args.new_tokens,
            temperature=1.0,
            n=args.samples,
            eos_token_ids=(eos,),
            pad_token_id=tokenizer.pad_token_id,
            seed=next(seeds),
            compile=compile_step,
        )

    def paddock(compile_step=False):
        cfg = sampling(compile_step)
        start = time.perf_counter()
        out = generate(ours, input_ids, attention_mask, cfg)
        sync(device)
        seconds = time.perf_counter() - start
        return {"tokens": int(out.response_mask.sum()), "seconds": seconds}

    def transformers():
        torch.manual_seed(next(seeds))
        start = time.perf_counter()
        with torch.no_grad():
            out = theirs.generate(
                input_ids,
                attention_mask=attention_mask,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_return_sequences=args.samples,
                max_new_tokens=args.new_tokens,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
            )
        sync(device)
        seconds = time.perf_counter() - start
        return {"tokens": count_tokens(out[:, input_ids.shape[1] :], eos), "seconds": seconds}

    contenders = {f"paddock {dtype_name}{tag}": paddock, f"transformers {dtype_name}{tag}": transformers}
    if native is not None and dtype == torch.bfloat16:
        mean_prompt = round(sum(map(len, prompts)) / len(prompts))
        job = (len(prompts), mean_prompt, args.samples, args.new_tokens, torch.get_num_threads())
        contenders[NATIVE + tag] = lambda: llama_cpp_bench.best_of_k_job(*native, *job)
    if args.compile:
        start = time.perf_counter()
        paddock(compile_step=True)
        print(
            f"compile + first run ({dtype_name}{tag}): {time.perf_counter() - start:.1f}s (not counted below)"
        )
        contenders[f"paddock {dtype_name} compiled{tag}"] = lambda: paddock(compile_step=True)
    engine, startup = None, None
    if args.vllm:
        settings = VLLMConfig(
            python=args.vllm_python,
            dtype=dtype_name,
            threads=torch.get_num_threads(),
            tensor_parallel_size=args.vllm_tp,
        )
        engine = VLLMEngine(ours, tokenizer, settings, device)
        startup = engine.startup_seconds
        print(f"vLLM {engine.vllm_version} start-up ({dtype_name}{tag}): {startup:.1f}s (not counted below)")

        def vllm():
            start = time.perf_counter()
            out = engine.generate_tokens(prompts, sampling())
            return {"tokens": int(out.response_mask.sum()), "seconds": time.perf_counter() - start}

        contenders[f"vllm {dtype_name}{tag}"] = vllm
    try:
        print(f"\n[{dtype_name}{tag}] warm-up")
        for run in contenders.values():
            run()
        results = alternate(contenders, args.repeats)
    finally:
        if engine is not None:
            engine.close()
    rates, rows = {}, []
    for name, runs in results.items():
        rates[name] = median([{"r": r["tokens"] / r["seconds"]} for r in runs], "r")
        rows.append(
            [name, f"{median(runs, 'tokens'):.0f}", f"{median(runs, 'seconds'):.2f}", f"{rates[name]:.1f}"]
        )
    # The engine decodes max_new_tokens - 1 steps after the prefill (the last token needs none).
    floor = matmul_floor(
        ours, *input_ids.shape, input_ids.shape[0] * args.samples, args.new_tokens - 1, device
    )
    paddock_tokens = median(results[f"paddock {dtype_name}{tag}"], "tokens")
    print(
        f"[{dtype_name}{tag}] the job's matmuls alone: {floor:.2f}s ({paddock_tokens / floor:.0f} tokens/s)"
    )
    return rates, rows, (floor, paddock_tokens / floor), startup


def main() -> None:
    args = parse_args()
    device = args.device

    path = prepare()
    tokenizer = load_tokenizer(path)
    prompts = build_prompts(tokenizer)
    input_ids, attention_mask = left_pad(prompts, tokenizer.pad_token_id)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    print(f"machine: {machine(device)}")
    native = (llama_cpp_bench.build(), llama_cpp_bench.convert(Path(path))) if args.llama_cpp else None
    print(
        f"{len(prompts)} prompts (mean {sum(map(len, prompts)) / len(prompts):.0f} tokens) x {args.samples} "
        f"samples, {args.new_tokens} new tokens, temperature 1.0"
    )

    rows, tokens_per_s, floors, startups = [], {}, {}, {}
    for threads in args.threads:
        torch.set_num_threads(threads)
        tag = f" {threads}t" if len(args.threads) > 1 else ""
        for dtype_name in args.dtypes.split(","):
            rates, new_rows, floors[dtype_name + tag], startup = run_dtype(
                args, path, tokenizer, prompts, input_ids, attention_mask, dtype_name, tag, native
            )
            tokens_per_s.update(rates)
            rows += new_rows
            if startup is not None:
                startups[dtype_name + tag] = round(startup, 1)

    print()
    print_table(["contender", "tokens (median)", "seconds (median)", "tokens/s (median)"], rows)
    first = args.dtypes.split(",")[0] + (f" {args.threads[0]}t" if len(args.threads) > 1 else "")
    speedup = tokens_per_s[f"paddock {first}"] / tokens_per_s[f"transformers {first}"]
    best_ours = max(v for k, v in tokens_per_s.items() if k.startswith("paddock"))
    best_theirs = max(v for k, v in tokens_per_s.items() if k.startswith("transformers"))
    floor_seconds, floor_rate = floors[first]
    bound = floor_rate / tokens_per_s[f"transformers {first}"]
    print(f"speedup if only the matmuls took time ({first}): at most {bound:.2f}x")
    summary = {
        "benchmark": "generation",
        "device": str(device),
        "dtype": first,
        "speedup": round(speedup, 2),
        "best_speedup": round(best_ours / best_theirs, 2),
        "matmul_floor_seconds": round(floor_seconds, 2),
        "speedup_bound": round(bound, 2),
        "tokens_per_s": {k: round(v, 1) for k, v in tokens_per_s.items()},
    }
    if NATIVE in tokens_per_s:
        summary["speedup_vs_llama_cpp"] = round(tokens_per_s["paddock bfloat16"] / tokens_per_s[NATIVE], 2)
    if startups:
        best_vllm = max(v for k, v in tokens_per_s.items() if k.startswith("vllm"))
        summary["vllm_startup_seconds"] = startups
        summary["vllm_speedup"] = round(tokens_per_s[f"vllm {first}"] / tokens_per_s[f"paddock {first}"], 2)
        summary["best_vllm_vs_best_paddock"] = round(best_vllm / best_ours, 2)
    print_summary(summary)


if __name__ == "__main__":
    main()
