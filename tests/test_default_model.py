"""The embedded default model: atomic, race-safe conversion into the cache, and SmolLM2 parity."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from alignment.base_model import checkpoint, default_models
from alignment.base_model.checkpoint import COMPLETE_MARKER, publish_dir
from alignment.cli import main

REPO = Path(__file__).resolve().parents[1]


def _publish_after_writing(final: str, payload: str, barrier) -> None:
    tmp = Path(final).parent / f".tmp-{payload}"
    tmp.mkdir()
    (tmp / "weights.txt").write_text(payload * 10_000)
    barrier.wait()  # both writers publish at the same moment
    publish_dir(tmp, Path(final))


def test_two_writers_publishing_at_once_both_end_with_a_complete_dir(tmp_path):
    final = tmp_path / "models" / "m"
    final.parent.mkdir()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=_publish_after_writing, args=(str(final), p, barrier)) for p in "ab"]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert (final / COMPLETE_MARKER).is_file()
    content = (final / "weights.txt").read_text()
    assert content in ("a" * 10_000, "b" * 10_000)  # one writer's whole output, never a mix
    assert sorted(p.name for p in final.parent.iterdir()) == ["m"]  # the loser's temp dir is gone


def test_failed_conversion_leaves_nothing_that_looks_done(monkeypatch, tmp_path):
    monkeypatch.setenv("PADDOCK_HOME", str(tmp_path))

    def explode(*args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr("transformers.AutoModelForCausalLM.from_pretrained", explode)
    with pytest.raises(RuntimeError, match="disk on fire"):
        default_models.prepare()
    assert not default_models.is_prepared("smollm2-135m")
    assert list((tmp_path / "models").iterdir()) == []


def test_killed_conversion_is_not_taken_for_a_finished_one(tmp_path, monkeypatch):
    monkeypatch.setenv("PADDOCK_HOME", str(tmp_path))
    env = {**os.environ}
    proc = subprocess.Popen(
        [sys.executable, "-m", "alignment.cli", "models", "prepare"],
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 60
    models = tmp_path / "models"
    while time.time() < deadline and not (models.exists() and any(models.iterdir())):
        time.sleep(0.2)  # wait until the conversion has started writing
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL  # killed mid-conversion, not finished before the kill
    assert not (models / "smollm2-135m").exists()
    assert not default_models.is_prepared("smollm2-135m")


def test_models_list_shows_the_default(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("PADDOCK_HOME", str(tmp_path))
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "not prepared yet" in out


def test_prepare_prints_the_cached_path(capsys, smollm2_path):
    assert main(["models", "prepare", "smollm2-135m"]) == 0
    assert capsys.readouterr().out.strip() == str(smollm2_path)
    assert checkpoint.read_config(smollm2_path)["num_hidden_layers"] == 30


def test_smollm2_tokenizer_keeps_its_chat_template(smollm2_tokenizer):
    ids = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True
    )
    text = smollm2_tokenizer.decode(ids)
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert smollm2_tokenizer.pad_token is not None


@pytest.mark.slow
def test_two_processes_converting_at_once_both_get_a_good_cache(tmp_path):
    env = {**os.environ, "PADDOCK_HOME": str(tmp_path)}
    cmd = [sys.executable, "-m", "alignment.cli", "models", "prepare"]
    procs = [
        subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert outputs[0] == outputs[1] == str(tmp_path / "models" / "smollm2-135m")
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == ["smollm2-135m"]
    from alignment import load_model

    load_model(outputs[0])


@pytest.mark.slow
def test_smollm2_greedy_continuation_equals_transformers(smollm2_path, smollm2_tokenizer):
    from transformers import AutoModelForCausalLM

    from alignment import load_model
    from alignment.base_model.generation import SamplingConfig, generate

    prompt = smollm2_tokenizer.apply_chat_template(
        [{"role": "user", "content": "Name three rivers in Europe."}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    reference = AutoModelForCausalLM.from_pretrained(smollm2_path).eval()
    expected = reference.generate(**prompt, max_new_tokens=32, min_new_tokens=32, do_sample=False)
    ours = load_model(smollm2_path).eval()
    out = generate(
        ours, prompt["input_ids"], prompt["attention_mask"], SamplingConfig(max_new_tokens=32, temperature=0)
    )
    assert torch.equal(out.sequences, expected)
