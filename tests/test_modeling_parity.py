"""Paddock's Llama against transformers' Llama on the same weights: logits, gradients, heads, I/O."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaForTokenClassification,
)
from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

from alignment import load_model, save_checkpoint
from alignment.base_model.modeling import (
    PaddockLlamaForCausalLM,
    PaddockLlamaForReward,
    PaddockLlamaForValue,
    rope_inverse_frequencies,
)
from tests.conftest import TINY_VOCAB, tiny_config

CONFIGS = {
    "gqa-tied": dict(num_key_value_heads=2, tie_word_embeddings=True),
    "mha-untied": dict(num_key_value_heads=4, tie_word_embeddings=False),
    "mqa-untied": dict(num_key_value_heads=1, tie_word_embeddings=False),
    "gqa-linear-rope": dict(rope_parameters={"rope_type": "linear", "factor": 4.0, "rope_theta": 10000.0}),
    "gqa-llama3-rope": dict(
        rope_parameters={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
            "rope_theta": 500000.0,
        }
    ),
}


def twin_models(name: str):
    """A transformers Llama and a Paddock Llama holding the same random weights."""
    torch.manual_seed(0)
    config = tiny_config(**CONFIGS[name])
    reference = LlamaForCausalLM(config).eval()
    ours = PaddockLlamaForCausalLM(tiny_config(**CONFIGS[name])).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def random_batch(batch=3, length=11, left_pad=(0, 4, 7)):
    torch.manual_seed(1)
    input_ids = torch.randint(3, TINY_VOCAB, (batch, length))
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    for row, pad in enumerate(left_pad[:batch]):
        attention_mask[row, :pad] = 0
        input_ids[row, :pad] = 0
    return input_ids, attention_mask


@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_match_transformers(name):
    reference, ours = twin_models(name)
    input_ids, _ = random_batch()
    torch.testing.assert_close(ours(input_ids).logits, reference(input_ids).logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gqa-tied", "mha-untied"])
def test_padded_logits_match_transformers_given_positions(name):
    """transformers needs explicit positions for left padding; Paddock derives them from the mask."""
    reference, ours = twin_models(name)
    input_ids, mask = random_batch()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    expected = reference(input_ids, attention_mask=mask, position_ids=positions).logits
    got = ours(input_ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(got[real], expected[real], atol=1e-5, rtol=1e-5)


def test_left_padding_does_not_change_a_row():
    _, ours = twin_models("gqa-tied")
    input_ids, mask = random_batch()
    padded = ours(input_ids, attention_mask=mask).logits
    for row in range(input_ids.shape[0]):
        real = mask[row].bool()
        alone = ours(input_ids[row : row + 1, real]).logits[0]
        torch.testing.assert_close(padded[row, real], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["gqa-tied", "mha-untied", "mqa-untied"])
def test_loss_and_every_gradient_match_transformers(name):
    reference, ours = twin_models(name)
    input_ids, mask = random_batch(left_pad=(0, 0, 0))
    labels = input_ids.clone()
    labels[:, :4] = -100  # prompt tokens carry no loss
    ref_loss = reference(input_ids, labels=labels).loss
    our_loss = ours(input_ids, labels=labels).loss
    torch.testing.assert_close(our_loss, ref_loss, atol=1e-6, rtol=1e-6)
    ref_loss.backward()
    our_loss.backward()
    ref_grads = dict(reference.named_parameters())
    for param_name, param in ours.named_parameters():
        torch.testing.assert_close(
            param.grad, ref_grads[param_name].grad, atol=1e-5, rtol=1e-4, msg=param_name
        )


def test_gradient_checkpointing_gives_the_same_gradients():
    _, ours = twin_models("gqa-tied")
    input_ids, _ = random_batch(left_pad=(0, 0, 0))
    ours.train()
    ours(input_ids, labels=input_ids).loss.backward()
    plain = {n: p.grad.clone() for n, p in ours.named_parameters()}
    ours.zero_grad()
    ours.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    assert all(layer.gradient_checkpointing for layer in ours.model.layers)
    ours(input_ids, labels=input_ids).loss.backward()
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param.grad, plain[name], atol=1e-6, rtol=1e-5, msg=name)


@pytest.mark.parametrize("rope", ["gqa-linear-rope", "gqa-llama3-rope"])
def test_rope_scaling_frequencies_match_transformers(rope):
    config = tiny_config(**CONFIGS[rope])
    expected, _ = ROPE_INIT_FUNCTIONS[config.rope_parameters["rope_type"]](config)
    torch.testing.assert_close(rope_inverse_frequencies(config), expected)


def test_unsupported_rope_type_is_rejected():
    config = tiny_config(rope_parameters={"rope_type": "yarn", "factor": 2.0, "rope_theta": 10000.0})
    with pytest.raises(ValueError, match="yarn"):
        rope_inverse_frequencies(config)


def test_reward_head_matches_sequence_classification():
    """Right-padded rows with a pad id: both pool at the last real token."""
    torch.manual_seed(0)
    reference = LlamaForSequenceClassification(tiny_config(num_labels=1)).eval()
    ours = PaddockLlamaForReward(tiny_config()).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    input_ids = torch.randint(3, TINY_VOCAB, (3, 9))
    mask = torch.ones_like(input_ids)
    for row, length in enumerate([9, 6, 3]):
        input_ids[row, length:] = 0
        mask[row, length:] = 0
    expected = reference(input_ids, attention_mask=mask).logits
    got = ours(input_ids, attention_mask=mask).logits
    assert got.shape == (3, 1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    # Left padding must give the same score as right padding for the same tokens.
    left_ids, left_mask = torch.zeros_like(input_ids), torch.zeros_like(mask)
    for row, length in enumerate([9, 6, 3]):
        left_ids[row, 9 - length :] = input_ids[row, :length]
        left_mask[row, 9 - length :] = 1
    torch.testing.assert_close(
        ours(left_ids, attention_mask=left_mask).logits, expected, atol=1e-5, rtol=1e-5
    )


def test_value_head_matches_token_classification():
    torch.manual_seed(0)
    reference = LlamaForTokenClassification(tiny_config(num_labels=1)).eval()
    ours = PaddockLlamaForValue(tiny_config()).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    input_ids, _ = random_batch(left_pad=(0, 0, 0))
    values = ours(input_ids).values
    assert values.shape == input_ids.shape
    torch.testing.assert_close(values, reference(input_ids).logits.squeeze(-1), atol=1e-5, rtol=1e-5)


def test_paddock_checkpoint_loads_in_transformers_and_back(tmp_path):
    reference, ours = twin_models("gqa-tied")
    input_ids, _ = random_batch(left_pad=(0, 0, 0))
    save_checkpoint(ours, tmp_path / "paddock")
    in_transformers = AutoModelForCausalLM.from_pretrained(tmp_path / "paddock").eval()
    assert type(in_transformers).__name__ == "LlamaForCausalLM"
    torch.testing.assert_close(
        in_transformers(input_ids).logits, ours(input_ids).logits, atol=1e-5, rtol=1e-5
    )

    reference.save_pretrained(tmp_path / "hf")
    back = load_model(tmp_path / "hf").eval()
    assert isinstance(back, PaddockLlamaForCausalLM)
    torch.testing.assert_close(back(input_ids).logits, reference(input_ids).logits, atol=1e-5, rtol=1e-5)


def test_sharded_checkpoint_loads(tmp_path):
    reference, _ = twin_models("mha-untied")
    reference.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    input_ids, _ = random_batch(left_pad=(0, 0, 0))
    got = load_model(tmp_path).eval()(input_ids).logits
    torch.testing.assert_close(got, reference(input_ids).logits, atol=1e-5, rtol=1e-5)


def test_reward_checkpoint_round_trips_through_transformers(tmp_path):
    torch.manual_seed(0)
    ours = PaddockLlamaForReward(tiny_config()).eval()
    save_checkpoint(ours, tmp_path)
    reference = LlamaForSequenceClassification.from_pretrained(tmp_path).eval()
    input_ids, _ = random_batch(left_pad=(0, 0, 0))
    torch.testing.assert_close(reference(input_ids).logits, ours(input_ids).logits, atol=1e-6, rtol=1e-6)
    # A critic starts from a reward model: the value head reads the same `score` weight.
    critic = load_model(tmp_path, head="value").eval()
    torch.testing.assert_close(critic.score.weight, ours.score.weight)
    assert critic.score.bias.abs().sum() == 0


def test_reward_head_from_causal_lm_checkpoint_is_new_and_trainable(tmp_path):
    reference, _ = twin_models("gqa-tied")
    reference.save_pretrained(tmp_path)
    reward = load_model(tmp_path, head="reward", dtype="bfloat16")
    assert reward.score.weight.dtype == torch.bfloat16
    assert reward.score.weight.abs().sum() > 0  # initialised, not left empty
    torch.testing.assert_close(
        reward.model.embed_tokens.weight.float(), reference.model.embed_tokens.weight, atol=1e-2, rtol=1e-2
    )


def test_peft_lora_wraps_the_model():
    peft = pytest.importorskip("peft")
    _, ours = twin_models("gqa-tied")
    wrapped = peft.get_peft_model(ours, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    input_ids, _ = random_batch(left_pad=(0, 0, 0))
    wrapped(input_ids, labels=input_ids).loss.backward()
    trainable = [n for n, p in wrapped.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert all(p.grad is not None for n, p in wrapped.named_parameters() if p.requires_grad)


def test_tuned_kernels_give_the_reference_path_results():
    """The whole model with tuned kernels against the same model forced onto the plain-torch ops."""
    from alignment.base_model import kernels

    _, ours = twin_models("gqa-tied")
    input_ids, mask = random_batch()
    labels = input_ids.masked_fill(mask == 0, -100)
    tuned = ours(input_ids, attention_mask=mask, labels=labels).loss
    tuned.backward()
    tuned_grads = {n: p.grad.clone() for n, p in ours.named_parameters()}
    ours.zero_grad()
    with kernels.use_reference_kernels():
        reference = ours(input_ids, attention_mask=mask, labels=labels).loss
        reference.backward()
    torch.testing.assert_close(tuned, reference, atol=1e-6, rtol=1e-6)
    for name, param in ours.named_parameters():
        torch.testing.assert_close(tuned_grads[name], param.grad, atol=1e-5, rtol=1e-4, msg=name)


def test_fused_loss_equals_the_loss_from_full_logits():
    _, ours = twin_models("mha-untied")
    input_ids, _ = random_batch(left_pad=(0, 0, 0))
    labels = input_ids.clone()
    labels[0, :5] = -100
    fused = ours(input_ids, labels=labels)
    assert fused.logits is None  # the point: no [tokens x vocab] tensor
    fused.loss.backward()
    fused_grads = {n: p.grad.clone() for n, p in ours.named_parameters()}
    ours.zero_grad()
    ours.fused_loss = False
    plain = ours(input_ids, labels=labels)
    assert plain.logits.shape == (*input_ids.shape, TINY_VOCAB)
    plain.loss.backward()
    torch.testing.assert_close(fused.loss, plain.loss, atol=1e-6, rtol=1e-6)
    for name, param in ours.named_parameters():
        torch.testing.assert_close(fused_grads[name], param.grad, atol=1e-6, rtol=1e-5, msg=name)


def test_bf16_autocast_loss_matches_transformers():
    reference, ours = twin_models("gqa-tied")
    input_ids, _ = random_batch(left_pad=(0, 0, 0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = reference(input_ids, labels=input_ids).loss
        got = ours(input_ids, labels=input_ids).loss
    torch.testing.assert_close(got, expected, atol=2e-2, rtol=2e-2)
