"""Paddock: the Llama 2-Chat RLHF and safety-alignment pipeline, stage by stage."""

from alignment.base_model import load_model, load_tokenizer, save_checkpoint
from alignment.errors import PaddockError

__all__ = ["PaddockError", "load_model", "load_tokenizer", "save_checkpoint"]
__version__ = "0.1.0"
