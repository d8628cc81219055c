"""The public loading API: a name resolves to an embedded default model, a path to a local checkpoint."""

from __future__ import annotations

from pathlib import Path

from alignment.base_model import default_models
from alignment.base_model.checkpoint import load_checkpoint, read_config
from alignment.errors import PaddockError


def resolve(name_or_path: str | Path) -> Path:
    """Checkpoint directory for a model name (converted on first use) or a local path."""
    text = str(name_or_path)
    if text in default_models.DEFAULT_MODELS:
        return default_models.prepare(text)
    return default_models.local_checkpoint(text)


def load_model(
    name_or_path: str | Path = default_models.DEFAULT_MODEL_NAME,
    head: str = "causal_lm",
    dtype="float32",
    device="cpu",
    trust_remote_code: bool = False,
    quantization_config=None,
):
    """Load a checkpoint of a supported family (families.py) into Paddock's architecture.

    Args:
        name_or_path: `smollm2-135m` (the embedded default) or a local HF checkpoint directory
            with `config.json` and single or sharded safetensors.
        head: `causal_lm` (next-token logits), `reward` (scalar at the last real token) or
            `value` (one scalar per token). A missing reward/value head is freshly initialised.
        dtype: `float32`, `bfloat16`, `float16` or a torch dtype.
        device: where to put the weights.
        quantization_config: e.g. a bitsandbytes 4-bit config for QLoRA.
    """
    return load_checkpoint(
        resolve(name_or_path),
        head=head,
        dtype=dtype,
        device=device,
        trust_remote_code=trust_remote_code,
        quantization_config=quantization_config,
    )


def load_tokenizer(
    name_or_path: str | Path = default_models.DEFAULT_MODEL_NAME, trust_remote_code: bool = False
):
    """The checkpoint's tokenizer, chat template included; pad falls back to EOS when unset."""
    from transformers import AutoTokenizer

    path = resolve(name_or_path)
    read_config(path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as err:
        raise PaddockError(f"{path}: could not load a tokenizer ({str(err).splitlines()[0]})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
