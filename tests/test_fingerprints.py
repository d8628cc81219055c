"""Stage fingerprints and the run plan: a finished stage is reused only when what made it is what
the recipe asks for now; anything else stops the run before it writes, with one line naming what
changed, and `--rerun` re-runs a stage and every stage that builds on it.

The pipeline tests use a toy stage type (registered for the test) that loads its data and writes a
summary, so they run the real `paddock run` in-process in milliseconds."""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from alignment import cli
from alignment.fingerprints import (
    NOT_FINGERPRINTED,
    content_digest,
    differences,
    settings_of,
    upstream_stages,
)
from alignment.recipes import load_recipe
from alignment.recipes.config import setting
from alignment.recipes.schema import StageConfig
from alignment.stages.common import StageContext, load_records
from alignment.stages.registry import register_stage, unregister_stage

REPO = Path(__file__).resolve().parents[1]
RAN: list[str] = []


@dataclass(kw_only=True)
class ToyConfig(StageConfig):
    """A toy stage: counts the rows whose first message holds `word`."""

    word: str = setting("A word to count.", default="the")
    log_every: int = setting("Not fingerprinted: how often metrics are logged.", default=1)


def run_toy(ctx: StageContext) -> dict:
    RAN.append(ctx.stage.name)
    train, _, _ = load_records(ctx, kind="dialogues")
    summary = {"rows": len(train), "word": ctx.stage.word, "init": ctx.init}
    ctx.dir.write_summary(summary)
    ctx.dir.mark_complete()
    return summary


@pytest.fixture
def toy_run(tmp_path, monkeypatch):
    """Stages a -> b (b starts from a's model) and c (from the base model, independent of both)."""
    register_stage("toy", ToyConfig, run_toy, data_kind="dialogues")
    monkeypatch.chdir(tmp_path)
    RAN.clear()
    rows = [
        {"messages": [{"role": "user", "content": t}, {"role": "assistant", "content": "ok"}]}
        for t in ["the cat", "a dog", "the end", "zebra"]
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "base").mkdir()  # c's init_from must exist; the toy stage never loads it
    (tmp_path / "base/config.json").write_text('{"model_type": "llama"}')  # what the plan checks
    data = {"sources": [{"path": "d.jsonl"}], "test_fraction": 0.0}
    recipe = {
        "run_name": "toy",
        "model": {"name_or_path": "./base"},
        "logging": {"report_to": ["none"], "progress": False},
        "stages": [
            {"type": "toy", "name": "a", "data": data},
            {"type": "toy", "name": "b", "data": data},
            {"type": "toy", "name": "c", "init_from": "./base", "data": data},
        ],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    yield tmp_path
    unregister_stage("toy")


def paddock(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(list(argv)) or 0
        except SystemExit as exit_:
            code = exit_.code
    return code, out.getvalue(), err.getvalue()


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_finished_run_is_skipped_only_while_its_fingerprints_match(toy_run):
    assert paddock("run", "recipe.yaml")[0] == 0
    assert RAN == ["a", "b", "c"]
    code, out, _ = paddock("run", "recipe.yaml", "logging.progress=true", "stages.a.log_every=5")
    assert code == 0 and RAN == ["a", "b", "c"], "settings that change nothing made must not rerun"
    assert out.count("complete, skipping: finished with the same settings and data") == 3


def test_a_changed_setting_stops_the_run_in_one_line_naming_it_and_writes_nothing(toy_run):
    assert paddock("run", "recipe.yaml")[0] == 0
    before = snapshot(toy_run)
    code, out, err = paddock("run", "recipe.yaml", "stages.a.word=dog")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "stage a finished with other settings (word: 'the' -> 'dog')" in err
    assert "--rerun a" in err
    assert snapshot(toy_run) == before and RAN == ["a", "b", "c"]
    config = yaml.safe_load((toy_run / "runs/toy/a/config.yaml").read_text())
    assert config["stage"]["word"] == "the", "the stage's record still describes the stage it holds"


def test_changed_data_is_named_and_stops_the_run(toy_run):
    assert paddock("run", "recipe.yaml")[0] == 0
    with open(toy_run / "d.jsonl", "a") as handle:
        handle.write(json.dumps({"messages": [{"role": "user", "content": "the new row"}]}) + "\n")
    code, _, err = paddock("run", "recipe.yaml")
    assert code == 2 and "stage a finished with other settings (file d.jsonl changed)" in err


def test_rerun_runs_the_stage_and_what_builds_on_it_and_keeps_the_rest(toy_run):
    """b starts from a's model, so rerunning a reruns b; c starts from the base model and is kept."""
    assert paddock("run", "recipe.yaml")[0] == 0
    c_before = snapshot(toy_run / "runs/toy/c")
    RAN.clear()
    code, out, err = paddock("run", "recipe.yaml", "stages.a.word=dog", "--rerun", "a")
    assert code == 0, err
    assert RAN == ["a", "b"]
    assert "[b] rerunning: builds on a stage that reruns" in out
    assert snapshot(toy_run / "runs/toy/c") == c_before
    config = yaml.safe_load((toy_run / "runs/toy/a/config.yaml").read_text())
    assert config["stage"]["word"] == "dog" and config["overrides"] == ["stages.a.word=dog"]
    RAN.clear()
    assert paddock("run", "recipe.yaml", "stages.a.word=dog")[0] == 0 and RAN == []


def test_an_unfinished_stage_with_other_settings_is_not_resumed(toy_run):
    assert paddock("run", "recipe.yaml", "--stage", "a")[0] == 0
    (toy_run / "runs/toy/a/COMPLETE").unlink()
    code, _, err = paddock("run", "recipe.yaml", "stages.a.word=dog")
    assert code == 2 and "stage a started with other settings (word: 'the' -> 'dog')" in err


def test_only_the_changed_stages_that_matter_stop_a_partial_run(toy_run):
    """`--stage c` does not build on a, so a's change does not matter to it; `--stage b` does."""
    assert paddock("run", "recipe.yaml", "--stage", "a")[0] == 0
    assert paddock("run", "recipe.yaml", "stages.a.word=dog", "--stage", "c")[0] == 0
    code, _, err = paddock("run", "recipe.yaml", "stages.a.word=dog", "--stage", "b")
    assert code == 2 and "stage a finished with other settings" in err


def test_a_stage_cannot_run_before_the_stage_it_builds_on(toy_run):
    code, _, err = paddock("run", "recipe.yaml", "--stage", "b")
    assert code == 2 and "stage b builds on stage a, which has not finished" in err
    assert not (toy_run / "runs").exists()


def test_dry_run_prints_the_plan_and_writes_nothing(toy_run):
    before = snapshot(toy_run)
    code, out, err = paddock("run", "recipe.yaml", "--dry-run")
    assert code == 0, err
    assert snapshot(toy_run) == before and not (toy_run / "runs").exists()
    assert "a  run     not run yet" in out and "train 4 rows, test 0" in out
    assert "nothing was written" in out and RAN == []
    assert paddock("run", "recipe.yaml", "--stage", "a")[0] == 0
    (toy_run / "runs/toy/b").mkdir()
    (toy_run / "runs/toy/b/partial.txt").write_text("x")
    before = snapshot(toy_run)
    code, out, _ = paddock("run", "recipe.yaml", "stages.c.word=zebra", "--rerun", "a", "--dry-run")
    assert code == 0 and snapshot(toy_run) == before
    rows = [line.split() for line in out.splitlines()[1:]]
    lines = {row[0]: row[1] for row in rows if row and row[0] in ("a", "b", "c")}
    assert lines == {"a": "rerun", "b": "rerun", "c": "run"}


def test_unknown_stage_names_in_flags_are_one_line_errors(toy_run):
    code, _, err = paddock("run", "recipe.yaml", "--rerun", "aa")
    assert code == 2 and "--rerun aa: no such stage (did you mean 'a'?)" in err


# --- the pure parts -----------------------------------------------------------------------------


def test_differences_name_settings_files_and_upstream_stages():
    """Two fingerprints that differ in one setting (margin small -> large), one file's content and
    one upstream stage's digest give exactly those three readable changes, sorted by key."""
    old = {
        "config": {"margin": "small", "lr": 1e-5},
        "files": {"data/p.jsonl": "aa", "data/q.jsonl": "bb"},
        "upstream": {"sft": "11"},
        "digest": "x",
    }
    new = {
        "config": {"margin": "large", "lr": 1e-5},
        "files": {"data/p.jsonl": "aa", "data/q.jsonl": "cc"},
        "upstream": {"sft": "22"},
        "digest": "y",
    }
    assert differences(old, new) == [
        "margin: 'small' -> 'large'",
        "file data/q.jsonl changed",
        "upstream stage sft changed",
    ]
    assert differences(old, old) == []


def test_settings_that_change_nothing_made_are_left_out():
    stage = load_recipe(REPO / "recipes/quickstart.yaml").stages[0]
    values = settings_of(stage)
    assert set(NOT_FINGERPRINTED).isdisjoint(values)
    assert values["learning_rate"] == stage.learning_rate and "data" in values


def test_a_directory_digest_follows_content_not_hidden_files(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    first = content_digest(tmp_path)
    (tmp_path / ".tmp-write").write_text("scratch")
    assert content_digest(tmp_path) == first
    (tmp_path / "a.txt").write_text("two")
    assert content_digest(tmp_path) != first


def test_upstream_stages_of_the_quickstart():
    """Reward models and `init_from` name upstream stages; an evaluation builds on the models it
    names, and by default on every policy stage before it."""
    recipe = load_recipe(REPO / "recipes/quickstart.yaml")
    ups = {s.name: upstream_stages(recipe, i) for i, s in enumerate(recipe.stages)}
    assert ups["sft"] == [] and ups["rm_helpful"] == ["sft"]
    assert ups["ppo"] == ["rm_helpful", "rm_safety", "gatt"]
    named = ["sft", "rm_helpful", "rm_safety", "context_distillation"]
    assert ups["evaluation"] == named
    default = load_recipe(REPO / "recipes/quickstart.yaml", ["stages.evaluation.models=null"])
    assert upstream_stages(default, len(default.stages) - 1) == [s.name for s in default.stages[:-1]]
