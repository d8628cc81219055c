"""Paddock's base model (llama, mistral, qwen2, qwen3): architecture, checkpoint I/O, GGUF import,
the embedded default and generation.

The names below are imported on first use: the modules behind them pull in torch and transformers
(about 5 s), and lighter modules of this package (default_models' table, used by recipe
validation) are imported through it."""

_WHERE = {
    "convert_gguf": "alignment.base_model.gguf_import",
    "save_checkpoint": "alignment.base_model.checkpoint",
    "load_model": "alignment.base_model.loading",
    "load_tokenizer": "alignment.base_model.loading",
    "resolve": "alignment.base_model.loading",
    "PaddockLlamaForCausalLM": "alignment.base_model.modeling",
    "PaddockLlamaForReward": "alignment.base_model.modeling",
    "PaddockLlamaForValue": "alignment.base_model.modeling",
    "PaddockLlamaModel": "alignment.base_model.modeling",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        import importlib

        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'alignment.base_model' has no attribute {name!r}")
