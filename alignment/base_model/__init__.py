"""Paddock's Llama base model: architecture, checkpoint I/O, the embedded default and generation."""

from alignment.base_model.checkpoint import convert_gguf, save_checkpoint
from alignment.base_model.loading import load_model, load_tokenizer, resolve
from alignment.base_model.modeling import (
    PaddockLlamaForCausalLM,
    PaddockLlamaForReward,
    PaddockLlamaForValue,
    PaddockLlamaModel,
)

__all__ = [
    "PaddockLlamaForCausalLM",
    "PaddockLlamaForReward",
    "PaddockLlamaForValue",
    "PaddockLlamaModel",
    "convert_gguf",
    "load_model",
    "load_tokenizer",
    "resolve",
    "save_checkpoint",
]
