"""Paddock: the Llama 2-Chat RLHF and safety-alignment pipeline, stage by stage."""

from alignment.errors import PaddockError

__all__ = ["PaddockError", "load_model", "load_tokenizer", "save_checkpoint"]
__version__ = "0.1.0"

_MODEL_API = ("load_model", "load_tokenizer", "save_checkpoint")


def __getattr__(name: str):
    # Imported on first use: the model code pulls in torch and transformers (about 5 s), which
    # `paddock --help`, `--version` and recipe validation do not need.
    if name in _MODEL_API:
        from alignment import base_model

        return getattr(base_model, name)
    raise AttributeError(f"module 'alignment' has no attribute {name!r}")
