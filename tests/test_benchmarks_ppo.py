"""Smoke test of benchmarks/ppo.py's building blocks on a tiny random Llama: each side (Paddock's
PPOTrainer and the transformers/TRL-style loop) runs one PPO iteration, generates the same number
of tokens, reports every phase and trains its LoRA adapters. No timing assertions."""

from __future__ import annotations

import argparse
import importlib.util
import math
import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaForCausalLM

from tests.conftest import tiny_config

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"
ARGS = argparse.Namespace(
    batch=4,
    prompt_tokens=64,
    new_tokens=4,
    minibatch=2,
    base_dtype="float32",
    no_merged_sampling=False,
    rollout_logprobs="policy",
    device=torch.device("cpu"),  # as parse_args resolves --device (tests/test_benchmarks_device.py)
)


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCHMARKS))  # for its `from common import ...`
    try:
        spec = importlib.util.spec_from_file_location("benchmarks_ppo", BENCHMARKS / "ppo.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, smollm2_tokenizer):
    """A 2-layer random Llama with the SmolLM2 vocabulary, saved in the HF layout both sides load."""
    torch.manual_seed(0)
    tokenizer = smollm2_tokenizer
    config = tiny_config(
        vocab_size=len(tokenizer),
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    path = tmp_path_factory.mktemp("tiny_llama")
    LlamaForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def lora_b(model) -> list[torch.Tensor]:
    return [p for name, p in model.named_parameters() if "lora_B.default" in name]


@pytest.mark.parametrize("side", ["paddock", "transformers"])
def test_one_iteration_runs_and_reports_every_phase(bench, tiny_checkpoint, side):
    import alignment.rl.ppo as ppo_module

    engine = ppo_module.generate_from_tokens
    built, prompt_ids = bench.build(side, tiny_checkpoint, ARGS)
    assert len(prompt_ids) == ARGS.batch
    assert all(abs(len(ids) - ARGS.prompt_tokens) <= 8 for ids in prompt_ids)
    policy = built.trainer.policy if side == "paddock" else built.policy
    assert all(float(b.detach().abs().sum()) == 0 for b in lora_b(policy))  # LoRA B starts at zero

    result = built.iteration(seed=0)

    assert result["tokens"] == ARGS.batch * ARGS.new_tokens  # no EOS stop on either side
    for key in ("generation", "scoring", "update", "reference", "values", "rewards"):
        assert result[key] > 0, key
    assert result["seconds"] == pytest.approx(result["generation"] + result["scoring"] + result["update"])
    assert math.isfinite(result["policy_loss"]) and math.isfinite(result["reward"])
    assert any(float(b.detach().abs().sum()) > 0 for b in lora_b(policy))  # the updates reached the adapter
    assert ppo_module.generate_from_tokens is engine  # the timing wrapper is removed again


def test_the_update_profile_lists_the_costliest_ops_first(bench, tiny_checkpoint, capsys):
    bench.profile_update(tiny_checkpoint, argparse.Namespace(**vars(ARGS), profile_update=5))
    lines = capsys.readouterr().out.splitlines()
    rules = [i for i, line in enumerate(lines) if line.strip() and set(line.strip()) <= {"-", " "}]
    rows = lines[rules[1] + 1 : rules[2]]  # between the header's rule and the closing one
    assert len(rows) == 5
    assert "aten::mm" in rows[0] or "aten::mm" in rows[1]  # the matmuls dominate even at toy sizes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16-packed"])
def test_bare_linears_multiply_by_every_weight_of_the_model(bench, dtype):
    """The matmul floor's products are the model's own: for each linear layer, `forward` gives
    F.linear's x W^T and `backward` the input gradient g W (bf16 packed for oneDNN where torch
    can, which must still be the same product), and the vocabulary projection is kept apart."""
    from alignment.base_model.modeling import PaddockLlamaForCausalLM

    torch.manual_seed(0)
    model = PaddockLlamaForCausalLM(tiny_config()).to(dtype)
    linears = bench.BareLinears(model)
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not model.lm_head]
    assert len(linears.body) == len(layers) == 7 * model.config.num_hidden_layers
    for (width, out, forward, backward), layer in zip(
        [*linears.body, linears.head], [*layers, model.lm_head], strict=True
    ):
        assert (width, out) == (layer.in_features, layer.out_features)
        x, g = torch.randn(5, width, dtype=dtype), torch.randn(5, out, dtype=dtype)
        torch.testing.assert_close(forward(x), torch.nn.functional.linear(x, layer.weight))
        torch.testing.assert_close(backward(g), g @ layer.weight)
    linears.forward(3, head_tokens=2)
    linears.backward(3, head_tokens=2)
    assert bench.fastest(lambda: None, repeats=2) >= 0
