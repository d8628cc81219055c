"""Each supported family (llama with llama3 rope, mistral, qwen2, qwen3) against transformers' own
classes on tiny random configs: weight names, logits both ways on padded batches longer than the
sliding window, greedy generation, the reward and value heads, packed reward batches, LoRA target
names, saved class names, and one SFT step plus one reward-model step through the pipeline.

The tiny configs exercise what sets each family apart: llama3 rope scaling (Llama 3.x), a 6-token
sliding window on every layer (Mistral) or on the layers from `max_window_layers` on (Qwen2/3),
q/k/v projection biases (Qwen2), RMSNorm on the query and key heads and a head_dim that is not
hidden / heads (Qwen3). Sequences are 16 tokens, so every window hides keys.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from peft import LoraConfig, get_peft_model
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    GPT2Config,
)

from alignment import load_model, save_checkpoint
from alignment.base_model.families import FAMILIES, HEAD_SUFFIXES, LORA_TARGETS, architecture, layer_windows
from alignment.base_model.generation import SamplingConfig, generate, left_pad
from alignment.base_model.modeling import PaddockLlamaForCausalLM, PaddockLlamaForReward, PaddockLlamaForValue
from alignment.errors import PaddockError
from tests.conftest import TINY_VOCAB
from tests.conftest import family_config as tiny_family_config

WINDOW = 6
FAMILY_SETTINGS = {
    "llama": dict(
        tie_word_embeddings=True,
        rope_parameters={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8,
            "rope_theta": 500000.0,
        },
    ),
    "mistral": dict(sliding_window=WINDOW),
    "qwen2": dict(use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
    "qwen3": dict(head_dim=24, use_sliding_window=True, sliding_window=WINDOW, max_window_layers=1),
}
WINDOWED = ["mistral", "qwen2", "qwen3"]


def family_config(family: str, **overrides):
    """The tiny test model in `family`'s config class, with what sets the family apart."""
    return tiny_family_config(family, **{**FAMILY_SETTINGS[family], **overrides})


def twins(family: str, hf_auto=AutoModelForCausalLM, ours_cls=PaddockLlamaForCausalLM, **overrides):
    """transformers' model of the family and Paddock's holding the same random weights."""
    torch.manual_seed(0)
    reference = hf_auto.from_config(family_config(family, **overrides)).eval()
    ours = ours_cls(family_config(family, **overrides)).eval()
    ours.load_state_dict(reference.state_dict(), strict=True)
    return reference, ours


def padded_batch(length=16, left_pad_by=(0, 3, 9)):
    torch.manual_seed(1)
    ids = torch.randint(3, TINY_VOCAB, (len(left_pad_by), length))
    mask = torch.ones_like(ids)
    for row, pad in enumerate(left_pad_by):
        ids[row, :pad], mask[row, :pad] = 0, 0
    return ids, mask


def max_diff_on_real_tokens(a, b, mask):
    return ((a - b).abs() * mask[..., None]).max().item()


families = pytest.mark.parametrize("family", list(FAMILY_SETTINGS))


def test_every_supported_family_is_tested_here():
    assert set(FAMILY_SETTINGS) == set(FAMILIES)


@families
def test_weight_names_are_transformers_own(family):
    reference, ours = twins(family)
    assert list(ours.state_dict()) == list(reference.state_dict())
    if family == "qwen2":
        assert ours.model.layers[0].self_attn.q_proj.bias is not None
        assert ours.model.layers[0].self_attn.o_proj.bias is None
    if family == "qwen3":
        assert ours.model.layers[0].self_attn.q_norm.weight.shape == (24,)


@families
def test_logits_match_transformers_on_its_weights(family):
    reference, ours = twins(family)
    ids, mask = padded_batch()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)  # Paddock's positions for left padding
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask, position_ids=positions).logits
        got = ours(ids, attention_mask=mask).logits
        assert max_diff_on_real_tokens(expected, got, mask) < 1e-4
        assert (reference(ids).logits - ours(ids).logits).abs().max() < 1e-4  # unpadded: SDPA's causal path


@families
def test_a_paddock_checkpoint_is_the_family_to_transformers(family, tmp_path):
    torch.manual_seed(2)
    ours = PaddockLlamaForCausalLM(family_config(family)).eval()
    save_checkpoint(ours, tmp_path / "m")
    saved = json.loads((tmp_path / "m/config.json").read_text())
    assert saved["model_type"] == family
    assert saved["architectures"] == [FAMILIES[family].class_prefix + "ForCausalLM"]
    reference = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert type(reference).__name__ == saved["architectures"][0]
    reloaded = load_model(tmp_path / "m")
    assert type(reloaded.config) is type(reference.config)
    ids, mask = padded_batch()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        expected = reference(ids, attention_mask=mask, position_ids=positions).logits
        for model in (ours, reloaded):
            assert max_diff_on_real_tokens(expected, model(ids, attention_mask=mask).logits, mask) < 1e-4


@pytest.mark.parametrize("family", WINDOWED)
def test_the_sliding_window_hides_keys(family):
    """Without the window the same weights give the same logits for the first WINDOW positions
    (nothing is hidden yet) and different ones after: the parity tests above see the window."""
    _, ours = twins(family)
    windows = layer_windows(ours.config)
    assert WINDOW in windows and (family != "mistral") == (None in windows)
    _, unwindowed = (
        twins(family, sliding_window=None) if family == "mistral" else twins(family, use_sliding_window=False)
    )
    assert not unwindowed.model.windows
    ids, _ = padded_batch(left_pad_by=(0, 0, 0))
    with torch.no_grad():
        gap = (ours(ids).logits - unwindowed(ids).logits).abs().amax(-1)  # [B, T]
    assert gap[:, :WINDOW].max() < 1e-5
    assert gap[:, WINDOW:].min() > 1e-3


@families
def test_greedy_generation_equals_transformers_generate(family):
    """Prompts of 2-7 tokens and 14 new tokens: decoding runs past the window."""
    reference, ours = twins(family)
    prompts = [[5, 17, 33, 9, 100, 41, 7], [12, 250], [60, 61, 62, 63]]
    cfg = SamplingConfig(max_new_tokens=14, temperature=0)
    for prompt in prompts:
        ids = torch.tensor([prompt])
        expected = reference.generate(
            ids, attention_mask=torch.ones_like(ids), max_new_tokens=14, min_new_tokens=14, do_sample=False
        )
        assert torch.equal(generate(ours, ids, torch.ones_like(ids), cfg).sequences, expected)
    ids, mask = left_pad(prompts, pad_token_id=0)
    batched = generate(ours, ids, mask, cfg)
    for row, prompt in enumerate(prompts):  # left padding changes no row
        alone = generate(ours, torch.tensor([prompt]), torch.ones(1, len(prompt), dtype=torch.long), cfg)
        assert torch.equal(batched.sequences[row, batched.prompt_length :], alone.sequences[0, len(prompt) :])


@families
def test_reward_head_matches_sequence_classification(family):
    reference, ours = twins(family, AutoModelForSequenceClassification, PaddockLlamaForReward, num_labels=1)
    assert type(reference).__name__ == architecture(ours.config, "reward")
    ids, mask = padded_batch(left_pad_by=(0, 0, 0))
    ids[1, 12:], mask[1, 12:] = 0, 0  # right padding: transformers pools at the last non-pad id
    with torch.no_grad():
        assert torch.allclose(
            reference(ids, attention_mask=mask).logits, ours(ids, attention_mask=mask).logits, atol=1e-4
        )


@families
def test_value_head_matches_token_classification(family):
    reference, ours = twins(family, AutoModelForTokenClassification, PaddockLlamaForValue, num_labels=1)
    assert type(reference).__name__ == architecture(ours.config, "value")
    ids, _ = padded_batch()
    with torch.no_grad():
        assert torch.allclose(reference(ids).logits[..., 0], ours(ids).values, atol=1e-4)


@families
def test_packed_rewards_and_gradients_equal_one_sequence_at_a_time(family):
    """The reward-model stage packs a batch into one row; sequences of 16 and 11 tokens pass the
    window, 4 does not."""
    torch.manual_seed(0)
    model = PaddockLlamaForReward(family_config(family)).train()
    sequences = [torch.randint(3, TINY_VOCAB, (n,)) for n in (16, 4, 11)]
    packed = model(torch.cat(sequences)[None], sequence_lengths=[len(s) for s in sequences]).logits[:, 0]
    packed.sum().backward()
    packed_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    alone = torch.cat([model(s[None]).logits[:, 0] for s in sequences])
    alone.sum().backward()
    assert torch.allclose(packed, alone, atol=1e-5)
    for got, want in zip(packed_grads, (p.grad for p in model.parameters()), strict=True):
        assert torch.allclose(got, want, atol=1e-5)


@families
def test_lora_wraps_the_seven_projections_of_every_layer(family):
    _, ours = twins(family)
    model = get_peft_model(ours, LoraConfig(r=4, target_modules=list(LORA_TARGETS)))
    wrapped = {name.split(".")[-1] for name, module in model.named_modules() if hasattr(module, "lora_A")}
    counted = sum(1 for _, module in model.named_modules() if hasattr(module, "lora_A"))
    assert wrapped == set(LORA_TARGETS) and counted == len(LORA_TARGETS) * 2


def test_a_config_of_another_model_type_is_refused_naming_the_supported_ones():
    with pytest.raises(
        PaddockError, match="model_type 'gpt2' is not a family .*llama, mistral, qwen2, qwen3"
    ):
        PaddockLlamaForCausalLM(GPT2Config(n_layer=1, n_embd=32, n_head=2))


@families
def test_one_sft_step_and_one_reward_model_step_through_the_pipeline(family, tmp_path, smollm2_tokenizer):
    """A LoRA SFT stage and a reward-model stage on top of it, 2 steps each, through run_recipe:
    finite losses, and each stage's model saved as the family's transformers class."""
    from alignment.pipeline import run_recipe
    from tests.test_pipeline import REPO, save_tiny_checkpoint

    model = save_tiny_checkpoint(tmp_path / "base", smollm2_tokenizer, family, **FAMILY_SETTINGS[family])
    for name, source in (("sft", "sft_train"), ("pairs", "helpfulness_pairs_train")):
        lines = (REPO / f"data/gym/{source}.jsonl").read_text().splitlines()[:16]
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    common = {"epochs": 1, "max_steps": 2, "batch_size": 4, "max_length": 64, "learning_rate": 1e-3}
    recipe = {
        "run_name": family,
        "output_dir": str(tmp_path / "runs"),
        "model": {
            "name_or_path": str(model),
            "precision": "fp32",
            "lora": {"r": 4, "alpha": 8},
            "merge_lora": True,
        },
        "stages": [
            {"type": "sft", **common, "data": {"sources": [{"path": str(tmp_path / "sft.jsonl")}]}},
            {
                "type": "reward_model",
                "name": "rm",
                "init_from": "sft",
                "eval_pairs": 4,
                **common,
                "data": {"sources": [{"path": str(tmp_path / "pairs.jsonl")}]},
            },
        ],
        "logging": {"report_to": ["none"], "progress": False},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    run = run_recipe(tmp_path / "recipe.yaml")
    for stage, head in (("sft", "causal_lm"), ("rm", "reward")):
        losses = [
            json.loads(line)["loss"] for line in (run / stage / "metrics.jsonl").read_text().splitlines()
        ]
        assert len(losses) == 2 and all(torch.isfinite(torch.tensor(losses)))
        saved = json.loads((run / stage / "model/merged/config.json").read_text())
        assert saved["model_type"] == family
        assert saved["architectures"] == [FAMILIES[family].class_prefix + HEAD_SUFFIXES[head]]


def test_a_recipe_on_another_model_type_stops_at_the_plan_writing_nothing(tmp_path):
    """Refused before any stage starts (and before any weight is read): the run directory is
    never created, and the message names config.json and the supported types."""
    from alignment.pipeline import run_recipe

    (tmp_path / "gpt2").mkdir()
    (tmp_path / "gpt2/config.json").write_text(
        json.dumps({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]})
    )
    recipe = {
        "run_name": "other",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name_or_path": str(tmp_path / "gpt2")},
        "stages": [{"type": "sft", "data": {"sources": [{"path": "data/gym/sft_train.jsonl"}]}}],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    with pytest.raises(
        PaddockError, match=r"gpt2/config.json: model_type 'gpt2' \(GPT2LMHeadModel\) is not a family"
    ):
        run_recipe(tmp_path / "recipe.yaml", dry_run=True)
    with pytest.raises(PaddockError, match="supported: llama, mistral, qwen2, qwen3"):
        run_recipe(tmp_path / "recipe.yaml")
    assert not (tmp_path / "runs").exists()


PUBLISHED = {  # name: (config.json settings that set the shapes, the published parameter count)
    "Llama-3.2-1B": (
        dict(
            model_type="llama",
            hidden_size=2048,
            intermediate_size=8192,
            num_hidden_layers=16,
            num_attention_heads=32,
            num_key_value_heads=8,
            head_dim=64,
            vocab_size=128256,
            tie_word_embeddings=True,
            rope_parameters={
                "rope_type": "llama3",
                "factor": 32.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 8192,
                "rope_theta": 500000.0,
            },
        ),
        1_235_814_400,
    ),
    "Mistral-7B-v0.1": (
        dict(
            model_type="mistral",
            hidden_size=4096,
            intermediate_size=14336,
            num_hidden_layers=32,
            num_attention_heads=32,
            num_key_value_heads=8,
            vocab_size=32000,
            sliding_window=4096,
        ),
        7_241_732_096,
    ),
    "Qwen2.5-0.5B": (
        dict(
            model_type="qwen2",
            hidden_size=896,
            intermediate_size=4864,
            num_hidden_layers=24,
            num_attention_heads=14,
            num_key_value_heads=2,
            vocab_size=151936,
            tie_word_embeddings=True,
        ),
        494_032_768,
    ),
    "Qwen3-0.6B": (
        dict(
            model_type="qwen3",
            hidden_size=1024,
            intermediate_size=3072,
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=8,
            head_dim=128,
            vocab_size=151936,
            tie_word_embeddings=True,
        ),
        596_049_920,
    ),
}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_published_shapes_build_transformers_weights_and_parameter_count(name):
    """A published model's shapes (built on the meta device: no memory, no weights) give the
    tensors transformers' class has, name for name and shape for shape, and the parameter count
    the model card gives; Llama 3.2's rope frequencies equal transformers'."""
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from alignment.base_model.modeling import rope_inverse_frequencies

    settings, count = PUBLISHED[name]
    config = AutoConfig.for_model(**settings)
    with torch.device("meta"):
        ours = PaddockLlamaForCausalLM(config)
        reference = AutoModelForCausalLM.from_config(config)
    shapes = lambda model: {k: tuple(v.shape) for k, v in model.state_dict().items()}  # noqa: E731
    assert shapes(ours) == shapes(reference)
    assert sum(p.numel() for p in ours.parameters()) == count
    if config.rope_parameters["rope_type"] == "llama3":
        expected, _ = ROPE_INIT_FUNCTIONS["llama3"](config, "cpu")
        torch.testing.assert_close(rope_inverse_frequencies(config), expected)
