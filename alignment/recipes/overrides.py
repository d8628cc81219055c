"""Command-line overrides: `paddock run recipe.yaml stages.sft.learning_rate=1e-5 seed=3`.

Sweeps and quick experiments change one or two values of a recipe; copying the file for each run
makes the copies drift. An override is a dotted key and a YAML value, applied to the parsed recipe
before validation, so an overridden recipe is checked exactly like a written one. List items are
addressed by index (`stages.0`) or by name (`stages.sft`, `data.sources.helpful`), since names stay
right when stages are added. A key may be created only where the schema has a field, so a typo in
an override fails with the same "did you mean" as a typo in the file.

Values are parsed as YAML 1.1 (PyYAML) with one fix taken from YAML 1.2: `1e-5` is a float, not the
string "1e-5". Recipe files are read with the same loader.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import re
import typing
from pathlib import PurePath
from typing import Any

import yaml

from alignment.recipes.config import (
    RecipeError,
    at,
    closest,
    describe,
    field_types,
    is_mapping_type,
    join,
    strip_optional,
    union_members,
)

FLOAT = re.compile(
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)


class RecipeLoader(yaml.SafeLoader):
    """`yaml.SafeLoader` that also reads `1e-5` and `3E4` as floats, and rejects a key given twice in
    one mapping (PyYAML would silently keep the last)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` keys may be overridden by design
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            if isinstance(key, typing.Hashable):
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


RecipeLoader.add_implicit_resolver("tag:yaml.org,2002:float", FLOAT, list("-+0123456789."))


def yaml_load(text: str) -> Any:
    return yaml.load(text, Loader=RecipeLoader)  # a SafeLoader: no arbitrary objects


def apply_overrides(raw: dict, overrides: list[str], schema: type | None = None) -> dict:
    """A copy of `raw` with each `dotted.key=yaml-value` applied in order. `schema` (default: the
    Recipe dataclass) decides which missing keys may be created."""
    if schema is None:
        from alignment.recipes.schema import Recipe

        schema = Recipe
    result = copy.deepcopy(raw)
    for item in overrides:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise RecipeError(f"override {item!r}: expected KEY=VALUE, e.g. stages.sft.learning_rate=1e-5")
        try:
            value = yaml_load(text)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise RecipeError(f"override {item!r}: the value is not valid YAML ({problem})") from None
        try:
            assign(result, parts, value, schema)
        except RecipeError as err:
            raise RecipeError(f"override {item!r}: {err}", err.where) from None
    return result


def assign(root: dict, parts: list[str], value: Any, schema: Any) -> None:
    node, tp, path = root, schema, ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(node, list):
            index = list_index(node, part, path)
            if last:
                node[index] = value
                return
            tp = item_type(tp)
            key: str | int = index
        elif isinstance(node, dict):
            tp = child_type(tp, node, part, path)
            if last:
                node[part] = value
                return
            if node.get(part) is None:
                if tp is not None and not is_mapping_type(mapping_member(tp)):
                    raise RecipeError(f"{join(path, part)} is not a mapping in the recipe schema", path)
                node[part] = {}
            key = part
        else:
            raise RecipeError(f"{at(path)} is {describe(node)}, not a mapping or list", path)
        node, path = node[key], join(path, key)
    raise AssertionError("unreachable")


def mapping_member(tp: Any) -> Any:
    """The mapping-shaped member of a (possibly union) type, e.g. `dict[str, dict] | str | None`."""
    members = union_members(tp) or (tp,)
    return next((m for m in members if is_mapping_type(m)), strip_optional(tp))


def child_type(tp: Any, node: dict, key: str, path: str) -> Any:
    """Schema type of `node[key]`, or None where the schema does not say (passthrough dicts).
    Unknown keys of a dataclass are errors here, with the closest valid key."""
    if tp is None:
        return None
    tp = mapping_member(tp)
    if dataclasses.is_dataclass(tp):
        pick = getattr(tp, "config_subclass", None)
        if pick is not None:
            # An unknown stage type is left to validation, which names it with the full context.
            with contextlib.suppress(RecipeError):
                tp = pick(node, path)
        known = field_types(tp)
        if key not in known:
            raise RecipeError(f"unknown key {key!r} at {at(path)}{closest(key, known)}", join(path, key))
        return known[key][0]
    if typing.get_origin(tp) is dict:
        return typing.get_args(tp)[1]
    return None


def item_type(tp: Any) -> Any:
    tp = strip_optional(tp) if tp is not None else None
    if typing.get_origin(tp) is list:
        return typing.get_args(tp)[0]
    return None


def implicit_name(item: Any) -> str | None:
    """What a list item is called when addressed by name: its `name`, else a stage's `type`, else a
    source's file stem (the same defaults the schema applies)."""
    if not isinstance(item, dict):
        return None
    if isinstance(item.get("name"), str):
        return item["name"]
    if isinstance(item.get("type"), str):
        return item["type"]
    if isinstance(item.get("path"), str):
        return PurePath(item["path"].rstrip("/\\")).stem
    return None


def list_index(items: list, part: str, path: str) -> int:
    if re.fullmatch(r"-?[0-9]+", part):
        index = int(part)
        if not -len(items) <= index < len(items):
            raise RecipeError(f"{at(path)} has {len(items)} item(s); index {index} is out of range", path)
        return index % len(items)
    names = [implicit_name(item) for item in items]
    matches = [i for i, name in enumerate(names) if name == part]
    if len(matches) > 1:
        raise RecipeError(f"{at(path)}: {len(matches)} items are named {part!r}; use an index", path)
    if not matches:
        known = [n for n in names if n]
        hint = closest(part, known)
        raise RecipeError(
            f"{at(path)}: no item named {part!r}{hint}; names: {', '.join(known) or 'none'}", path
        )
    return matches[0]
