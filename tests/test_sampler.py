"""The merged sampling copy of a LoRA policy (alignment/rl/sampler.py) is the policy: same logits,
same greedy tokens, and it follows the policy's updates only when refreshed."""

from __future__ import annotations

import pytest
import torch

from alignment.base_model.generation import SamplingConfig, generate_from_tokens
from alignment.base_model.modeling import PaddockLlamaForCausalLM
from alignment.rl.sampler import MergedSampler, can_merge
from tests.conftest import tiny_config

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def lora_policy(tied: bool = False):
    """A two-adapter policy (as PPO's shared base) with non-zero B, so the delta is not zero."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = PaddockLlamaForCausalLM(tiny_config(tie_word_embeddings=tied)).eval()
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS))
    policy.add_adapter("critic", LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return policy.eval()


def logits(model, ids):
    return model(input_ids=ids).logits


@pytest.mark.parametrize("tied", [False, True])
def test_merged_copy_gives_the_policys_logits(tied):
    policy = lora_policy(tied)
    sampler = MergedSampler(policy, dtype=torch.float32)
    ids = torch.randint(3, 250, (3, 9))
    expected = logits(policy, ids)
    torch.testing.assert_close(logits(sampler.model, ids), expected, atol=1e-5, rtol=1e-5)
    with policy.disable_adapter():
        base_logits = logits(policy, ids)
    assert (base_logits - expected).abs().max() > 1e-2  # the adapter matters, so the merge is tested
    if tied:
        assert sampler.model.lm_head.weight is sampler.model.model.embed_tokens.weight


def test_merged_copy_follows_updates_only_after_refresh():
    policy = lora_policy()
    sampler = MergedSampler(policy, dtype=torch.float32)
    ids = torch.randint(3, 250, (2, 7))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_A.default" in name:
                p.add_(0.3)
    updated = logits(policy, ids)
    assert (logits(sampler.model, ids) - updated).abs().max() > 1e-2
    sampler.refresh()
    torch.testing.assert_close(logits(sampler.model, ids), updated, atol=1e-5, rtol=1e-5)


def test_critic_adapter_does_not_leak_into_the_copy():
    policy = lora_policy()
    ids = torch.randint(3, 250, (2, 7))
    expected = logits(policy, ids)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "critic" in name:
                p.add_(1.0)
    sampler = MergedSampler(policy, dtype=torch.float32)
    torch.testing.assert_close(logits(sampler.model, ids), expected, atol=1e-5, rtol=1e-5)


def test_greedy_generation_matches_the_policy_and_bf16_copy_stays_close():
    policy = lora_policy()
    prompts = [[5, 9, 33, 12], [7, 8], [40, 41, 42, 43, 44, 45]]
    cfg = SamplingConfig(max_new_tokens=12, temperature=0)
    expected = generate_from_tokens(policy, prompts, cfg)
    merged = generate_from_tokens(MergedSampler(policy, dtype=torch.float32).model, prompts, cfg)
    assert torch.equal(merged.sequences, expected.sequences)
    bf16 = MergedSampler(policy, dtype=torch.bfloat16).model
    assert bf16.lm_head.weight.dtype == torch.bfloat16
    assert bf16.model.rotary_emb.inv_freq.dtype == torch.float32  # RoPE frequencies keep fp32
    ids = expected.sequences
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = logits(policy, ids).float()
    torch.testing.assert_close(logits(bf16, ids).float(), reference, atol=0.1, rtol=0.05)


def test_only_plain_lora_policies_merge():
    assert not can_merge(PaddockLlamaForCausalLM(tiny_config()))
    assert can_merge(lora_policy())
    with pytest.raises(ValueError, match="LoRA"):
        MergedSampler(PaddockLlamaForCausalLM(tiny_config()))
