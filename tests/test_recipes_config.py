"""Strict recipes: unknown keys with the closest valid key, types, literals, overrides, YAML errors,
cross-field rules, help on every field, the generated reference, and every shipped recipe."""

from __future__ import annotations

import argparse
import dataclasses
import textwrap
from dataclasses import dataclass
from typing import Literal

import pytest
import yaml

from alignment.recipes import (
    RECIPES_DIR,
    RecipeError,
    StageConfig,
    apply_overrides,
    find_recipes,
    load_recipe,
)
from alignment.recipes.commands import add_commands, schema_markdown
from alignment.recipes.config import field_types, from_dict, setting
from alignment.recipes.schema import Recipe, schema_classes
from alignment.stages.registry import register_stage, unregister_stage


@dataclass(kw_only=True)
class ToySFT(StageConfig):
    """A stand-in stage config for these tests."""

    learning_rate: float = setting("Peak learning rate.", default=2e-5)
    epochs: int = setting("Passes over the data.", default=2)


@dataclass(kw_only=True)
class ToyRM(StageConfig):
    """A second stand-in stage, with a literal field."""

    margin: Literal["small", "large"] | None = setting("Margin table.", default=None)


@pytest.fixture
def toy_stages():
    register_stage("toy_sft", ToySFT, run=print, data_kind="dialogues")
    register_stage("toy_rm", ToyRM, run=print, data_kind=None)
    yield
    unregister_stage("toy_sft"), unregister_stage("toy_rm")


def base() -> dict:
    return {
        "run_name": "toy",
        "stages": [
            {
                "type": "toy_sft",
                "learning_rate": 1e-5,
                "data": {
                    "sources": [{"path": "data/helpful.jsonl"}, {"path": "data/safety.jsonl"}],
                    "mixture": {"helpful": {"ratio": 0.5, "anchor": True}, "safety": {"ratio": 0.5}},
                },
            },
            {"type": "toy_rm", "init_from": "toy_sft"},
        ],
    }


def edited(path: str, value) -> dict:
    """`base()` with the value at a dotted path (list indices as numbers) replaced; None deletes."""
    raw = base()
    *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
    node = raw
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(node, dict) else node[part]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return raw


def error_of(raw: dict) -> str:
    with pytest.raises(RecipeError) as info:
        from_dict(Recipe, raw)
    return str(info.value)


def write(tmp_path, text: str, name: str = "recipe.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_parses_stages_and_fills_defaults(toy_stages):
    recipe = from_dict(Recipe, base())
    sft, rm = recipe.stages
    assert isinstance(sft, ToySFT) and isinstance(rm, ToyRM)
    assert (sft.name, rm.name, rm.init_from) == ("toy_sft", "toy_rm", "toy_sft")
    assert sft.learning_rate == 1e-5 and sft.epochs == 2
    assert [s.name for s in sft.data.sources] == ["helpful", "safety"]
    assert recipe.model.precision == "bf16-autocast" and recipe.model.lora is None
    assert recipe.logging.report_to == ["tensorboard"] and recipe.output_dir == "runs"


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("run_nmae", "x", "unknown key 'run_nmae' at the top level (did you mean 'run_name'?)"),
        ("model.presicion", "fp32", "unknown key 'presicion' at model (did you mean 'precision'?)"),
        (
            "stages.0.learning_rte",
            1e-5,
            "unknown key 'learning_rte' at stages[0] (did you mean 'learning_rate'?)",
        ),
        ("stages.0.data.sources.1.adaptor", "trl", "at stages[0].data.sources[1] (did you mean 'adapter'?)"),
        (
            "stages.0.data.mixture.safety.ration",
            1,
            "'ration' at stages[0].data.mixture.safety (did you mean 'ratio'",
        ),
        ("stages.1.type", "toy_sf", "stages[1].type: unknown stage type 'toy_sf' (did you mean 'toy_sft'?)"),
    ],
)
def test_unknown_key_names_path_and_closest_key(toy_stages, path, value, expected):
    assert expected in error_of(edited(path, value))


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("seed", "abc", "seed: expected int, got str 'abc'"),
        ("seed", True, "seed: expected int, got bool true"),
        ("stages.0.learning_rate", False, "stages[0].learning_rate: expected float, got bool false"),
        (
            "stages.0.data.sources.0.options",
            [1, 2],
            "stages[0].data.sources[0].options: expected mapping, got list",
        ),
        ("model", "smollm2-135m", "model: expected ModelConfig, got str"),
        ("stages.0.data.max_rows", 1.5, "stages[0].data.max_rows: expected int | null, got float 1.5"),
        ("logging.report_to", "wandb", "logging.report_to: expected list["),
        ("model.precision", "fp16", 'model.precision: expected one of "fp32" | "bf16-autocast" | "bf16"'),
        ("logging.report_to", ["tensorbord"], "logging.report_to[0]: expected one of"),
        ("stages.1.margin", "medium", "stages[1].margin: expected one of"),
        ("stages.0.data.sources.0.on_error", "ignore", 'on_error: expected one of "raise" | "skip"'),
    ],
)
def test_wrong_type_or_value_names_path_and_expected_type(toy_stages, path, value, expected):
    assert expected in error_of(edited(path, value))


def test_literal_suggests_closest_value_and_int_is_a_float(toy_stages):
    assert "(did you mean 'tensorboard'?)" in error_of(edited("logging.report_to", ["tensorbord"]))
    recipe = from_dict(Recipe, edited("stages.0.learning_rate", 1))
    assert type(recipe.stages[0].learning_rate) is float


@pytest.mark.parametrize(
    "path, expected",
    [
        ("run_name", "missing required key 'run_name' at the top level"),
        ("stages", "missing required key 'stages' at the top level"),
        ("stages.1.type", "missing required key 'type' at stages[1] (one of:"),
        ("stages.0.data.sources.1.path", "missing required key 'path' at stages[0].data.sources[1]"),
    ],
)
def test_missing_required_key_names_path(toy_stages, path, expected):
    assert expected in error_of(edited(path, None))


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("model.qlora", True, "model.qlora: needs LoRA"),
        ("model.merge_lora", True, "model.merge_lora: needs LoRA"),
        ("stages.0.init_from", "toy_rm", "stages[0].init_from: stage 'toy_rm' does not run before 'toy_sft'"),
        ("stages.1.init_from", "toy_rm", "a stage cannot start from itself"),
        (
            "stages.1.init_from",
            "toy_sfft",
            "neither an earlier stage (toy_sft) nor a path (did you mean 'toy_sft'?)",
        ),
        ("stages.1.name", "toy_sft", "stages[1].name: duplicate stage name 'toy_sft'"),
        ("stages.0.name", "my stage", "stages[0].name: 'my stage' is not a valid name"),
        ("stages.0.data", None, "stages[0].data: a toy_sft stage needs `data` with dialogues sources"),
        (
            "stages.0.data.sources.0.name",
            "../../x",
            "stages[0].data.sources[0].name: '../../x' is not a valid name",
        ),
        ("stages", [], "stages: give at least one stage"),
        (
            "stages.0.data.mixture",
            "llama2_safety",
            "unknown preset 'llama2_safety' (did you mean 'llama2_safety_rm'?)",
        ),
        ("stages.0.data.mixture.other", {"count": 3}, "mixture.other: no source named 'other'"),
        (
            "stages.0.data.mixture.safety",
            {"count": 3, "fraction": 0.5},
            "give exactly one of count, fraction, ratio",
        ),
        ("stages.0.data.mixture.helpful.anchor", False, "ratios need one source marked `anchor: true`"),
        (
            "stages.0.data.sources.1.path",
            "more/helpful.jsonl",
            "sources[1].name: duplicate source name 'helpful'",
        ),
        ("stages.0.data.test_fraction", 1.0, "test_fraction: 1.0 is out of range [0, 1)"),
        ("stages.0.data.sources.0.categories", [], "categories: give at least one category"),
        ("logging.report_to", ["none", "wandb"], "'none' cannot be combined"),
        ("model.lora", {"r": 0}, "model.lora.r: 0 is out of range [1, inf)"),
    ],
)
def test_cross_field_rules(toy_stages, path, value, expected):
    assert expected in error_of(edited(path, value))


def test_mixture_must_cover_every_source(toy_stages):
    raw = edited("stages.0.data.mixture", {"helpful": {"fraction": 1.0}})
    assert "source(s) safety not in the mixture" in error_of(raw)


@pytest.mark.parametrize("value", ["./checkpoints/sft", "/abs/ckpt", "smollm2-135m"])
def test_init_from_accepts_paths_and_named_models(toy_stages, value):
    assert from_dict(Recipe, edited("stages.0.init_from", value)).stages[0].init_from == value


def test_overrides_nested_indexed_by_name_and_yaml_typed(toy_stages):
    raw = base()
    out = apply_overrides(
        raw,
        [
            "seed=3",
            "model.lora.r=4",  # `lora` is absent: created because it is a schema field
            "stages.0.learning_rate=3e-4",
            "stages.toy_rm.init_from=./ckpt",
            "stages.toy_sft.data.sources.safety.on_error=skip",
            "logging.report_to=[none]",
            "logging.progress=false",
            "stages.-1.margin=large",
        ],
    )
    assert raw == base(), "the input is not modified"
    recipe = from_dict(Recipe, out)
    assert recipe.seed == 3 and recipe.model.lora.r == 4 and recipe.model.lora.alpha == 32
    assert recipe.stages[0].learning_rate == 3e-4 and isinstance(recipe.stages[0].learning_rate, float)
    assert recipe.stages[1].init_from == "./ckpt" and recipe.stages[1].margin == "large"
    assert recipe.stages[0].data.sources[1].on_error == "skip"
    assert recipe.logging.report_to == ["none"] and recipe.logging.progress is False


@pytest.mark.parametrize(
    "override, expected",
    [
        ("seed", "expected KEY=VALUE"),
        ("=3", "expected KEY=VALUE"),
        ("model..r=3", "expected KEY=VALUE"),
        (
            "stages.toy_sft.learning_rte=1",
            "unknown key 'learning_rte' at stages[0] (did you mean 'learning_rate'?)",
        ),
        ("model.lora_r=4", "unknown key 'lora_r' at model (did you mean 'lora'?)"),
        ("seed.x=1", "seed is int 0, not a mapping or list"),
        ("output_dir.x=1", "output_dir is not a mapping in the recipe schema"),
        ("stages.5.epochs=1", "stages has 2 item(s); index 5 is out of range"),
        ("stages.toy_sfft.epochs=1", "no item named 'toy_sfft' (did you mean 'toy_sft'?)"),
        ("stages.0.epochs=[1", "the value is not valid YAML"),
    ],
)
def test_bad_overrides(toy_stages, override, expected):
    raw = edited("seed", 0)
    with pytest.raises(RecipeError) as info:
        apply_overrides(raw, [override])
    assert f"override {override!r}" in str(info.value) and expected in str(info.value)


def test_override_inside_passthrough_options_may_create_keys(toy_stages):
    out = apply_overrides(base(), ["stages.0.data.sources.0.options.fields.prompt=question"])
    assert out["stages"][0]["data"]["sources"][0]["options"] == {"fields": {"prompt": "question"}}


RECIPE = """\
run_name: toy
model:
  lora: {}
stages:
  - type: toy_sft
    learning_rate: 1e-5
    data: {sources: [{path: d.jsonl}]}
  - type: toy_rm
    margn: small
"""


def test_load_recipe_names_file_and_line(toy_stages, tmp_path):
    path = write(tmp_path, RECIPE)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value) == f"{path}:9: unknown key 'margn' at stages[1] (did you mean 'margin'?)"
    recipe = load_recipe(write(tmp_path, RECIPE.replace("margn", "margin")), ["stages.toy_rm.margin=large"])
    assert recipe.stages[0].learning_rate == 1e-5 and recipe.stages[1].margin == "large"
    assert recipe.model.lora is not None and recipe.model.lora.r == 16


def test_yaml_float_forms_and_override_type_errors_name_the_file(toy_stages, tmp_path):
    path = write(tmp_path, RECIPE.replace("    margn: small\n", ""))
    assert load_recipe(path, ["stages.0.learning_rate=3E-4"]).stages[0].learning_rate == 3e-4
    with pytest.raises(RecipeError, match=r"recipe.yaml: stages\[0\].epochs: expected int, got bool true"):
        load_recipe(path, ["stages.0.epochs=true"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("run_name: toy\nstages:\n  - type: toy_sft\n   learning_rate: 1\n", ":4: invalid YAML"),
        ("run_name: toy\nseed: 1\nseed: 2\n", ":3: invalid YAML: duplicate key 'seed'"),
        ("run_name: [toy\n", ":2: invalid YAML"),
        ("- just\n- a list\n", "a recipe is a mapping"),
        ("", "the recipe is empty"),
    ],
)
def test_yaml_syntax_errors_name_the_line(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert str(info.value).startswith(str(path)) and expected in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(RecipeError, match="no such recipe file"):
        load_recipe(tmp_path / "nope.yaml")


def test_every_schema_field_has_help(toy_stages):
    missing = [
        f"{cls.__name__}.{name}"
        for cls in schema_classes()
        for name, (_, f) in field_types(cls).items()
        if not f.metadata.get("help", "").strip()
    ]
    assert not missing, f"fields without help text: {missing}"
    assert ToySFT in schema_classes() and all(dataclasses.is_dataclass(c) for c in schema_classes())


def test_docs_reference_is_generated_from_the_schema():
    docs = RECIPES_DIR.parent / "docs" / "recipes.md"
    assert docs.read_text() == schema_markdown(), (
        "docs/recipes.md is out of date: run `paddock recipes schema > docs/recipes.md`"
    )


def test_every_shipped_recipe_validates():
    files = find_recipes(RECIPES_DIR)
    if list(RECIPES_DIR.glob("*.y*ml")):
        assert files, "recipes/ has YAML files but find_recipes found none"
    failures = []
    for path in files:
        try:
            load_recipe(path)
        except RecipeError as err:
            failures.append(str(err))
    assert not failures, "\n".join(failures)


def run_cli(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="paddock")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    args.func(args)


def test_cli_list_validate_schema(toy_stages, tmp_path, capsys):
    good = write(tmp_path, RECIPE.replace("margn", "margin"), "good.yaml")
    write(tmp_path, RECIPE, "bad.yaml")
    (tmp_path / "accelerate").mkdir()
    write(tmp_path, "compute_environment: LOCAL_MACHINE\n", "accelerate/ddp.yaml")

    run_cli(["recipes", "list", "--dir", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].endswith("good.yaml\ttoy\ttoy_sft -> toy_rm")

    run_cli(["recipes", "validate", str(good)])
    assert capsys.readouterr().out.strip() == f"ok {good}"
    with pytest.raises(RecipeError, match="1 of 2 recipe"):
        run_cli(["recipes", "validate", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    assert "bad.yaml:9: unknown key 'margn'" in out and "ok " in out

    run_cli(["recipes", "schema"])
    out = capsys.readouterr().out
    assert "## Stage `toy_sft` (ToySFT)" in out and "- `learning_rate`: `float`, default `2e-05`." in out


def test_register_stage_rejects_duplicates_and_non_stages(toy_stages):
    with pytest.raises(TypeError, match="already registered"):
        register_stage("toy_sft", ToyRM, run=print, data_kind=None)
    with pytest.raises(TypeError, match="not a StageConfig subclass"):
        register_stage("plain", dict, run=print, data_kind=None)


def test_recipe_round_trips_through_yaml_dump(toy_stages):
    recipe = from_dict(Recipe, yaml.safe_load(yaml.safe_dump(base())))
    assert dataclasses.asdict(recipe)["stages"][1]["type"] == "toy_rm"
