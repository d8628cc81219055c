"""PPO learns on a tiny random model: a programmatic reward (the share of answer tokens from a small
target set, about 1/10 of the vocabulary) rises well above where it started. Runs the real
PPOTrainer: engine rollouts, KL to the reference, GAE, clipped losses; both as a full fine-tune and
as LoRA with one shared base."""

from __future__ import annotations

import copy

import pytest
import torch

from alignment.base_model.generation import SamplingConfig
from alignment.base_model.modeling import PaddockLlamaForCausalLM, PaddockLlamaForValue
from alignment.rl.ppo import (
    AdapterCritic,
    AdapterReference,
    ModelCritic,
    ModelReference,
    PPOSettings,
    PPOTrainer,
    critic_parameters,
    make_optimizer,
    policy_parameters,
)
from tests.conftest import tiny_config

TARGET = range(3, 29)  # 26 of 256 ids: a random model says them ~10 % of the time


class DigitsTokenizer:
    """Enough of a tokenizer for the trainer: ids decode to their numbers."""

    eos_token_id = 2
    pad_token_id = 0

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(str(int(i)) for i in ids)


def target_reward(records, texts, sequences, response_mask):
    answers = sequences[:, -response_mask.shape[1] :]
    hits = (answers >= TARGET.start) & (answers < TARGET.stop)
    share = (hits & response_mask.bool()).sum(1) / response_mask.sum(1).clamp(min=1)
    return {"reward": share.float(), "target_share": share.float()}


def prompts(n: int, seed: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.randint(3, 200, (int(torch.randint(3, 8, (1,), generator=g)),), generator=g).tolist()
        for _ in range(n)
    ]


def run(trainer: PPOTrainer, iterations: int) -> list[float]:
    shares = []
    for it in range(iterations):
        batch = prompts(32, seed=it)
        stats = trainer.iteration([None] * len(batch), batch, seed=1000 + it)
        shares.append(stats["reward_target_share"])
    return shares


SAMPLING = SamplingConfig(max_new_tokens=8, temperature=1.0, eos_token_ids=(2,), pad_token_id=0)
SETTINGS = PPOSettings(beta=0.01, minibatch_size=8, ppo_epochs=2, gamma=1.0, lam=0.95)


def shared_base_trainer(policy, lr: float):
    """A PPOTrainer whose critic is the PEFT policy's "critic" adapter plus a value head."""
    policy.set_adapter("default")
    critic = AdapterCritic(policy, torch.nn.Linear(64, 1))
    optimizer = make_optimizer(policy_parameters(policy, critic), critic_parameters(critic), lr, lr)
    reference = AdapterReference(policy)
    trainer = PPOTrainer(
        policy, reference, critic, target_reward, DigitsTokenizer(), SETTINGS, SAMPLING, optimizer
    )
    return trainer, critic, optimizer


def test_ppo_full_finetune_raises_a_programmatic_reward():
    torch.manual_seed(0)
    policy = PaddockLlamaForCausalLM(tiny_config())
    reference = ModelReference(copy.deepcopy(policy).requires_grad_(False))
    critic = ModelCritic(PaddockLlamaForValue(tiny_config()))
    optimizer = make_optimizer(policy_parameters(policy, critic), critic_parameters(critic), 3e-3, 3e-3)
    trainer = PPOTrainer(
        policy, reference, critic, target_reward, DigitsTokenizer(), SETTINGS, SAMPLING, optimizer
    )
    shares = run(trainer, 12)
    start, end = sum(shares[:2]) / 2, sum(shares[-3:]) / 3
    assert start < 0.2
    assert end > start + 0.3, shares


def test_ppo_lora_with_one_shared_base_learns_and_leaves_the_base_alone():
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = PaddockLlamaForCausalLM(tiny_config())
    frozen = {k: v.clone() for k, v in base.state_dict().items()}
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    policy = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    policy.add_adapter("critic", LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=targets))
    trainer, critic, _ = shared_base_trainer(policy, lr=2e-2)
    critic_before = [p.detach().clone() for p in critic.adapter_parameters()]
    shares = run(trainer, 14)
    start, end = sum(shares[:2]) / 2, sum(shares[-3:]) / 3
    assert end > 2 * start and end > start + 0.15, shares  # LoRA at rank 8 learns slower than full
    # The critic adapter trained too, and the shared base weights did not move.
    assert any(not torch.equal(a, b) for a, b in zip(critic_before, critic.adapter_parameters(), strict=True))
    for name, value in policy.get_base_model().state_dict().items():
        if "lora_" not in name and name.replace(".base_layer", "") in frozen:
            assert torch.equal(value, frozen[name.replace(".base_layer", "")]), name


@pytest.mark.parametrize("estimator", ["k1", "k3"])
def test_rollout_logprobs_match_the_reference_before_any_update(estimator):
    """Policy and reference are the same weights before training, so every KL estimate is 0 and the
    penalised reward is the whitened score alone."""
    torch.manual_seed(0)
    policy = PaddockLlamaForCausalLM(tiny_config())
    reference = ModelReference(copy.deepcopy(policy).requires_grad_(False))
    critic = ModelCritic(PaddockLlamaForValue(tiny_config()))
    settings = PPOSettings(kl_estimator=estimator, minibatch_size=8)
    optimizer = make_optimizer(policy_parameters(policy, critic), critic_parameters(critic), 1e-3, 1e-3)
    trainer = PPOTrainer(
        policy, reference, critic, target_reward, DigitsTokenizer(), settings, SAMPLING, optimizer
    )
    rollout = trainer.rollout([None] * 8, prompts(8, 0), seed=0)
    assert abs(rollout.stats["kl"]) < 1e-5


def test_lora_dropout_is_off_in_rollout_values():
    """PEFT builds LoRA dropout in training mode; a separate LoRA critic must still give the same
    values for the same rollout twice (the trainer puts every model in eval mode)."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    policy = PaddockLlamaForCausalLM(tiny_config())
    targets = ["q_proj", "v_proj"]
    value_model = get_peft_model(
        PaddockLlamaForValue(tiny_config()), LoraConfig(r=4, lora_dropout=0.5, target_modules=targets)
    )
    critic = ModelCritic(value_model)
    reference = ModelReference(copy.deepcopy(policy).requires_grad_(False))
    optimizer = make_optimizer(policy_parameters(policy, critic), critic_parameters(critic), 1e-3, 1e-3)
    trainer = PPOTrainer(
        policy, reference, critic, target_reward, DigitsTokenizer(), SETTINGS, SAMPLING, optimizer
    )
    first = trainer.rollout([None] * 4, prompts(4, 0), seed=0).values
    second = trainer.rollout([None] * 4, prompts(4, 0), seed=0).values
    torch.testing.assert_close(first, second, atol=0, rtol=0)


def test_critic_warmup_trains_the_critic_only_and_its_error_falls():
    """train_policy=False (the stage's critic_warmup): the shared-base critic adapter and value head
    learn, so the value error on a fixed rollout falls; the policy adapter, its AdamW state (no
    weight decay, no moments) and so the rollout distribution stay exactly as they were."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    targets = ["q_proj", "v_proj", "gate_proj"]
    policy = get_peft_model(
        PaddockLlamaForCausalLM(tiny_config()),
        LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets, init_lora_weights=False),
    )
    policy.add_adapter("critic", LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=targets))
    trainer, critic, optimizer = shared_base_trainer(policy, lr=1e-2)
    policy_params = trainer.policy_params
    before = [p.detach().clone() for p in policy_params]
    batch = prompts(32, seed=0)
    errors = []
    for _ in range(4):
        stats = trainer.iteration([None] * len(batch), batch, seed=7, train_policy=False)
        errors.append(stats["value_error"])
        assert "policy_loss" not in stats and "policy_grad_norm" not in stats
    assert errors[-1] < 0.5 * errors[0], errors
    assert all(torch.equal(a, b) for a, b in zip(before, policy_params, strict=True))
    assert not any(p in optimizer.state for p in policy_params)
    # The next iteration with the policy on does move it.
    trainer.iteration([None] * len(batch), batch, seed=7)
    assert any(not torch.equal(a, b) for a, b in zip(before, policy_params, strict=True))


def test_sampler_logprobs_equal_the_policy_forward_in_fp32(monkeypatch):
    """rollout_logprobs='sampler' takes the engine's log-probs instead of a policy forward pass. In
    fp32 with the policy itself sampling (no bf16 copy) the two are the same numbers up to float
    rounding, the same tokens are drawn (same seed), and everything downstream (KL, advantages)
    agrees; a temperature other than 1 is refused, since the engine's log-probs are then not π's."""
    torch.manual_seed(0)
    policy = PaddockLlamaForCausalLM(tiny_config())
    reference = ModelReference(copy.deepcopy(policy).requires_grad_(False))
    critic = ModelCritic(PaddockLlamaForValue(tiny_config()))
    optimizer = make_optimizer(policy_parameters(policy, critic), critic_parameters(critic), 1e-3, 1e-3)
    import alignment.rl.ppo as ppo_module

    forwards = []
    counted = ppo_module.response_logprobs
    monkeypatch.setattr(
        ppo_module,
        "response_logprobs",
        lambda model, *a, **k: forwards.append(model) or counted(model, *a, **k),
    )
    rollouts = {}
    for source in ("policy", "sampler"):
        settings = PPOSettings(minibatch_size=8, rollout_logprobs=source)
        trainer = PPOTrainer(
            policy, reference, critic, target_reward, DigitsTokenizer(), settings, SAMPLING, optimizer
        )
        forwards.clear()
        rollouts[source] = trainer.rollout([None] * 8, prompts(8, 0), seed=0)
        # The reference always runs; the policy's forward only without the sampler's log-probs.
        assert forwards.count(policy) == (source == "policy") and len(forwards) == 1 + (source == "policy")
    exact, engine = rollouts["policy"], rollouts["sampler"]
    assert torch.equal(exact.sequences, engine.sequences)
    assert exact.response_mask.sum() > 8 and bool((exact.logprobs < -0.1).any())  # not all-zero
    torch.testing.assert_close(engine.logprobs, exact.logprobs, atol=1e-4, rtol=0)
    torch.testing.assert_close(engine.advantages, exact.advantages, atol=1e-3, rtol=0)

    from dataclasses import replace

    with pytest.raises(ValueError, match="temperature 1"):
        PPOTrainer(
            policy, reference, critic, target_reward, DigitsTokenizer(),
            PPOSettings(rollout_logprobs="sampler"), replace(SAMPLING, temperature=0.7), optimizer,
        )  # fmt: skip


def test_group_means_average_each_prompt_kind_apart():
    """Rewards 1, 2 on helpfulness rows and 6 on a safety row: the batch mean is 3, but per kind
    the means are (1 + 2) / 2 = 1.5 and 6 / 1 = 6."""
    from alignment.rl.ppo import group_means

    means = group_means([1.0, 6.0, 2.0], ["helpfulness", "safety", "helpfulness"], prefix="reward_on_")
    assert means == {"reward_on_helpfulness": 1.5, "reward_on_safety": 6.0}


def test_group_whitening_removes_a_prompt_kind_offset_from_the_returns():
    """Half the prompts are of kind "s" and always score 10, the others score their target share
    (0..1). Whitened over the batch, every "s" answer gets a positive return; whitened per kind, the
    "s" answers all score the same, whiten to 0, and (policy = reference, so no KL) return 0."""
    torch.manual_seed(0)
    policy = PaddockLlamaForCausalLM(tiny_config())
    reference = ModelReference(copy.deepcopy(policy).requires_grad_(False))
    critic = ModelCritic(PaddockLlamaForValue(tiny_config()))
    optimizer = make_optimizer(policy_parameters(policy, critic), critic_parameters(critic), 1e-3, 1e-3)
    kinds = ["s", "h"] * 4

    def reward(records, texts, sequences, response_mask):
        share = target_reward(records, texts, sequences, response_mask)["reward"]
        return {"reward": torch.where(torch.tensor([r == "s" for r in records]), 10.0, share)}

    returns = {}
    for mode in ("batch", "group"):
        settings = PPOSettings(minibatch_size=8, whiten_rewards=mode, gamma=1.0, lam=1.0)
        trainer = PPOTrainer(
            policy, reference, critic, reward, DigitsTokenizer(), settings, SAMPLING, optimizer, group_of=str
        )
        rollout = trainer.rollout(kinds, prompts(8, 0), seed=0)
        first = rollout.returns[:, 0]  # λ = γ = 1: every token's return is the answer's reward
        returns[mode] = first[[k == "s" for k in kinds]]
    assert bool((returns["batch"] > 0.5).all())
    torch.testing.assert_close(returns["group"], torch.zeros(4), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="needs group_of"):
        PPOTrainer(
            policy, reference, critic, reward, DigitsTokenizer(), PPOSettings(whiten_rewards="group"),
            SAMPLING, optimizer,
        )  # fmt: skip
