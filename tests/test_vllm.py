"""vLLM as the rollout engine, against Paddock's own engine on the same weights (`make test-vllm`).

Every test here starts vLLM's worker process (about 25 s on the 2-core CPU), so the module shares
one engine per model where it can. Skipped when no Python with vllm is found
(tests/conftest.py's VLLM_PYTHON); `make install-vllm` builds one.

The tiny model has head size 32 (vLLM's CPU attention has no kernel for the suite's usual 16) and
runs in fp32 on both sides, so greedy answers must agree token for token and log-probs to float
rounding; after a weight sync they must agree again, with the new weights.
"""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch

from alignment.base_model.generation import SamplingConfig, generate_from_tokens
from alignment.base_model.modeling import PaddockLlamaForCausalLM, PaddockLlamaForValue
from alignment.engines.vllm_client import VLLMEngine
from alignment.recipes.schema import VLLMConfig
from tests.conftest import VLLM_PYTHON, family_config, tiny_config

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(VLLM_PYTHON is None, reason="vLLM not installed (make install-vllm)"),
]

FP32 = VLLMConfig(dtype="float32", python=VLLM_PYTHON)
GREEDY = SamplingConfig(max_new_tokens=12, temperature=0, eos_token_ids=(2,), pad_token_id=0)


def vllm_tiny_config(**overrides):
    return tiny_config(hidden_size=128, intermediate_size=256, **overrides)


def prompt_batch(n: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(3, 250, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
        for _ in range(n)
    ]


def greedy_paddock(model, prompts):
    return generate_from_tokens(model.eval(), prompts, GREEDY)


def answers(out) -> list[list[int]]:
    return [ids[mask.bool()].tolist() for ids, mask in zip(out.responses, out.response_mask, strict=True)]


def assert_same_answers(ours, theirs):
    """The same tokens in every row, and the engine's log-prob of each equal to ours."""
    assert answers(theirs) == answers(ours)
    for row in range(len(answers(ours))):
        mine, engines = ours.response_mask[row].bool(), theirs.response_mask[row].bool()
        torch.testing.assert_close(theirs.logprobs[row][engines], ours.logprobs[row][mine], atol=2e-4, rtol=0)


@pytest.fixture(scope="module")
def tiny(smollm2_tokenizer):
    torch.manual_seed(0)
    model = PaddockLlamaForCausalLM(vllm_tiny_config()).eval()
    with VLLMEngine(model, smollm2_tokenizer, FP32, "cpu") as engine:
        yield model, engine


def test_greedy_answers_equal_paddock_and_follow_a_weight_sync(tiny):
    model, engine = tiny
    prompts = prompt_batch(6, seed=1)
    before = greedy_paddock(model, prompts)
    assert_same_answers(before, engine.generate_tokens(prompts, GREEDY))
    assert not engine.sync(model)  # unchanged weights are not sent again

    # An optimizer step changes every weight in place; the next answers must be the new model's.
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    loss = model(input_ids=torch.tensor(prompts[:1])).logits.logsumexp(-1).mean()
    loss.backward()
    optimizer.step()
    model.zero_grad()
    after = greedy_paddock(model, prompts)
    assert not torch.equal(after.sequences, before.sequences)
    assert engine.sync(model)
    assert_same_answers(after, engine.generate_tokens(prompts, GREEDY))


def test_sampling_contract_n_seeds_logprobs_and_eos(tiny):
    """n rows per prompt, prompt-major; the same seed gives the same samples and another seed others;
    each log-prob is the token's under the sampling distribution (logits / temperature), which the
    model's own forward pass reproduces; a row ends at its EOS, which its mask includes."""
    model, engine = tiny
    prompts = prompt_batch(4, seed=2)
    cfg = SamplingConfig(
        max_new_tokens=16, temperature=0.7, n=3, eos_token_ids=(2, 7), pad_token_id=0, seed=5
    )
    out = engine.generate_tokens(prompts, cfg)
    assert out.sequences.shape[0] == 12
    assert torch.equal(out.prompt_mask[0], out.prompt_mask[2])  # rows 0-2 answer prompt 0
    assert torch.equal(engine.generate_tokens(prompts, cfg).sequences, out.sequences)
    assert not torch.equal(engine.generate_tokens(prompts, replace(cfg, seed=6)).sequences, out.sequences)

    with torch.no_grad():
        logits = model(input_ids=out.sequences, attention_mask=out.attention_mask).logits
    P = out.prompt_length
    expected = (logits[:, P - 1 : -1] / 0.7).log_softmax(-1).gather(-1, out.responses[..., None])[..., 0]
    mask = out.response_mask.bool()
    torch.testing.assert_close(out.logprobs[mask], expected[mask], atol=2e-4, rtol=0)

    # vLLM seeds sample k of a request with seed + k: with prompt seeds 5 and 6, prompt 0's second
    # sample and prompt 1's first would draw the same numbers. The client spreads the seeds apart.
    same = engine.generate_tokens([prompts[0], prompts[0]], replace(cfg, n=2, temperature=1.0), seeds=[5, 6])
    assert answers(same)[1] != answers(same)[2]

    lengths = out.response_mask.sum(1)
    for row in range(12):
        last = out.responses[row, lengths[row] - 1]
        assert lengths[row] == 16 or int(last) in (2, 7)
        assert not bool(
            (
                (out.responses[row, : lengths[row] - 1] == 2) | (out.responses[row, : lengths[row] - 1] == 7)
            ).any()
        )


def test_samples_follow_the_sampling_distribution(tiny):
    """2048 first tokens of one prompt at temperature 1.3, top-k 8: their frequencies match
    softmax(top-8 logits / 1.3) computed from the model itself, within a total variation of 0.06
    (sampling noise over 8 outcomes at this count is about 0.03), and better than the distribution
    at temperature 1 does: the temperature is applied, not only reported."""
    model, engine = tiny
    prompt = prompt_batch(1, seed=7)[0]
    cfg = SamplingConfig(max_new_tokens=1, temperature=1.3, top_k=8, n=64, pad_token_id=0, seed=11)
    out = engine.generate_tokens([prompt] * 32, cfg)
    counts = torch.bincount(out.responses[:, 0], minlength=256).double()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([prompt])).logits[0, -1].double()
    top = logits.topk(8)

    def distance(temperature: float) -> float:
        expected = torch.zeros(256, dtype=torch.double)
        expected[top.indices] = (top.values / temperature).softmax(-1)
        return float(0.5 * (counts / 2048 - expected).abs().sum())

    assert counts.sum() == 2048
    assert distance(1.3) < 0.06
    assert distance(1.3) < distance(1.0)


def test_more_prompt_tokens_than_one_step_takes_with_seeds(tiny):
    """64 seeded prompts of 60-120 tokens: more prefill than one engine step schedules, the case
    where vLLM 0.32 on the CPU split prefills and died rewinding a CPU generator. Every prompt gets
    its answers, and the same seeds give the same answers again."""
    _, engine = tiny
    g = torch.Generator().manual_seed(4)
    prompts = [
        torch.randint(3, 250, (int(torch.randint(60, 120, (1,), generator=g)),), generator=g).tolist()
        for _ in range(64)
    ]
    cfg = SamplingConfig(max_new_tokens=4, temperature=1.0, n=2, eos_token_ids=(2,), pad_token_id=0, seed=9)
    first = engine.generate_tokens(prompts, cfg)
    assert first.sequences.shape[0] == 128 and bool((first.response_mask.sum(1) > 0).all())
    assert answers(engine.generate_tokens(prompts, cfg)) == answers(first)


def test_stop_strings_end_a_row_where_the_string_completes(smollm2_tokenizer):
    """The same rule as Paddock's engine: the row ends with the token that completes the string."""
    config = tiny_config(
        hidden_size=128,
        intermediate_size=256,
        vocab_size=len(smollm2_tokenizer),
        pad_token_id=smollm2_tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = PaddockLlamaForCausalLM(config).eval()
    prompts = [smollm2_tokenizer.encode("Tell me a story", add_special_tokens=False)] * 2
    free_cfg = SamplingConfig(max_new_tokens=12, temperature=0, pad_token_id=0)
    with VLLMEngine(model, smollm2_tokenizer, FP32, "cpu") as engine:
        free = engine.generate_tokens(prompts, free_cfg)
        text = smollm2_tokenizer.decode(free.responses[0, 5:8])
        stopped = engine.generate_tokens(prompts, replace(free_cfg, stop_strings=(text,)))
    ours = generate_from_tokens(model, prompts, replace(free_cfg, stop_strings=(text,)), smollm2_tokenizer)
    assert 0 < int(stopped.response_mask[0].sum()) <= 8
    assert answers(stopped) == answers(ours)
    assert text in smollm2_tokenizer.decode(stopped.responses[0][stopped.response_mask[0].bool()])


def test_lora_policy_is_synced_with_its_adapter_merged(smollm2_tokenizer):
    """A PEFT LoRA policy: the engine serves base + scaling·B@A, so its greedy answers equal the PEFT
    model's; after the adapter trains, a sync brings the new delta."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    targets = ["q_proj", "v_proj", "gate_proj", "down_proj"]
    policy = get_peft_model(
        PaddockLlamaForCausalLM(vllm_tiny_config()),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, init_lora_weights=False),
    ).eval()
    prompts = prompt_batch(5, seed=3)
    with VLLMEngine(policy, smollm2_tokenizer, FP32, "cpu") as engine:
        assert_same_answers(greedy_paddock(policy, prompts), engine.generate_tokens(prompts, GREEDY))
        with torch.no_grad():
            for name, param in policy.named_parameters():
                if "lora_B" in name:
                    param.mul_(-3.0)
        assert engine.sync(policy)
        assert_same_answers(greedy_paddock(policy, prompts), engine.generate_tokens(prompts, GREEDY))


def test_ppo_with_the_vllm_engine_learns_the_programmatic_reward(smollm2_tokenizer):
    """tests/test_ppo_learning.py's full fine-tune, with rollouts from vLLM synced after every
    update: the target-token share must rise as it does with Paddock's engine."""
    from alignment.rl.ppo import (
        ModelCritic,
        ModelReference,
        PPOTrainer,
        critic_parameters,
        make_optimizer,
        policy_parameters,
    )
    from tests.test_ppo_learning import SAMPLING, SETTINGS, DigitsTokenizer, prompts, target_reward

    torch.manual_seed(0)
    policy = PaddockLlamaForCausalLM(vllm_tiny_config())
    reference = ModelReference(copy.deepcopy(policy).requires_grad_(False))
    critic = ModelCritic(PaddockLlamaForValue(vllm_tiny_config()))
    optimizer = make_optimizer(policy_parameters(policy, critic), critic_parameters(critic), 3e-3, 3e-3)
    with VLLMEngine(policy, smollm2_tokenizer, FP32, "cpu") as engine:
        trainer = PPOTrainer(
            policy,
            reference,
            critic,
            target_reward,
            DigitsTokenizer(),
            SETTINGS,
            SAMPLING,
            optimizer,
            engine=engine,
        )
        shares = []
        for it in range(12):
            batch = prompts(32, seed=it)
            shares.append(
                trainer.iteration([None] * len(batch), batch, seed=1000 + it)["reward_target_share"]
            )
        assert engine.syncs == 11  # the first rollout samples the starting weights
    start, end = sum(shares[:2]) / 2, sum(shares[-3:]) / 3
    assert start < 0.2
    assert end > start + 0.3, shares


def test_a_killed_client_leaves_no_weights_behind(tmp_path):
    """The snapshot is a model's size in /dev/shm. A client killed with SIGKILL cannot remove it, so
    its worker, seeing stdin close, does, and exits."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = f"""
import sys, time, torch
sys.path.insert(0, {str(Path(__file__).parents[1])!r})
from alignment import load_tokenizer
from alignment.base_model.default_models import prepare
from alignment.base_model.modeling import PaddockLlamaForCausalLM
from alignment.engines.vllm_client import VLLMEngine
from alignment.recipes.schema import VLLMConfig
from tests.test_vllm import vllm_tiny_config
engine = VLLMEngine(PaddockLlamaForCausalLM(vllm_tiny_config()), load_tokenizer(prepare("smollm2-135m")),
                    VLLMConfig(python={VLLM_PYTHON!r}), "cpu")
print(engine.dir, engine.proc.pid, flush=True)
time.sleep(600)
"""
    client = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    snapshot, worker = client.stdout.readline().split()
    assert Path(snapshot, "model.safetensors").is_file()
    client.send_signal(signal.SIGKILL)
    client.wait()
    deadline = time.monotonic() + 60
    while Path(snapshot).exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not Path(snapshot).exists()
    while time.monotonic() < deadline:
        try:
            os.kill(int(worker), 0)
        except ProcessLookupError:
            break
        time.sleep(0.5)
    else:
        pytest.fail("the worker outlived its client by a minute")


@pytest.fixture(scope="module")
def vllm_run(request, tmp_path_factory, smollm2_tokenizer):
    """tests/test_rl_stages.py's whole pipeline (SFT, RMs, preference collection, rejection
    sampling, GAtt, PPO, context distillation, evaluation) with `generation.engine: vllm`, except
    the preference collection stage, which overrides it with `engine: paddock`."""
    import yaml

    from tests.conftest import discard_once_passed
    from tests.test_pipeline import paddock, save_tiny_checkpoint
    from tests.test_rl_stages import offline_env, write_pipeline_recipe

    tmp = discard_once_passed(request, tmp_path_factory.mktemp("vllm"))
    checkpoint = save_tiny_checkpoint(tmp / "tiny", smollm2_tokenizer, hidden_size=128, intermediate_size=256)
    path = write_pipeline_recipe(tmp, checkpoint)
    recipe = yaml.safe_load(path.read_text())
    recipe["generation"] = {"engine": "vllm", "vllm": {"python": VLLM_PYTHON, "dtype": "float32"}}
    next(s for s in recipe["stages"] if s["type"] == "preference_collection")["engine"] = "paddock"
    path.write_text(yaml.safe_dump(recipe))
    result = paddock("run", str(path), env=offline_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "runs/tiny"


def test_the_pipeline_samples_with_vllm_in_every_stage_that_samples(vllm_run):
    import json

    engines = {}
    for summary in sorted(vllm_run.glob("*/summary.json")):
        engines[summary.parent.name] = json.loads(summary.read_text())["generation"]
    sampled = ["rejection_sampling", "gatt", "ppo", "context_distillation", "evaluation"]
    for stage in sampled:
        assert engines[stage]["engine"] == "vllm", (stage, engines[stage])
        assert engines[stage]["vllm"] == "0.32.0" or engines[stage]["vllm"]
    assert engines["collect"] == {"engine": "paddock"}
    # PPO synced after its updates, rejection sampling after its first iteration's fine-tune.
    assert engines["ppo"]["weight_syncs_this_run"] >= 3
    assert engines["rejection_sampling"]["weight_syncs_this_run"] >= 1
    ppo = json.loads((vllm_run / "ppo/summary.json").read_text())
    assert ppo["evals"], ppo.keys()


@pytest.mark.parametrize(
    "family,settings",
    [("mistral", {"sliding_window": 6}), ("qwen2", {}), ("qwen3", {"head_dim": 64})],
)
def test_each_family_runs_in_vllm_as_its_own_architecture(family, settings, smollm2_tokenizer):
    """vLLM starts each family from the snapshot's config (its own class: Qwen2ForCausalLM, ...)
    and answers as Paddock does: Mistral's window shorter than prompt + answer, Qwen2's q/k/v
    biases, Qwen3's q/k norms with a head_dim apart from hidden / heads."""
    torch.manual_seed(0)
    model = PaddockLlamaForCausalLM(family_config(family, hidden_size=128, intermediate_size=256, **settings))
    prompts = prompt_batch(4, seed=2)
    with VLLMEngine(model.eval(), smollm2_tokenizer, FP32, "cpu") as engine:
        assert_same_answers(greedy_paddock(model, prompts), engine.generate_tokens(prompts, GREEDY))
