"""A LoRA training step with and without PEFT's adapter-input casts, and a full fine-tuning step.

One step = forward + backward of the causal-LM loss on 8 x 256 tokens of SmolLM2-135M, fp32
master weights under bf16 autocast, LoRA r 16, alpha 32 on all seven projections (the stages'
default), built by `alignment.model_setup.build_trainable` as every LoRA stage builds its model.
- `lora`: as the stages train (model_setup.skip_adapter_input_casts: no fp32 round trip of
  each adapter's input);
- `lora, PEFT casts`: the same model with PEFT's casts switched back on;
- `full`: every weight trained, no adapters (the step LoRA should beat).
The contenders alternate in one process after a warm-up each; medians.

    OMP_NUM_THREADS=2 python benchmarks/lora_step.py [--repeats 5] [--batch 8] [--length 256]

The last line is a JSON object with `cast_speedup` (PEFT casts / Paddock's LoRA, seconds) and
`lora_vs_full` (full / LoRA, seconds).
"""

from __future__ import annotations

import argparse

import torch

from alignment.base_model.default_models import prepare
from alignment.model_setup import build_trainable
from alignment.recipes.schema import LoraConfig, ModelConfig

from common import alternate, machine, median, print_summary, print_table


def step(model, input_ids: torch.Tensor) -> dict:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(input_ids=input_ids, labels=input_ids).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return {"loss": float(loss)}


def set_casts(model, enabled: bool) -> None:
    for module in model.modules():
        if hasattr(module, "cast_input_dtype_enabled"):
            module.cast_input_dtype_enabled = enabled


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=256)
    args = parser.parse_args(argv)
    path = str(prepare())
    lora = build_trainable(
        ModelConfig(
            name_or_path=path, precision="bf16-autocast", device="cpu", lora=LoraConfig(r=16, alpha=32)
        ),
        path,
    ).train()
    full = build_trainable(
        ModelConfig(name_or_path=path, precision="bf16-autocast", device="cpu"), path
    ).train()
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(0, full.config.vocab_size, (args.batch, args.length), generator=generator)

    def with_casts(enabled: bool):
        def run() -> dict:
            set_casts(lora, enabled)
            return step(lora, input_ids)

        return run

    contenders = {
        "lora": with_casts(False),
        "lora, PEFT casts": with_casts(True),
        "full": lambda: step(full, input_ids),
    }
    for run in contenders.values():  # warm-up: allocator, oneDNN's kernels
        run()
    print(machine())
    results = alternate(contenders, args.repeats)
    seconds = {name: median(runs, "seconds") for name, runs in results.items()}
    tokens = args.batch * args.length
    print_table(
        ["contender", f"s/step (median of {args.repeats})", "tokens/s"],
        [[name, f"{s:.2f}", f"{tokens / s:.0f}"] for name, s in seconds.items()],
    )
    print_summary(
        {
            "seconds": seconds,
            "cast_speedup": seconds["lora, PEFT casts"] / seconds["lora"],
            "lora_vs_full": seconds["full"] / seconds["lora"],
        }
    )


if __name__ == "__main__":
    main()
