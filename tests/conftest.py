"""Shared fixtures: tiny random Llama configs (2 layers, hidden 64) and the SmolLM2 tokenizer."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig

from alignment.engines.vllm_client import find_python

TINY_VOCAB = 256

# vLLM's Python, found before the suite turns it off: `generation.engine: auto` would otherwise pick
# vLLM on a machine that has it, and the suite's tiny models (head size 16) are not for vLLM's CPU
# attention. tests/test_vllm.py names this Python explicitly.
# (Kept in the environment too: pytest imports this file twice, as conftest and tests.conftest.)
if os.environ.get("PADDOCK_VLLM_PYTHON") != "none":
    os.environ["PADDOCK_TESTS_VLLM_PYTHON"] = find_python() or ""
    os.environ["PADDOCK_VLLM_PYTHON"] = "none"
VLLM_PYTHON = os.environ.get("PADDOCK_TESTS_VLLM_PYTHON") or None


def tiny_config(**overrides) -> LlamaConfig:
    """A 2-layer, hidden-64 Llama; GQA (4 query / 2 KV heads) and untied embeddings by default."""
    return LlamaConfig(**tiny_settings(overrides))


def family_config(model_type: str, **overrides):
    """tiny_config's model in another supported family's own transformers config class."""
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **tiny_settings(overrides))


def tiny_settings(overrides: dict) -> dict:
    settings = dict(
        vocab_size=TINY_VOCAB,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=False,
        initializer_range=0.1,  # larger than the default so random logits are not all near zero
    )
    settings.update(overrides)
    return settings


def discard_once_passed(request: pytest.FixtureRequest, path: Path) -> Path:
    """Remove a module fixture's run directory when its module ends with no new failure.

    Those directories hold whole tiny pipelines, 70-300 MB each, and pytest would keep them all to
    the end of the session: a CI machine was once seen with 60 MB left on /tmp halfway through the
    suite. A failing module keeps its directory to be looked at.
    """
    failures_before = request.session.testsfailed

    def discard():
        if request.session.testsfailed == failures_before:
            shutil.rmtree(path, ignore_errors=True)

    request.addfinalizer(discard)
    return path


@pytest.fixture
def seeded():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def smollm2_path():
    """The embedded default checkpoint, converted once into PADDOCK_HOME (default ~/.cache/paddock)."""
    from alignment.base_model import default_models

    return default_models.prepare("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path):
    from alignment import load_tokenizer

    return load_tokenizer(smollm2_path)
