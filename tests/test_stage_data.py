"""A stage's data as the pre-flight and the stage read it: the train/test split's grouping key, and
the values and rows a stage would refuse, refused before anything runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignment.data.records import Dialogue
from alignment.errors import PaddockError
from alignment.recipes import load_recipe
from alignment.recipes.schema import DataConfig, SourceConfig
from alignment.stages.stage_data import split_key, stage_records
from tests.test_fingerprints import paddock

REPO = Path(__file__).resolve().parents[1]
SYSTEM = {"role": "system", "content": "You are a helpful assistant."}


def dialogue(question: str, **meta) -> dict:
    return {
        "messages": [SYSTEM, {"role": "user", "content": question}, {"role": "assistant", "content": "ok"}],
        "meta": meta,
    }


def test_dialogues_that_share_a_system_prompt_are_split_by_their_first_user_turn(tmp_path):
    """40 questions, twice each, all opening with one system prompt: grouped by first message they
    would all land on one side; grouped by first user turn both sides get questions (17 of the 40
    at seed 0, a hash draw at 0.25) and the two copies of each question stay together."""
    rows = [dialogue(f"question {i}") for i in range(40)] * 2
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stage = type(
        "S",
        (),
        {
            "name": "sft",
            "data": DataConfig(sources=[SourceConfig(path=str(tmp_path / "d.jsonl"))], test_fraction=0.25),
        },
    )
    train, test, _ = stage_records(stage, 0, tmp_path, "dialogues")
    assert 0 < len(test) < 80 and len(train) + len(test) == 80
    firsts = lambda part: {r.messages[1]["content"] for r in part}  # noqa: E731
    assert not firsts(train) & firsts(test)


def test_a_recipe_named_split_key_groups_by_that_meta_field(tmp_path):
    rows = [dialogue(f"q{i}", conversation=i // 4) for i in range(40)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = DataConfig(
        sources=[SourceConfig(path=str(tmp_path / "d.jsonl"))], test_fraction=0.3, split_key="conversation"
    )
    stage = type("S", (), {"name": "sft", "data": data})
    train, test, _ = stage_records(stage, 0, tmp_path, "dialogues")
    assert test and not {r.meta["conversation"] for r in train} & {r.meta["conversation"] for r in test}
    key = split_key("dialogues", "missing", "sft")
    with pytest.raises(PaddockError, match="data.split_key 'missing' is missing"):
        key(Dialogue(messages=rows[0]["messages"], meta={}))


def test_an_unknown_margin_fails_validation_in_one_line(tmp_path):
    """`margin: medium` used to pass `recipes validate` and end `paddock run` in a traceback."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text((REPO / "recipes/reward_models.yaml").read_text())
    code, _, err = paddock("recipes", "validate", str(recipe))
    assert code == 0, err
    code, out, _ = paddock("run", str(recipe), "stages.rm_helpful.margin=medium", "--dry-run")
    assert code == 2 and not out
    with pytest.raises(PaddockError, match="margin: unknown margin setting 'medium'"):
        load_recipe(recipe, ["stages.rm_helpful.margin=medium"])


def test_column_margins_without_a_margin_column_are_refused_by_the_dry_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = paddock(
        "run", str(REPO / "recipes/reward_models.yaml"), "stages.rm_helpful.margin=column", "--dry-run"
    )
    assert code == 2 and "margin 'column' needs a numeric margin on every pair" in err
    assert not (tmp_path / "runs").exists()


def test_a_source_can_keep_only_records_with_given_meta_values(tmp_path):
    """Five dialogues, two with meta.task borderline: `where: {task: borderline}` keeps those two,
    and the load report says so."""
    rows = [dialogue(f"q{i}", task="borderline" if i % 2 else "math") for i in range(5)]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = SourceConfig(path=str(tmp_path / "d.jsonl"), where={"task": "borderline"})
    data = DataConfig(sources=[source], test_fraction=0.0)
    train, _, report = stage_records(type("S", (), {"name": "sft", "data": data}), 0, tmp_path, "dialogues")
    assert [r.messages[1]["content"] for r in train] == ["q1", "q3"]
    assert report["d"].endswith("kept 2 with meta {'task': 'borderline'}")
