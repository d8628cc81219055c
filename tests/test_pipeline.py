"""Recipe runs through the real CLI on a tiny model: losses, artifacts, skip, resume after SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.conftest import family_config

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory, smollm2_tokenizer):
    """A random 2-layer Llama with the SmolLM2 tokenizer, saved like any HF checkpoint."""
    return save_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), smollm2_tokenizer)


def save_tiny_checkpoint(path: Path, tokenizer, model_type: str = "llama", **overrides) -> Path:
    """The `tiny_checkpoint` fixture's model written to `path`; a plain function so that
    benchmarks/gpu_check.py builds the same checkpoint outside pytest. `model_type`: the family
    (tests/test_model_families.py); `overrides`: config changes."""
    torch.manual_seed(0)
    settings = dict(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
        initializer_range=0.02,
    )
    config = family_config(model_type, **{**settings, **overrides})
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def write_recipe(tmp_path: Path, model: Path, **sft) -> Path:
    dialogues = (REPO / "data/gym/sft_train.jsonl").read_text().splitlines()[:48]
    (tmp_path / "dialogues.jsonl").write_text("\n".join(dialogues) + "\n")
    stage = {
        "type": "sft",
        "learning_rate": 1e-2,
        "epochs": 2,
        "batch_size": 4,
        "max_length": 96,
        "checkpoint_every": 2,
        "log_every": 1,
        "warmup_ratio": 0.0,
        "data": {"sources": [{"path": str(tmp_path / "dialogues.jsonl")}], "test_fraction": 0.2},
    }
    stage.update(sft)
    recipe = {
        "run_name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "seed": 3,
        "model": {"name_or_path": str(model), "precision": "fp32"},
        "stages": [stage],
        "logging": {"report_to": ["none"], "progress": False},
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def paddock(*args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alignment.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_sft_recipe_runs_learns_and_writes_every_artifact(tmp_path, tiny_checkpoint):
    recipe = write_recipe(tmp_path, tiny_checkpoint)
    result = paddock("run", str(recipe))
    assert result.returncode == 0, result.stderr
    stage = tmp_path / "runs/tiny/sft"
    rows = metrics(stage)
    summary = json.loads((stage / "summary.json").read_text())
    assert [r["step"] for r in rows] == list(range(1, 2 * (summary["train_examples"] // 4) + 1))  # 2 epochs
    # Pinned on the 2-core CPU: the first loss is ~log(vocab) for a random model, then it falls.
    assert rows[0]["loss"] == pytest.approx(10.8, abs=0.1)
    assert rows[-1]["loss"] < rows[0]["loss"] - 1.0
    assert summary["final"]["eval_loss"] < rows[0]["loss"]
    assert summary["train_examples"] + summary["test_examples"] == 48
    for artifact in [
        "COMPLETE",
        "model/config.json",
        "model/model.safetensors",
        "model/tokenizer.json",
        "plots/loss.png",
    ]:
        assert (stage / artifact).is_file(), artifact
    assert not (stage / "checkpoints").exists()  # scratch removed once complete

    again = paddock("run", str(recipe))
    assert again.returncode == 0 and "complete, skipping" in again.stdout
    from alignment import load_model

    load_model(stage / "model")  # the output is a loadable HF checkpoint


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, tiny_checkpoint):
    settings = dict(epochs=3, checkpoint_every=3)
    (tmp_path / "a").mkdir()
    straight = write_recipe(tmp_path / "a", tiny_checkpoint, **settings)
    assert paddock("run", str(straight)).returncode == 0

    (tmp_path / "b").mkdir()
    killed = write_recipe(tmp_path / "b", tiny_checkpoint, **settings)
    stage = tmp_path / "b/runs/tiny/sft"
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignment.cli", "run", str(killed)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while time.time() < deadline and not list(stage.glob("checkpoints/step-*/state.json")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (stage / "COMPLETE").exists(), "the run finished before it could be killed"
    resumed = paddock("run", str(killed))
    assert resumed.returncode == 0, resumed.stderr

    expected = load_file(tmp_path / "a/runs/tiny/sft/model/model.safetensors")
    got = load_file(stage / "model/model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], atol=0, rtol=0, msg=name)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "tokens_per_s"} for r in rows]  # noqa: E731
    assert drop(metrics(stage)) == drop(metrics(tmp_path / "a/runs/tiny/sft"))


def test_lora_stage_saves_an_adapter_that_names_its_base(tmp_path, tiny_checkpoint):
    recipe = write_recipe(tmp_path, tiny_checkpoint, max_steps=2)
    result = paddock("run", str(recipe), "model.lora={r: 4, alpha: 8}", "model.merge_lora=true")
    assert result.returncode == 0, result.stderr
    model_dir = tmp_path / "runs/tiny/sft/model"
    assert (model_dir / "adapter_model.safetensors").is_file()
    assert (model_dir / "paddock_base.txt").read_text().strip() == str(tiny_checkpoint)
    assert (model_dir / "merged/model.safetensors").is_file()


def test_bad_recipe_fails_before_compute_with_one_line(tmp_path, tiny_checkpoint):
    recipe = write_recipe(tmp_path, tiny_checkpoint)
    result = paddock("run", str(recipe), "stages.sft.learning_rte=1")
    assert result.returncode == 2
    assert "learning_rte" in result.stderr and "learning_rate" in result.stderr
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "runs").exists()


def test_qlora_and_packing_run(tmp_path, tiny_checkpoint):
    recipe = write_recipe(tmp_path, tiny_checkpoint, max_steps=2, packing=True)
    result = paddock(
        "run", str(recipe), "model.lora={r: 4}", "model.qlora=true", "model.precision=bf16-autocast"
    )
    assert result.returncode == 0, result.stderr
    rows = metrics(tmp_path / "runs/tiny/sft")
    assert len(rows) == 2 and all(row["loss"] > 0 for row in rows)
    assert (tmp_path / "runs/tiny/sft/model/adapter_model.safetensors").is_file()


def test_reward_model_stage_trains_and_reports_the_paper_tables(tmp_path, tiny_checkpoint):
    pairs = (REPO / "data/gym/helpfulness_pairs_train.jsonl").read_text().splitlines()[:64]
    (tmp_path / "pairs.jsonl").write_text("\n".join(pairs) + "\n")
    tests = (REPO / "data/gym/safety_pairs_test.jsonl").read_text().splitlines()[:16]
    (tmp_path / "safety_test.jsonl").write_text("\n".join(tests) + "\n")
    stage = {
        "type": "reward_model",
        "name": "rm",
        "learning_rate": 3e-3,
        "epochs": 3,
        "batch_size": 8,
        "max_length": 96,
        "min_warmup_steps": 1,
        "checkpoint_every": 10,
        "data": {
            "sources": [{"path": str(tmp_path / "pairs.jsonl")}],
            "test_sources": [
                {"path": str(tmp_path / "pairs.jsonl"), "name": "train_pairs"},
                {"path": str(tmp_path / "safety_test.jsonl"), "name": "safety"},
            ],
        },
    }
    recipe = {
        "run_name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "seed": 0,
        "model": {"name_or_path": str(tiny_checkpoint), "precision": "fp32"},
        "stages": [stage],
        "logging": {"report_to": ["none"], "progress": False},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = paddock("run", str(tmp_path / "recipe.yaml"))
    assert result.returncode == 0, result.stderr
    out = tmp_path / "runs/tiny/rm"
    rows = metrics(out)
    first, last = rows[0]["loss"], sum(r["loss"] for r in rows[-3:]) / 3
    assert last < first  # the margin loss falls on the training pairs
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["accuracy_by_rating"]) == {
        "significantly_better",
        "better",
        "slightly_better",
        "negligibly_better",
    }
    assert set(summary["accuracy_by_category"]) == {"helpfulness", "safety"}
    assert 0 <= summary["accuracy"] <= 1
    assert (out / "model/config.json").is_file() and list((out / "plots").glob("*.png"))
    from transformers import LlamaForSequenceClassification

    LlamaForSequenceClassification.from_pretrained(out / "model")  # a standard HF reward checkpoint
