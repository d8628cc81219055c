"""The stage table (alignment/stages/registry.py) and the layering it sits in.

A stage type is one module and one `register_stage` line; the pipeline needs nothing else. The
libraries under the stages (base_model, data, training, rl, gym, reward_models, safety) never import
the stages, the pipeline or the CLI, so they can be used and tested without either.
"""

from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from alignment import cli
from alignment.recipes.config import setting
from alignment.recipes.schema import StageConfig
from alignment.stages.common import StageContext, load_records
from alignment.stages.registry import STAGE_TYPES, register_stage, unregister_stage

REPO = Path(__file__).resolve().parents[1]


@dataclass(kw_only=True)
class CountConfig(StageConfig):
    """A toy stage: counts its dialogues and the words of their first message."""

    word: str = setting("A word to find in the first messages.", default="the")


def run_count(ctx: StageContext) -> dict:
    train, test, _ = load_records(ctx, kind=STAGE_TYPES[ctx.stage.type].data_kind)
    firsts = [row.messages[0]["content"] for row in train]
    summary = {
        "init": ctx.init,
        "train": len(train),
        "test": len(test),
        "with_word": sum(ctx.stage.word in text.split() for text in firsts),
    }
    ctx.dir.write_summary(summary)
    ctx.dir.mark_complete()
    return summary


@pytest.fixture
def count_stage():
    register_stage("count", CountConfig, run_count, data_kind="dialogues", writes_model=False)
    yield
    unregister_stage("count")


def test_a_registered_toy_stage_runs_through_paddock_run(count_stage, tmp_path, monkeypatch):
    """One `register_stage` line is all `paddock run` needs: the recipe parses the toy config, the
    data check reads its sources as the registered kind, the runner writes the stage directory, and
    a stage after it starts from the model before it because it writes none."""
    monkeypatch.chdir(tmp_path)
    rows = [
        {"messages": [{"role": "user", "content": text}, {"role": "assistant", "content": "ok"}]}
        for text in ["the cat", "a dog", "the end", "zebra"] * 5
    ]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "base").mkdir()  # the toy stage never loads the model; the plan reads its config
    (tmp_path / "base/config.json").write_text('{"model_type": "llama"}')
    recipe = {
        "run_name": "toy",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name_or_path": "./base"},
        "stages": [
            {
                "type": "count",
                "word": "the",
                "data": {"sources": [{"path": "d.jsonl"}], "test_fraction": 0.0},
            },
            {
                "type": "count",
                "name": "again",
                "word": "zebra",
                "data": {"sources": [{"path": "d.jsonl"}], "test_fraction": 0.0},
            },
        ],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert cli.main(["run", "recipe.yaml", "--stage", "count"]) in (0, None)
    first = json.loads((tmp_path / "runs/toy/count/summary.json").read_text())
    assert (first["train"], first["test"], first["with_word"]) == (20, 0, 10)
    assert cli.main(["run", "recipe.yaml"]) in (0, None)
    second = json.loads((tmp_path / "runs/toy/again/summary.json").read_text())
    assert second["init"] == "./base"  # not runs/toy/count/model: the toy stage writes no model
    assert (second["train"], second["with_word"]) == (20, 5)


def test_a_bad_row_in_a_toy_stage_source_is_refused_before_the_run(count_stage, tmp_path, monkeypatch):
    """The registered data kind drives `paddock run`'s pre-flight read of every row."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "d.jsonl").write_text(json.dumps({"oops": 1}) + "\n")
    recipe = {"run_name": "toy", "stages": [{"type": "count", "data": {"sources": [{"path": "d.jsonl"}]}}]}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    assert cli.main(["run", "recipe.yaml"]) not in (0, None)
    assert not (tmp_path / "runs").exists()


def test_every_shipped_stage_type_is_registered_with_a_runner_and_kind():
    assert set(STAGE_TYPES) >= {
        "sft",
        "reward_model",
        "rejection_sampling",
        "ppo",
        "gatt",
        "evaluation",
        "context_distillation",
        "preference_collection",
    }
    for name, stage in STAGE_TYPES.items():
        assert stage.config.stage_type == name
        assert stage.config.__module__ == f"alignment.stages.{name}", "one module per stage type"
        assert stage.run.__module__ == stage.config.__module__
    assert [n for n, s in STAGE_TYPES.items() if not s.writes_model] == [
        "evaluation",
        "preference_collection",
    ]


# --- layering ---------------------------------------------------------------------------------------

LIBRARIES = [
    "alignment/base_model",
    "alignment/data",
    "alignment/training",
    "alignment/rl",
    "alignment/gym",
    "alignment/gatt",
    "alignment/engines",
    "reward_models",
    "safety",
]  # alignment's own first: the layer test below slices them
UPPER = ("alignment.stages", "alignment.pipeline", "alignment.cli", "alignment.demo", "alignment.report")


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """Every module a file imports, at any depth (function-level imports count too)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.lineno, node.module)] + [
                (node.lineno, f"{node.module}.{a.name}") for a in node.names
            ]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return found


def upward_imports(root: Path = REPO, libraries=LIBRARIES, upper=UPPER) -> list[str]:
    bad = []
    for library in libraries:
        for path in sorted((root / library).rglob("*.py")):
            for line, module in imported_modules(path):
                if module == upper or module.startswith(tuple(u + "." for u in upper) + upper):
                    bad.append(f"{path.relative_to(root)}:{line} imports {module}")
    return sorted(set(bad))


def test_libraries_import_nothing_from_the_stages_pipeline_or_cli():
    assert upward_imports() == []


def test_the_libraries_form_layers_without_a_package_loop():
    """alignment's own libraries, then reward_models (training and judging RMs), then safety (which
    scores with the RMs): each imports only the layers below it."""
    assert upward_imports(libraries=LIBRARIES[:7], upper=("reward_models", "safety")) == []
    assert upward_imports(libraries=["reward_models"], upper=("safety",)) == []


def test_the_layering_check_catches_an_upward_import(tmp_path):
    """The check above is only worth something if it fails on a real violation."""
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "ok.py").write_text("from alignment.errors import PaddockError\n")
    (tmp_path / "lib" / "bad.py").write_text("def f():\n    from alignment.stages.common import data_path\n")
    assert upward_imports(tmp_path, ["lib"]) == [
        "lib/bad.py:2 imports alignment.stages.common",
        "lib/bad.py:2 imports alignment.stages.common.data_path",
    ]
