"""The model families Paddock's base model runs, and the few ways each differs from Llama.

All four are the Llama decoder (RMSNorm, rotary embeddings, SwiGLU, grouped-query attention) with
transformers' Llama weight names; a family adds at most projection biases, a norm on the query
and key heads, or a sliding attention window. A checkpoint keeps its family's own transformers
config class (`model_type` in config.json), so a Paddock save of a Qwen2 model is a Qwen2
checkpoint to transformers and vLLM alike.

Any other `model_type` is refused before any compute (`read_config`, from `paddock run`'s plan and
from every load): Paddock's
stages rely on its own forward (packed reward-model batches, the preallocated KV cache of the
generation engine, the reward and value heads), which transformers' other classes do not have.

No torch here: recipe validation imports this module.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from alignment.errors import PaddockError


@dataclass(frozen=True)
class Family:
    model_type: str
    class_prefix: str  # transformers' class names: f"{class_prefix}ForCausalLM" and the heads'
    biases: str  # "config": attention_bias on q, k, v and o; "qkv": q, k, v only (Qwen2); "none"
    qk_norm: bool  # an RMSNorm over each query and key head before the rotation (Qwen3)
    windows: str  # "none"; "all": every layer slides (Mistral); "layer_types": per layer (Qwen)
    examples: str


FAMILIES = {
    f.model_type: f
    for f in (
        Family("llama", "Llama", "config", False, "none", "Llama 2, Llama 3.x (llama3 rope), SmolLM2"),
        Family("mistral", "Mistral", "none", False, "all", "Mistral 7B (sliding-window attention)"),
        Family("qwen2", "Qwen2", "qkv", False, "layer_types", "Qwen2, Qwen2.5 (q/k/v biases)"),
        Family("qwen3", "Qwen3", "config", True, "layer_types", "Qwen3 dense (q/k norms, own head_dim)"),
    )
}
SUPPORTED_MODEL_TYPES = tuple(FAMILIES)
# The decoder layer's linear layers, named alike in every family: LoRA's default targets.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
HEAD_SUFFIXES = {
    "causal_lm": "ForCausalLM",
    "reward": "ForSequenceClassification",
    "value": "ForTokenClassification",
}


def family_of(config) -> Family:
    """The family of a transformers config; a clear error for any other model type."""
    model_type = getattr(config, "model_type", None)
    if model_type not in FAMILIES:
        raise PaddockError(unsupported_message(model_type))
    return FAMILIES[model_type]


def unsupported_message(model_type, architectures=None) -> str:
    named = f" ({', '.join(architectures)})" if architectures else ""
    return (
        f"model_type {model_type!r}{named} is not a family Paddock's base model runs; supported: "
        f"{', '.join(SUPPORTED_MODEL_TYPES)} (docs/models.md)"
    )


def architecture(config, head: str) -> str:
    """transformers' class name for this family and head, e.g. Qwen2ForSequenceClassification:
    what config.json's `architectures` says, and the model class vLLM picks."""
    return family_of(config).class_prefix + HEAD_SUFFIXES[head]


def projection_biases(config) -> tuple[bool, bool]:
    """Whether (q/k/v, o) projections carry a bias."""
    rule = family_of(config).biases
    if rule == "qkv":
        return True, False
    if rule == "none":
        return False, False
    bias = bool(getattr(config, "attention_bias", False))
    return bias, bias


def layer_windows(config) -> list[int | None]:
    """Each layer's sliding attention window (a key is seen by queries fewer than `window` tokens
    after it), None for full causal attention."""
    rule = family_of(config).windows
    n = config.num_hidden_layers
    window = getattr(config, "sliding_window", None)
    if rule == "none" or window is None:
        return [None] * n
    if rule == "all":
        return [window] * n
    types = getattr(config, "layer_types", None) or ["full_attention"] * n
    unknown = sorted(set(types) - {"full_attention", "sliding_attention"})
    if unknown:
        raise PaddockError(f"layer_types {unknown} not supported: only full_attention, sliding_attention")
    return [window if kind == "sliding_attention" else None for kind in types]


def read_config(path: Path) -> dict:
    """config.json of a checkpoint directory, refused unless it is a supported family."""
    config_file = path / "config.json"
    if not config_file.is_file():
        raise PaddockError(f"{path}: no config.json; expected a Hugging Face checkpoint directory")
    try:
        config = json.loads(config_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise PaddockError(f"{config_file}: not valid JSON ({err})") from None
    if config.get("model_type") not in SUPPORTED_MODEL_TYPES:
        message = unsupported_message(config.get("model_type"), config.get("architectures"))
        raise PaddockError(f"{config_file}: {message}")
    return config
