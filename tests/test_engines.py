"""The rollout-engine plumbing that runs without vLLM: choosing the engine, the refusal when vLLM is
missing, the weights a vLLM worker is sent (LoRA merged), the change detector that decides when to
send them, and turning the worker's token lists into the engine's tensors. tests/test_vllm.py runs
the real worker."""

from __future__ import annotations

import sys

import pytest
import torch

from alignment.answers import answer
from alignment.base_model.generation import GenerationOutput, SamplingConfig
from alignment.base_model.modeling import PaddockLlamaForCausalLM
from alignment.engines import resolve_engine
from alignment.engines.vllm_client import as_generation_output, engine_weights, weights_fingerprint
from alignment.errors import PaddockError
from alignment.recipes.schema import VLLMConfig
from tests.conftest import tiny_config
from tests.test_pipeline import REPO, paddock, tiny_checkpoint, write_recipe  # noqa: F401  (fixture)


def test_auto_is_paddock_without_vllm_and_vllm_without_it_is_one_line():
    """The suite runs with PADDOCK_VLLM_PYTHON=none (tests/conftest.py): vLLM is off."""
    assert resolve_engine("auto", VLLMConfig()) == "paddock"
    assert resolve_engine("paddock", VLLMConfig()) == "paddock"
    with pytest.raises(PaddockError, match="vLLM is not installed; run `make install-vllm`") as err:
        resolve_engine("vllm", VLLMConfig())
    assert "\n" not in str(err.value)
    with pytest.raises(PaddockError, match=f"{sys.executable} has no vllm"):
        resolve_engine("vllm", VLLMConfig(python=sys.executable))


def test_auto_picks_vllm_for_ppo_only_and_only_where_it_is_installed(monkeypatch):
    """The stage types' choices as benchmarks/RESULTS.md measured them: PPO, whose rollouts repeat,
    wins vLLM's start-up back; a stage that samples once does not. Without vLLM, paddock for all."""
    from alignment.engines import vllm_client
    from alignment.recipes.schema import Recipe
    from alignment.stages import registry  # noqa: F401  (gives the config classes their types)
    from alignment.stages.common import stage_engine
    from alignment.stages.ppo import PPOConfig
    from alignment.stages.rejection_sampling import RejectionSamplingConfig

    recipe = Recipe(run_name="r", stages=[RejectionSamplingConfig(), PPOConfig()])
    assert [stage_engine(recipe, s) for s in recipe.stages] == ["paddock", "paddock"]
    monkeypatch.setattr(vllm_client, "find_python", lambda explicit=None: "/venv/bin/python")
    assert [stage_engine(recipe, s) for s in recipe.stages] == ["paddock", "vllm"]
    recipe.stages[0].engine = "vllm"
    recipe.stages[1].engine = "paddock"
    assert [stage_engine(recipe, s) for s in recipe.stages] == ["vllm", "paddock"]


def test_a_recipe_asking_for_vllm_without_it_fails_before_any_compute(tmp_path, tiny_checkpoint):  # noqa: F811
    recipe = write_recipe(tmp_path, tiny_checkpoint)
    result = paddock("run", str(recipe), "generation.engine=vllm")
    assert result.returncode == 2  # the CLI's code for a run refused before it started
    assert result.stderr.strip().splitlines() == [
        "paddock: error: generation engine 'vllm': vLLM is not installed; run `make install-vllm`, "
        "or set PADDOCK_VLLM_PYTHON to a Python that has vllm"
    ]
    assert not (tmp_path / "runs/tiny/sft").exists()
    # A stage may override the recipe's engine.
    from alignment.recipes import load_recipe

    loaded = load_recipe(recipe, ["generation.engine=vllm", "stages.sft.engine=paddock"])
    assert loaded.generation.engine == "vllm" and loaded.stages[0].engine == "paddock"


def test_a_fused_adamw_step_changes_the_fingerprint():
    """Fused AdamW writes parameters without bumping their version counters, so the change detector
    looks at their values: unchanged weights give the same fingerprint, one step another."""
    torch.manual_seed(0)
    model = PaddockLlamaForCausalLM(tiny_config())
    before = weights_fingerprint(model)
    assert torch.equal(before, weights_fingerprint(model))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    model(input_ids=torch.tensor([[3, 4, 5]])).logits.sum().backward()
    optimizer.step()
    assert not torch.equal(before, weights_fingerprint(model))


def test_engine_weights_merge_lora_into_transformers_names():
    """What the worker loads is the PEFT policy's function: base + scaling·B@A under the plain
    model's names, so a plain model given these weights computes the PEFT model's logits; a tied
    lm_head is left out (vLLM ties it from the config)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    targets = ["q_proj", "v_proj", "down_proj"]
    policy = get_peft_model(
        PaddockLlamaForCausalLM(tiny_config()),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, init_lora_weights=False),
    ).eval()
    weights = engine_weights(policy, torch.float32)
    plain = PaddockLlamaForCausalLM(tiny_config()).eval()
    assert set(weights) == set(plain.state_dict())
    plain.load_state_dict(weights)
    ids = torch.tensor([[5, 9, 11, 3]])
    with torch.no_grad():
        torch.testing.assert_close(
            plain(input_ids=ids).logits, policy(input_ids=ids).logits, atol=1e-5, rtol=0
        )
    tied = engine_weights(PaddockLlamaForCausalLM(tiny_config(tie_word_embeddings=True)), torch.bfloat16)
    assert "lm_head.weight" not in tied and tied["model.embed_tokens.weight"].dtype == torch.bfloat16


def test_worker_token_lists_become_the_engines_tensors():
    """Two prompts (lengths 2 and 1) with n=2 samples: prompts left-padded with 0 and repeated per
    sample, responses right-padded to the longest (3), mask 1 on generated tokens only, log-probs in
    place and 0 elsewhere."""
    outputs = [
        [{"tokens": [7, 8], "logprobs": [-0.5, -1.0]}, {"tokens": [9], "logprobs": [-2.0]}],
        [{"tokens": [4, 5, 6], "logprobs": [-0.1, -0.2, -0.3]}, {"tokens": [2], "logprobs": [-0.7]}],
    ]
    out = as_generation_output([[11, 12], [13]], outputs, pad_token_id=0, device="cpu")
    assert out.prompt_length == 2
    assert out.sequences.tolist() == [
        [11, 12, 7, 8, 0],
        [11, 12, 9, 0, 0],
        [0, 13, 4, 5, 6],
        [0, 13, 2, 0, 0],
    ]
    assert out.response_mask.tolist() == [[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]]
    assert out.prompt_mask.tolist() == [[1, 1], [1, 1], [0, 1], [0, 1]]
    expected = torch.tensor([[-0.5, -1.0, 0], [-2.0, 0, 0], [-0.1, -0.2, -0.3], [-0.7, 0, 0]])
    assert torch.equal(out.logprobs, expected)


class CountingEngine:
    """An external engine that answers prompt i with the token (its seed mod 100) and records calls."""

    def __init__(self):
        self.calls = []

    def generate_tokens(self, prompt_ids, cfg, seeds=None, on_progress=None):
        self.calls.append((len(prompt_ids), list(seeds)))
        outputs = [[{"tokens": [3 + seed % 100], "logprobs": [0.0]}] * cfg.n for seed in seeds]
        if on_progress:
            on_progress(len(prompt_ids))
        return as_generation_output(prompt_ids, outputs, cfg.pad_token_id, "cpu")


def test_answer_sends_all_batches_to_an_engine_in_one_request(smollm2_tokenizer):
    """Five prompts in batches of 2, seed 1: prompt i is seeded 1·1000003 + i, whatever batch it is
    in. One request carries all five with those seeds, and the texts come back prompt-major, n=2
    per prompt."""
    engine = CountingEngine()
    conversations = [[{"role": "user", "content": "x" * (i + 1)}] for i in range(5)]
    cfg = SamplingConfig(max_new_tokens=4, n=2, seed=1, eos_token_ids=(2,))
    result = answer(engine, smollm2_tokenizer, conversations, cfg, batch_size=2)
    seeds = [1_000_003, 1_000_004, 1_000_005, 1_000_006, 1_000_007]
    assert engine.calls == [(5, seeds)]
    expected = [smollm2_tokenizer.decode([3 + s % 100], skip_special_tokens=True).strip() for s in seeds]
    assert result.texts == [text for text in expected for _ in range(2)]
    assert len(result.outputs) == 1 and isinstance(result.outputs[0], GenerationOutput)


def test_the_snapshot_goes_to_dev_shm_only_when_it_has_room(tmp_path, monkeypatch):
    """A tiny model's two bf16 copies fit anywhere; with the shared-memory folder reporting 1 KB
    free (a container's small /dev/shm), the snapshot goes to the default temporary directory."""
    import shutil as shutil_module

    from alignment.engines import vllm_client

    model = PaddockLlamaForCausalLM(tiny_config())
    assert vllm_client.snapshot_root(model, torch.bfloat16, shm=tmp_path) == tmp_path
    usage = shutil_module.disk_usage(tmp_path)
    monkeypatch.setattr(vllm_client.shutil, "disk_usage", lambda path: usage._replace(free=1024))
    assert vllm_client.snapshot_root(model, torch.bfloat16, shm=tmp_path) is None
    assert vllm_client.snapshot_root(model, torch.bfloat16, shm=tmp_path / "missing") is None
