"""Recipes: YAML files that name a run's model and stages, validated strictly before any compute.

    recipe = load_recipe("recipes/llama2_chat.yaml", ["stages.sft.learning_rate=1e-5"])

The schema (`schema.py`) says what a recipe may contain, the loader (`config.py`) turns parsed YAML
into its dataclasses and rejects anything else, and `overrides.py` applies command-line changes.
Errors name the file, the line where it is known, the dotted path and the closest valid key.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import yaml

from alignment.recipes.config import RecipeError, from_dict, join
from alignment.recipes.overrides import RecipeLoader, apply_overrides, yaml_load
from alignment.recipes.schema import Recipe, StageConfig

__all__ = [
    "RECIPES_DIR",
    "Recipe",
    "RecipeError",
    "StageConfig",
    "apply_overrides",
    "find_recipes",
    "load_recipe",
    "validate_recipe",
]

# The repository's recipes/ (alignment/recipes/__init__.py -> repo root); a checkout or editable
# install has it, a wheel does not, and then ./recipes is used.
RECIPES_DIR = Path(__file__).resolve().parents[2] / "recipes"


def default_recipes_dir() -> Path:
    return RECIPES_DIR if RECIPES_DIR.is_dir() else Path("recipes")


def find_recipes(directory: str | Path | None = None) -> list[Path]:
    """Every recipe YAML under `directory` (default: the repository's recipes/), sorted; accelerate
    configs (recipes/accelerate/) are launcher settings, not recipes, and are left out."""
    root = Path(directory) if directory is not None else default_recipes_dir()
    files = [p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()]
    return sorted(p for p in files if "accelerate" not in p.relative_to(root).parts)


def read_yaml(path: str | Path) -> tuple[dict, str]:
    """The top-level mapping of a YAML file and its text; syntax errors name file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecipeError(f"{path}: no such recipe file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RecipeError(f"{path}: cannot read the recipe ({err})") from None
    try:
        raw = yaml_load(text)
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        column = f" (column {mark.column + 1})" if mark else ""
        raise RecipeError(f"{where}: invalid YAML: {err.problem or err.context}{column}") from None
    except yaml.reader.ReaderError as err:  # a control character YAML does not allow, e.g. NUL
        raise RecipeError(
            f"{path}: invalid YAML: character {chr(err.character)!r} is not allowed "
            f"(position {err.position + 1})"
        ) from None
    except yaml.YAMLError as err:
        raise RecipeError(f"{path}: invalid YAML: {str(err).splitlines()[0]}") from None
    if raw is None:
        raise RecipeError(f"{path}: the recipe is empty")
    if not isinstance(raw, dict):
        raise RecipeError(f"{path}: a recipe is a mapping of keys (run_name, model, stages, ...)")
    return raw, text


def line_numbers(text: str) -> dict[str, int]:
    """Dotted path -> 1-based line for every key and list item of a YAML document."""
    lines: dict[str, int] = {}

    def walk(node, path: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode):
                    lines[join(path, key.value)] = key.start_mark.line + 1
                    walk(value, join(path, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                lines[join(path, i)] = value.start_mark.line + 1
                walk(value, join(path, i))

    walk(yaml.compose(text, Loader=RecipeLoader), "")
    return lines


def line_of(where: str | None, lines: dict[str, int]) -> int | None:
    """The line of `where`, or of its nearest enclosing key (a missing key has no line of its own)."""
    while where:
        if where in lines:
            return lines[where]
        parent = re.sub(r"(\.[^.\[\]]*|\[\d+\]|^[^.\[\]]*)$", "", where)
        if parent == where:
            return None
        where = parent
    return None


def load_recipe(path: str | Path, overrides: Sequence[str] = ()) -> Recipe:
    """Read, override and validate a recipe; any problem is a RecipeError naming file and path."""
    raw, text = read_yaml(path)
    if overrides:
        try:
            raw = apply_overrides(raw, list(overrides))
        except RecipeError as err:
            raise RecipeError(f"{path}: {err}", err.where) from None
    try:
        return from_dict(Recipe, raw)
    except RecipeError as err:
        # With overrides applied the file's lines no longer describe the document being checked.
        line = None if overrides else line_of(err.where, line_numbers(text))
        where = f"{path}:{line}" if line else f"{path}"
        raise RecipeError(f"{where}: {err}", err.where) from None


def validate_recipe(path: str | Path) -> Recipe:
    """Check a recipe file as `paddock run` would before starting compute; returns the parsed recipe."""
    return load_recipe(path)
