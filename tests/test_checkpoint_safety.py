"""save_checkpoint never deletes what Paddock did not write, replaces its own checkpoints whole, and
a failed write leaves the previous checkpoint as it was. Loading a reward or value head Paddock
initialises itself prints no transformers load report; a report about anything else still shows."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from alignment import load_model, save_checkpoint
from alignment.base_model.checkpoint import COMPLETE_MARKER
from alignment.base_model.modeling import HEADS
from alignment.errors import PaddockError
from tests.conftest import tiny_config


def model_with_seed(seed: int, head: str = "causal_lm", **config):
    torch.manual_seed(seed)
    return HEADS[head](tiny_config(**config)).eval()


def assert_same_weights(path: Path, model, head: str = "causal_lm") -> None:
    loaded = load_model(path, head=head).state_dict()
    want = model.state_dict()
    assert sorted(loaded) == sorted(want)
    for name, value in want.items():
        torch.testing.assert_close(loaded[name], value, rtol=0, atol=0)


def leftovers(parent: Path) -> list[str]:
    """Temp or set-aside dirs a save left beside its target."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def test_an_earlier_paddock_checkpoint_is_replaced_whole(tmp_path):
    target = tmp_path / "model"
    first, second = model_with_seed(0), model_with_seed(1)
    save_checkpoint(first, target)
    (target / "model.safetensors.index.json").unlink(missing_ok=True)
    # A shard name the second save does not write must not survive into the new checkpoint.
    (target / "model-00002-of-00002.safetensors").write_bytes(b"stale")
    manifest = json.loads((target / COMPLETE_MARKER).read_text())["files"]
    manifest.append("model-00002-of-00002.safetensors")
    (target / COMPLETE_MARKER).write_text(json.dumps({"files": manifest}))

    assert save_checkpoint(second, target) == target
    assert_same_weights(target, second)
    assert not (target / "model-00002-of-00002.safetensors").exists()
    assert "model.safetensors" in json.loads((target / COMPLETE_MARKER).read_text())["files"]
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("paddock_wrote_it", [False, True])
def test_a_file_paddock_did_not_write_is_never_deleted(tmp_path, paddock_wrote_it):
    target = tmp_path / "model"
    first = model_with_seed(0)
    if paddock_wrote_it:
        save_checkpoint(first, target)
    else:
        target.mkdir()
    (target / "notes").mkdir()
    (target / "notes/todo.txt").write_text("mine\n")

    with pytest.raises(PaddockError) as err:
        save_checkpoint(model_with_seed(1), target)
    message = str(err.value)
    assert "\n" not in message and "notes/todo.txt" in message and "did not write" in message
    assert (target / "notes/todo.txt").read_text() == "mine\n"
    if paddock_wrote_it:
        assert_same_weights(target, first)
    assert leftovers(tmp_path) == []


def test_an_empty_directory_or_a_file_as_the_target(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    model = model_with_seed(0)
    save_checkpoint(model, empty)
    assert_same_weights(empty, model)

    a_file = tmp_path / "weights"
    a_file.write_text("not a directory\n")
    with pytest.raises(PaddockError, match="not a directory"):
        save_checkpoint(model, a_file)
    assert a_file.read_text() == "not a directory\n"


def test_a_checkpoint_from_before_manifests_is_replaced_but_a_user_file_in_it_is_not(tmp_path):
    """Markers used to hold "ok": such a directory is judged by the names a save writes."""
    target = tmp_path / "model"
    save_checkpoint(model_with_seed(0), target)
    (target / COMPLETE_MARKER).write_text("ok\n")
    second = model_with_seed(1)
    save_checkpoint(second, target)
    assert_same_weights(target, second)

    (target / COMPLETE_MARKER).write_text("ok\n")
    (target / "README.md").write_text("# my notes\n")
    with pytest.raises(PaddockError, match="README.md"):
        save_checkpoint(model_with_seed(2), target)
    assert (target / "README.md").read_text() == "# my notes\n"
    assert_same_weights(target, second)


def test_a_failure_while_writing_leaves_the_old_checkpoint_intact(tmp_path, monkeypatch):
    import transformers.modeling_utils

    target = tmp_path / "model"
    first = model_with_seed(0)
    save_checkpoint(first, target)
    before = {name: (target / name).read_bytes() for name in sorted(p.name for p in target.iterdir())}

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(transformers.modeling_utils, "safe_save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(model_with_seed(1), target)
    assert {name: (target / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in target.iterdir()) == sorted(before)
    assert leftovers(tmp_path) == []
    monkeypatch.undo()
    assert_same_weights(target, first)


def test_a_lora_stage_save_replaces_its_own_adapter_and_keeps_user_files(tmp_path, smollm2_tokenizer):
    from peft import LoraConfig, get_peft_model

    from alignment.model_setup import ADAPTER_BASE_FILE, save_trained

    base = tmp_path / "base"
    save_checkpoint(model_with_seed(0), base)
    out = tmp_path / "stage/model"

    def lora_model(seed):
        torch.manual_seed(seed)
        config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False)
        return get_peft_model(load_model(base), config)

    save_trained(lora_model(1), smollm2_tokenizer, out, base, merge=True)
    second = lora_model(2)
    save_trained(second, smollm2_tokenizer, out, base, merge=True)  # a resumed stage saves again
    assert (out / ADAPTER_BASE_FILE).read_text().strip() == str(base)
    assert_same_weights(out / "merged", second.merge_and_unload())

    (out / "merged/eval.txt").write_text("mine\n")
    with pytest.raises(PaddockError, match="merged/eval.txt"):
        save_trained(lora_model(3), smollm2_tokenizer, out, base, merge=False)
    assert (out / "merged/eval.txt").read_text() == "mine\n"
    assert leftovers(out.parent) == []


# --- transformers' load report -------------------------------------------------------------------


@pytest.fixture
def transformers_log():
    """Every record transformers logs, at its default (warning) verbosity."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("transformers")
    level = logger.level
    logger.setLevel(logging.WARNING)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(level)


def logged(records, capfd) -> str:
    out, err = capfd.readouterr()
    return "\n".join([r.getMessage() for r in records] + [out, err])


@pytest.mark.parametrize(
    "saved, head",
    [("causal_lm", "reward"), ("causal_lm", "value"), ("reward", "value"), ("value", "reward")],
)
def test_a_head_paddock_initialises_itself_loads_without_a_report(
    tmp_path, transformers_log, capfd, saved, head
):
    model_with_seed(0, saved).save_pretrained(tmp_path)
    capfd.readouterr()
    loaded = load_model(tmp_path, head=head)
    assert loaded.score.weight.abs().sum() > 0  # the head is there, initialised or loaded
    text = logged(transformers_log, capfd)
    assert "LOAD REPORT" not in text and "MISSING" not in text and "newly initialized" not in text
    assert logging.getLogger("transformers.modeling_utils").filters == []  # the hold is scoped


def test_a_causal_lm_without_its_lm_head_is_still_reported(tmp_path, transformers_log, capfd):
    """Nothing replaces an untied lm_head a reward checkpoint lacks: transformers' report stays."""
    model_with_seed(0, "reward").save_pretrained(tmp_path)
    capfd.readouterr()
    load_model(tmp_path, head="causal_lm")
    text = logged(transformers_log, capfd)
    assert "LOAD REPORT" in text and "lm_head.weight" in text and "MISSING" in text


def test_a_body_weight_missing_from_a_reward_model_still_fails(tmp_path):
    from safetensors.torch import load_file, save_file

    model_with_seed(0).save_pretrained(tmp_path)
    weights = load_file(tmp_path / "model.safetensors")
    del weights["model.layers.1.mlp.up_proj.weight"]
    save_file(weights, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(PaddockError, match=r"model\.layers\.1\.mlp\.up_proj\.weight missing"):
        load_model(tmp_path, head="reward")
