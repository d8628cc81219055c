"""A small strict loader from plain dicts (parsed YAML) into dataclasses.

Recipes must be rejected before any compute starts, with a message that says exactly what to fix:
an unknown key names the key, where it is and the closest valid key; a wrong type names the path and
the type expected. Validation libraries do this too, but the needs here are small (dataclasses,
lists, string-keyed dicts, optionals, literals and scalars) and one readable module is easier to keep
strict than another dependency to configure. The dataclasses stay plain, so stage code just reads
attributes.

Two optional hooks on a dataclass:
  - `config_subclass(data, path) -> type` (classmethod): pick the concrete class from the raw mapping
    before parsing it (the recipe's `stages` use it to dispatch on `type`);
  - `check_config(self, path)`: cross-field checks once the object is built; children are built and
    checked before their parents, so a parent may rely on its fields being valid.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from alignment.errors import PaddockError

NoneType = type(None)


class RecipeError(PaddockError):
    """A recipe (or override) a user must fix. `where` is the dotted path of the offending value."""

    def __init__(self, message: str, where: str | None = None):
        super().__init__(message)
        self.where = where


def setting(help: str, doc_default: str | None = None, **kwargs) -> Any:
    """`dataclasses.field` with the help text every recipe field must carry; `doc_default` replaces
    the default shown in the reference (e.g. "default: the stage's `type`") when the literal default
    ("" meaning "derived") would mislead."""
    metadata = {"help": help} if doc_default is None else {"help": help, "doc_default": doc_default}
    return dataclasses.field(metadata=metadata, **kwargs)


def join(path: str, key: str | int) -> str:
    """Extend a dotted path: `join("stages", 1)` is `stages[1]`, `join("stages[1]", "name")` is
    `stages[1].name`."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def at(path: str) -> str:
    return path or "the top level"


def closest(word: str, options) -> str:
    """` (did you mean 'x'?)` for the nearest option, or `` if nothing is near."""
    match = difflib.get_close_matches(word, sorted(options), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def describe(value: Any) -> str:
    """A value as the user wrote it, for error messages: `str 'abc'`, `bool true`, `list`."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"bool {str(value).lower()}"
    if isinstance(value, Mapping):
        return "mapping"
    if isinstance(value, list):
        return "list"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


@functools.cache
def field_types(cls: type) -> dict[str, tuple[Any, dataclasses.Field]]:
    """Every init field of a dataclass with its resolved type (annotations may be strings)."""
    hints = typing.get_type_hints(cls)
    return {f.name: (hints[f.name], f) for f in dataclasses.fields(cls) if f.init}


def is_required(f: dataclasses.Field) -> bool:
    return f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING


def union_members(tp: Any) -> tuple | None:
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return typing.get_args(tp)
    return None


def strip_optional(tp: Any) -> Any:
    """`X | None` -> `X`; anything else unchanged."""
    members = union_members(tp)
    if members and NoneType in members:
        rest = [m for m in members if m is not NoneType]
        if len(rest) == 1:
            return rest[0]
    return tp


def is_mapping_type(tp: Any) -> bool:
    return dataclasses.is_dataclass(tp) or tp is dict or typing.get_origin(tp) is dict


def type_name(tp: Any) -> str:
    """A type as a recipe author reads it: `int`, `list[str]`, `"fp32" | "bf16"`, `LoraConfig | None`."""
    if tp is Any:
        return "any"
    if tp is NoneType:
        return "null"
    if tp is dict:
        return "mapping"
    if isinstance(tp, type) and (dataclasses.is_dataclass(tp) or tp in (str, int, float, bool, list)):
        return tp.__name__
    members = union_members(tp)
    if members:
        return " | ".join(type_name(m) for m in members)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return " | ".join(f'"{a}"' if isinstance(a, str) else repr(a) for a in args)
    if origin is list:
        return f"list[{type_name(args[0])}]"
    if origin is dict:
        return f"dict[{type_name(args[0])}, {type_name(args[1])}]"
    return str(tp)


def accepts(tp: Any, value: Any) -> bool:
    """Whether `value` has the right shape for `tp` at the top level (contents not checked)."""
    if tp is Any:
        return True
    if value is None or tp is NoneType:
        return value is None and tp is NoneType
    members = union_members(tp)
    if members:
        return any(accepts(m, value) for m in members)
    origin = typing.get_origin(tp)
    if origin is Literal:
        return any(type(value) is type(a) and value == a for a in typing.get_args(tp))
    if is_mapping_type(tp):
        return isinstance(value, Mapping)
    if tp is list or origin is list:
        return isinstance(value, list)
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    raise TypeError(f"recipe loader: unsupported field type {tp!r}")


def convert(tp: Any, value: Any, path: str) -> Any:
    """Check `value` against `tp` and build it (dataclasses from mappings, floats from ints)."""
    members = union_members(tp) or (tp,)
    fitting = [m for m in members if accepts(m, value)]
    if not fitting:
        literals = [a for m in members if typing.get_origin(m) is Literal for a in typing.get_args(m)]
        if isinstance(value, str) and any(isinstance(a, str) for a in literals):
            hint = closest(value, [a for a in literals if isinstance(a, str)])
            raise RecipeError(f"{at(path)}: expected one of {type_name(tp)}, got {value!r}{hint}", path)
        raise RecipeError(f"{at(path)}: expected {type_name(tp)}, got {describe(value)}", path)
    tp = fitting[0]
    if value is None or tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        return [convert(args[0], item, join(path, i)) for i, item in enumerate(value)]
    if tp is dict or origin is dict:
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise RecipeError(f"{at(path)}: keys must be strings, got {describe(key)}", path)
            out[key] = convert(args[1], item, join(path, key)) if args else item
        return out
    if tp is float:
        return float(value)
    return value


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Build dataclass `cls` from a parsed-YAML mapping, strictly. `path` is where `data` sits in
    the whole document (for messages), e.g. `stages[1]`."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"{at(path)}: expected a mapping ({cls.__name__}), got {describe(data)}", path)
    pick = getattr(cls, "config_subclass", None)
    if pick is not None:
        cls = pick(data, path)
    known = field_types(cls)
    for key in data:
        if not isinstance(key, str):
            raise RecipeError(f"{at(path)}: keys must be strings, got {describe(key)}", path)
        if key not in known:
            raise RecipeError(f"unknown key {key!r} at {at(path)}{closest(key, known)}", join(path, key))
    missing = [name for name, (_, f) in known.items() if is_required(f) and name not in data]
    if missing:
        raise RecipeError(f"missing required key {missing[0]!r} at {at(path)}", path)
    values = {key: convert(known[key][0], value, join(path, key)) for key, value in data.items()}
    obj = cls(**values)
    check = getattr(obj, "check_config", None)
    if check is not None:
        check(path)
    return obj


def nested_dataclasses(cls: type) -> list[type]:
    """`cls` and every dataclass reachable through its field types, depth first, each once."""
    seen: list[type] = []

    def visit(tp: Any) -> None:
        if dataclasses.is_dataclass(tp) and isinstance(tp, type):
            if tp in seen:
                return
            seen.append(tp)
            for field_type, _ in field_types(tp).values():
                visit(field_type)
        else:
            for arg in typing.get_args(tp):
                visit(arg)

    visit(cls)
    return seen


def field_values(cls: type, obj) -> dict[str, Any]:
    """`obj`'s values of the dataclass `cls`'s fields: how a library's settings are taken from a stage
    config that inherits them, with no second list of names or defaults."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(cls)}


def check_range(value, path: str, low=None, high=None, high_open=False) -> None:
    """`low <= value <= high` (or `< high` when `high_open`); None bounds are unchecked."""
    if value != value:  # NaN compares false with every bound
        raise RecipeError(f"{path}: nan is not a number in range", path)
    too_low = low is not None and value < low
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        bounds = f"[{low if low is not None else '-inf'}, {high if high is not None else 'inf'}"
        bounds += ")" if high_open or high is None else "]"
        raise RecipeError(f"{path}: {value} is out of range {bounds}", path)
