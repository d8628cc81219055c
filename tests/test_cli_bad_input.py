"""Bad input across the CLI: random recipe files, random overrides and random data
never give a traceback. Each failure is one `paddock: error: ...` line on stderr, a non-zero exit,
and nothing on disk: no run directory, no rejects file, no partial recipe copy.

Most cases call `alignment.cli.main` in-process (a subprocess costs about a second of imports);
a few subprocess runs check the real entry point, where an uncaught exception would print a
traceback that the in-process tests could miss if `main` were bypassed.

Random documents that happen to be valid recipes are not run (they would train a model); for those
the test only checks that `paddock recipes validate` accepts them.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from alignment import cli
from alignment.data.adapters import ADAPTERS
from alignment.recipes import RecipeError, load_recipe
from alignment.recipes.config import field_types
from alignment.recipes.schema import schema_classes

pytestmark = pytest.mark.faults

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = yaml.safe_load((REPO / "recipes/quickstart.yaml").read_text())
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Every field name of the schema, so random documents and overrides reach deep validation code
# instead of stopping at the first unknown top-level key.
FIELD_NAMES = sorted({name for cls in schema_classes() for name in field_types(cls)})
STAGE_NAMES = [s.get("name", s["type"]) for s in QUICKSTART["stages"]]


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`paddock ARGV` in-process: (exit code, stdout, stderr). argparse exits through SystemExit."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exit_:
            code = exit_.code if isinstance(exit_.code, int) else 1
    return code, out.getvalue(), err.getvalue()


def assert_one_line_error(code: int, stderr: str) -> None:
    assert code != 0, "bad input was accepted"
    assert code == 2, f"a refusal exits 2, got {code}"
    assert "Traceback" not in stderr, stderr
    lines = stderr.splitlines()
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith("paddock") and ": error: " in lines[0], lines[0]
    assert len(lines[0]) < 2000, "an error line should name the problem, not dump the input"


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@contextlib.contextmanager
def scratch_dir():
    """A fresh working directory: a relative `output_dir` in a random recipe lands here, so
    "nothing written" is checked by listing it."""
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        yield Path(tmp)


def is_valid(path: Path, overrides: list[str]) -> bool:
    try:
        load_recipe(path, overrides)
    except RecipeError:
        return False
    return True


def check_run_rejects(recipe_bytes: bytes, overrides: list[str] = ()) -> None:
    """`paddock run` on this file (plus overrides) fails with one line and writes nothing; a valid
    recipe is only validated."""
    with scratch_dir() as tmp:
        path = tmp / "recipe.yaml"
        path.write_bytes(recipe_bytes)
        if is_valid(path, list(overrides)):
            code, _, stderr = run_cli(["recipes", "validate", str(path)])
            assert code == 0, stderr
            return
        before = files_under(tmp)
        code, stdout, stderr = run_cli(["run", str(path), *overrides])
        assert_one_line_error(code, stderr)
        assert files_under(tmp) == before, "a rejected recipe wrote files"
        assert "results:" not in stdout


# --- random recipe documents ---------------------------------------------------------------------

yaml_chars = st.text(alphabet=st.sampled_from(list("ab:-[]{}&*!|>'\"%@`#,?=.~01 \t\n\\") + ["é", "\x00"]))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(["", "sft", "reward_model", "ppo", "llama2", "skip", "../x", "/", "1e-5", ".nan"]),
)
keys = st.one_of(st.sampled_from(FIELD_NAMES), st.text(max_size=6))
documents = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=12,
)


@SETTINGS
@given(text=yaml_chars)
def test_random_yaml_text_is_rejected_in_one_line(text):
    check_run_rejects(text.encode("utf-8"))


@SETTINGS
@given(blob=st.binary(max_size=40))
def test_random_bytes_are_rejected_in_one_line(blob):
    check_run_rejects(blob)


@SETTINGS
@given(doc=documents)
def test_random_documents_are_rejected_in_one_line(doc):
    check_run_rejects(yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"))


def paths_of(node, prefix=()):
    """Every (path, value) in a parsed document, containers included."""
    yield prefix, node
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths_of(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths_of(value, (*prefix, i))


QUICKSTART_PATHS = [path for path, _ in paths_of(QUICKSTART) if path]


@st.composite
def mutated_quickstart(draw):
    """The shipped quickstart recipe with one to three values replaced, deleted or added: random
    documents rarely get past the top level, these reach every stage's cross-field checks."""
    doc = copy.deepcopy(QUICKSTART)
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(QUICKSTART_PATHS))
        parent = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this path
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(documents)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent[path[-1]], dict):
            parent[path[-1]][draw(keys)] = draw(scalars)
    return doc


@SETTINGS
@given(doc=mutated_quickstart())
def test_mutated_recipes_are_rejected_in_one_line(doc):
    check_run_rejects(yaml.safe_dump(doc, allow_unicode=True).encode("utf-8"))


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=mutated_quickstart())
@example(doc=QUICKSTART)  # at least one recipe that plans, so the exit-0 branch is exercised
def test_a_dry_run_of_any_recipe_plans_or_refuses_in_one_line_and_writes_nothing(doc):
    """`paddock run --dry-run` reads every source of a recipe that validates (the quickstart's gym
    data, mutated): it prints a plan (exit 0) or one error line (exit 2), and writes nothing."""
    with scratch_dir() as tmp:
        path = tmp / "recipe.yaml"
        path.write_text(yaml.safe_dump(doc, allow_unicode=True))
        before = files_under(tmp)
        code, stdout, stderr = run_cli(["run", str(path), "--dry-run"])
        if code == 0:
            assert "nothing was written" in stdout and not stderr
        else:
            assert_one_line_error(code, stderr)
        assert files_under(tmp) == before


# --- random overrides ----------------------------------------------------------------------------

key_parts = st.one_of(
    st.sampled_from(FIELD_NAMES + STAGE_NAMES + ["0", "1", "-1", "99", "helpfulness", "sources"]),
    st.text(alphabet="abc_.0", max_size=4),
)
override_keys = st.lists(key_parts, min_size=1, max_size=5).map(".".join)
override_values = st.one_of(
    yaml_chars, documents.map(lambda d: yaml.safe_dump(d, default_flow_style=True).strip())
)
overrides = st.one_of(
    st.builds(lambda k, v: f"{k}={v}", override_keys, override_values),
    st.text(max_size=10),  # often no '=' at all
)


@SETTINGS
@given(items=st.lists(overrides, min_size=1, max_size=3))
def test_random_overrides_are_rejected_in_one_line(items):
    check_run_rejects((REPO / "recipes/quickstart.yaml").read_bytes(), items)


# --- recipes that validate but name data that cannot be read -------------------------------------


def no_stage_runs(*args, **kwargs):
    raise AssertionError("a stage ran although the pre-flight should have stopped the run")


def quickstart_with(change) -> bytes:
    doc = copy.deepcopy(QUICKSTART)
    change(doc)
    return yaml.safe_dump(doc).encode()


def first_source(doc) -> dict:
    return doc["stages"][1]["data"]["sources"][0]


@pytest.mark.parametrize(
    "change, expected",
    [
        (lambda d: first_source(d).update(path="no/such/file.jsonl"), "no such file"),
        (lambda d: first_source(d).update(path="recipe.yaml"), "unsupported file type"),
        (lambda d: first_source(d).update(adapter="hh_rlfh"), "did you mean 'hh-rlhf'"),
        (lambda d: first_source(d).update(options={"thresholds": 3}), "thresholds"),
        (lambda d: first_source(d).update(adapter="shp", options={"nope": 1}), "no option 'nope'"),
        (lambda d: d["stages"][0]["data"]["test_sources"][0].update(path="missing.jsonl"), "missing.jsonl"),
    ],
)
def test_unreadable_sources_are_refused_before_the_run_directory_exists(monkeypatch, change, expected):
    """A missing file or an unknown adapter is known before any compute; finding it when the stage
    starts would leave a run directory (and maybe finished earlier stages) behind a typo."""
    # no stage runs: if the check were missing, the run fails fast instead of training in-process
    monkeypatch.setattr("alignment.pipeline.run_stage", no_stage_runs)
    with scratch_dir() as tmp:
        (tmp / "recipe.yaml").write_bytes(quickstart_with(change))
        code, _, stderr = run_cli(["run", "recipe.yaml"])
        assert_one_line_error(code, stderr)
        assert expected in stderr
        assert files_under(tmp) == {"recipe.yaml"}


@pytest.mark.parametrize("stage_index", [0, 1, 5])  # dialogues (SFT), preference pairs (RM), RL prompts
def test_a_bad_row_deep_in_a_source_is_refused_before_anything_is_written(monkeypatch, stage_index):
    """The source exists and its first rows are fine; row 3 is broken. `paddock run` reads every
    row of the stages it will start before it creates the run directory, so the error names the
    file and line and nothing is left behind."""
    monkeypatch.setattr("alignment.pipeline.run_stage", no_stage_runs)
    stage = QUICKSTART["stages"][stage_index]
    good = (REPO / stage["data"]["sources"][0]["path"]).read_text().splitlines()[:2]
    with scratch_dir() as tmp:
        (tmp / "bad.jsonl").write_text("\n".join([*good, json.dumps({"oops": 1}), *good]) + "\n")
        doc = copy.deepcopy(QUICKSTART)
        doc["stages"][stage_index]["data"]["sources"][0]["path"] = str(tmp / "bad.jsonl")
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(doc))
        code, _, stderr = run_cli(["run", "recipe.yaml"])
        assert_one_line_error(code, stderr)
        assert "bad.jsonl line 3" in stderr, stderr
        assert files_under(tmp) == {"recipe.yaml", "bad.jsonl"}


# --- dataset adapters through `paddock data inspect` ---------------------------------------------

rows = st.one_of(
    documents, st.dictionaries(st.sampled_from(["prompt", "chosen", "rejected", "messages"]), documents)
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    adapter=st.sampled_from(sorted(ADAPTERS)),
    kind=st.sampled_from(["preferences", "dialogues", "rl_prompts"]),
    data=st.lists(rows, min_size=1, max_size=3),
)
def test_data_inspect_on_random_rows_fails_in_one_line(adapter, kind, data):
    """Every adapter and record kind: a bad row is one line naming file and line, exit non-zero;
    in the default `raise` mode no rejects file appears."""
    with scratch_dir() as tmp:
        path = tmp / "rows.jsonl"
        path.write_text("\n".join(json.dumps(row) for row in data) + "\n")
        argv = ["data", "inspect", str(path), "--adapter", adapter, "--kind", kind, "--tokenizer", "none"]
        code, _, stderr = run_cli(argv)
        if code == 0:
            return  # random rows that happen to be valid records
        if code == 1 and not stderr:
            raise AssertionError("rows rejected in raise mode without an error")
        assert_one_line_error(code, stderr)
        assert "rows.jsonl line " in stderr or "rows.jsonl: " in stderr
        assert files_under(tmp) == {"rows.jsonl"}


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["run"],
        ["run", "recipe.yaml", "--no-such-flag"],
        ["data", "inspect", "x.jsonl", "--kind", "pairs"],
        ["recipes"],
        ["frobnicate"],
    ],
)
def test_usage_errors_are_one_line(argv):
    with scratch_dir() as tmp:
        code, _, stderr = run_cli(argv)
        assert code == 2
        assert_one_line_error(code, stderr)
        assert "--help" in stderr  # the one line points to the usage it no longer prints
        assert files_under(tmp) == set()


# --- the real entry point ------------------------------------------------------------------------


def paddock(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run(
        [sys.executable, "-m", "alignment.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,  # a recipe wrongly accepted would start training the default model
    )


@pytest.mark.parametrize(
    "recipe, overrides",
    [
        ("run_name: x\nstages: [{type: sft, learning_rat: 1}]\n", []),  # typo in a stage key
        ("run_name: [unclosed\n", []),  # broken YAML
        (None, ["stages.sft.learning_rate=fast"]),  # wrong type through an override
        (None, ["stages.rm_helpful.data.sources.0.path=nowhere.jsonl"]),  # data missing
    ],
)
def test_subprocess_failures_are_one_line_and_write_nothing(tmp_path, recipe, overrides):
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe if recipe is not None else (REPO / "recipes/quickstart.yaml").read_text())
    result = paddock("run", str(path), *overrides, cwd=tmp_path)
    assert_one_line_error(result.returncode, result.stderr)
    assert result.returncode == 2
    assert files_under(tmp_path) == {"recipe.yaml"}
