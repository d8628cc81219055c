"""Field readers and checks shared by the preference adapters.

Each reader takes the source's own field name, so an error says `field 'response_0'` for a
PKU-SafeRLHF row and `field 'chosen'` for a TRL one: the user fixes the column they actually have.
Readers never coerce (a number stored as a string is a wrong type, not a number) because silent
coercion is how a mislabelled column ends up training a reward model.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alignment.data.records import Category, Message, PreferencePair, Rating
from alignment.data.sources import DataError
from alignment.errors import PaddockError

ROLES = ("system", "user", "assistant")
_JSON_TYPES = {type(None): "null", bool: "boolean", int: "integer", float: "number", str: "string"}


def type_name(value: Any) -> str:
    """The JSON name of a value's type, which is what a user looking at their file sees."""
    if isinstance(value, dict):
        return "object"
    if isinstance(value, (list, tuple)):
        return "list"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def wrong_type(field: str, expected: str, value: Any) -> DataError:
    return DataError(f"expected {expected}, got {type_name(value)}", field=field, kind="wrong_type")


def required(row: dict, field: str) -> Any:
    """The value of a field that must be present; null counts as missing (Parquet fills gaps with null)."""
    value = row.get(field)
    if value is None:
        raise DataError("missing", field=field, kind="missing_field")
    return value


def text(row: dict, field: str, *, optional: bool = False) -> str | None:
    value = row.get(field) if optional else required(row, field)
    if value is not None and not isinstance(value, str):
        raise wrong_type(field, "a string", value)
    return value


def number(row: dict, field: str, *, optional: bool = False) -> float | None:
    """A finite number as float; booleans are not numbers here even though Python thinks so."""
    value = row.get(field) if optional else required(row, field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise wrong_type(field, "a number", value)
    try:
        out = float(value)
    except OverflowError:
        out = math.inf
    if not math.isfinite(out):
        raise DataError(f"not a finite number ({value!r})", field=field, kind="invalid_value")
    return out


def boolean(row: dict, field: str) -> bool | None:
    """An optional true/false label, such as a per-response safety label."""
    value = row.get(field)
    if value is not None and not isinstance(value, bool):
        raise wrong_type(field, "true or false", value)
    return value


def choice(row: dict, field: str, choices: Sequence[int] = (0, 1)) -> int:
    """An integer id such as PKU-SafeRLHF's better_response_id, one of `choices`."""
    value = required(row, field)
    if isinstance(value, bool) or not isinstance(value, int):
        raise wrong_type(field, "an integer", value)
    if value not in choices:
        raise DataError(f"must be one of {list(choices)}, got {value}", field=field, kind="invalid_value")
    return value


def message(value: Any, field: str) -> Message:
    """A {"role", "content"} dict; other keys are dropped so records stay in the canonical shape."""
    if not isinstance(value, dict):
        raise wrong_type(field, 'a message {"role": ..., "content": ...}', value)
    role = value.get("role")
    if role is None:
        raise DataError("missing", field=f"{field}.role", kind="missing_field")
    if not isinstance(role, str):
        raise wrong_type(f"{field}.role", "a string", role)
    if role not in ROLES:
        raise DataError(f"unknown role {role!r}; use one of {', '.join(ROLES)}", field=f"{field}.role")
    content = value.get("content")
    if content is None:
        raise DataError("missing", field=f"{field}.content", kind="missing_field")
    if not isinstance(content, str):
        raise wrong_type(f"{field}.content", "a string", content)
    return {"role": role, "content": content}


def messages(value: Any, field: str) -> list[Message]:
    if not isinstance(value, list):
        raise wrong_type(field, "a list of messages", value)
    if not value:
        raise DataError("empty conversation", field=field, kind="invalid_value")
    return [message(m, f"{field}[{i}]") for i, m in enumerate(value)]


def check_prompt(prompt: list[Message], field: str) -> list[Message]:
    """A prompt is what the model answers: optional system message first, ending in a non-empty user turn."""
    if not prompt:
        raise DataError("no prompt: nothing before the response", field=field)
    for i, m in enumerate(prompt):
        if m["role"] == "system" and i > 0:
            raise DataError(f"system message at position {i}; only the first may be one", field=field)
    if prompt[-1]["role"] != "user":
        raise DataError(f"prompt must end with a user turn, not {prompt[-1]['role']!r}", field=field)
    if not prompt[-1]["content"].strip():
        raise DataError("the last user turn is empty", field=field)
    return prompt


def prompt_messages(value: Any, field: str) -> list[Message]:
    """A prompt given as a plain string (one user turn) or as a conversation."""
    if value is None:
        raise DataError("missing", field=field, kind="missing_field")
    if isinstance(value, str):
        return check_prompt([{"role": "user", "content": value}], field)
    return check_prompt(messages(value, field), field)


def split_reply(value: Any, field: str) -> tuple[list[Message], str]:
    """A response as a string, or a conversation ending in the assistant's reply: (messages before, reply)."""
    if value is None:
        raise DataError("missing", field=field, kind="missing_field")
    if isinstance(value, str):
        return [], value
    convo = messages(value, field)
    if convo[-1]["role"] != "assistant":
        raise DataError(f"must end with an assistant message, not {convo[-1]['role']!r}", field=field)
    return convo[:-1], convo[-1]["content"]


def check_responses(chosen: str, rejected: str, chosen_field: str, rejected_field: str) -> None:
    """Both answers present and different: a pair of equal answers teaches a reward model nothing."""
    for value, field in ((chosen, chosen_field), (rejected, rejected_field)):
        if not value.strip():
            raise DataError("empty response", field=field, kind="empty_response")
    if chosen.strip() == rejected.strip():
        raise DataError(f"same text as {chosen_field!r}", field=rejected_field, kind="identical_responses")


def rating_bucket(value: float, thresholds: tuple[float, float, float]) -> Rating:
    """Maps a quality gap (a score difference or ratio) onto the four Llama 2 buckets."""
    significantly, better, slightly = thresholds
    if value >= significantly:
        return Rating.SIGNIFICANTLY_BETTER
    if value >= better:
        return Rating.BETTER
    if value >= slightly:
        return Rating.SLIGHTLY_BETTER
    return Rating.NEGLIGIBLY_BETTER


def check_thresholds(thresholds: Any, adapter: str) -> tuple[float, float, float]:
    """Bucket thresholds are configuration, so a bad one is a PaddockError, not a DataError."""
    ok = (
        isinstance(thresholds, (list, tuple))
        and len(thresholds) == 3
        and all(
            isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) for t in thresholds
        )
        and thresholds[0] >= thresholds[1] >= thresholds[2]
    )
    if not ok:
        raise PaddockError(
            f"adapter {adapter!r}: thresholds must be three descending numbers "
            f"(significantly better, better, slightly better), got {thresholds!r}"
        )
    return tuple(float(t) for t in thresholds)


def category_option(value: Any, adapter: str) -> Category:
    try:
        return Category(value.strip().lower() if isinstance(value, str) else value)
    except ValueError:
        names = ", ".join(c.value for c in Category)
        raise PaddockError(f"adapter {adapter!r}: category must be one of {names}, got {value!r}") from None


def check_field_names(row: dict, fields: Sequence[str]) -> None:
    """Extra columns are allowed, but one that looks like a misspelt field ("ratng") is an error:
    dropping a rating or a safety category by typo would otherwise go unnoticed."""
    for key in row:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1, cutoff=0.8)
            if close:
                raise DataError(
                    f"unknown field; did you mean {close[0]!r}?", field=str(key), kind="unknown_field"
                )


def row_category(row: dict, default: Category) -> Category:
    value = text(row, "category", optional=True)
    if value is None:
        return default
    try:
        return Category(value.strip().lower())
    except ValueError:
        names = ", ".join(c.value for c in Category)
        raise DataError(f"unknown category {value!r}; use one of {names}", field="category") from None


def row_meta(row: dict, fields: Sequence[str]) -> dict:
    """The row's own `meta` object, plus any columns outside `fields` (the row's meta wins a clash)."""
    meta = row.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise wrong_type("meta", "an object", meta)
    return {**extras(row, fields), **(meta or {})}


def extras(row: dict, used: Sequence[str]) -> dict:
    """Columns an adapter does not interpret, kept in `meta` so ids and annotations survive."""
    return {k: v for k, v in row.items() if k not in used}


@dataclass(frozen=True)
class Option:
    """One adapter option: its default and what it does (`paddock data adapters` prints both)."""

    default: Any
    help: str


# Fields that set part of a PreferencePair (its rating, category, margin or safety labels) in some
# adapter. A row carrying one that the chosen adapter does not read would lose it without a word,
# so the adapter refuses the row unless `ignore_extra_fields` is set. Provenance columns (ids,
# domains, models) are not here: keeping those in `meta` loses nothing.
MEANINGFUL_FIELDS = (
    "rating",
    "category",
    "margin",
    "chosen_safe",
    "rejected_safe",
    "score_chosen",
    "score_rejected",
    "score_A",
    "score_B",
    "better_response_id",
    "safer_response_id",
    "is_response_0_safe",
    "is_response_1_safe",
    "response_0_severity_level",
    "response_1_severity_level",
    # read by no adapter, but a safety label or severity all the same
    "is_safe",
    "safe",
    "severity",
    "severity_level",
)

COMMON_OPTIONS = {
    "source": Option(None, "the records' `source`; null means the adapter's name"),
    "ignore_extra_fields": Option(
        False,
        "load rows that carry meaningful fields this adapter does not read (rating, category, "
        "safety labels, ...), keeping those only in `meta`",
    ),
}


class Adapter:
    """Turns one source row into PreferencePairs, raising DataError (never anything else) on bad rows.

    Subclasses set `FIELDS` (the columns they read) and `OPTIONS` (name -> Option, the one place an
    option's default and meaning are written), and implement `convert`. A row carrying a field from
    MEANINGFUL_FIELDS outside `FIELDS` is refused unless the option `ignore_extra_fields` is set.
    """

    name = ""
    FIELDS: tuple[str, ...] = ()
    OPTIONS: dict[str, Option] = COMMON_OPTIONS

    def __init__(self, **options):
        label = self.name or type(self).__name__
        for key in options:
            if key not in self.OPTIONS:
                close = difflib.get_close_matches(str(key), list(self.OPTIONS), n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise PaddockError(
                    f"adapter {label!r} has no option {key!r}{hint}; options: {', '.join(self.OPTIONS)}"
                )
        self.options = {key: option.default for key, option in self.OPTIONS.items()} | options
        source = self.options["source"]
        if source is not None and not isinstance(source, str):
            raise PaddockError(f"adapter {label!r}: source must be a string, got {source!r}")
        self.source = self.name if source is None else source
        self.ignore_extra_fields = flag_option(
            self.options["ignore_extra_fields"], "ignore_extra_fields", label
        )

    def __call__(self, row: Any) -> list[PreferencePair]:
        if not isinstance(row, dict):
            raise DataError(f"row is {type_name(row)}, not an object", kind="not_an_object")
        if not self.ignore_extra_fields:
            self.check_ignored_fields(row)
        return [validate_pair(p) for p in self.convert(row)]

    def convert(self, row: dict) -> list[PreferencePair]:
        raise NotImplementedError

    def check_ignored_fields(self, row: dict) -> None:
        ignored = [f for f in MEANINGFUL_FIELDS if row.get(f) is not None and f not in self.FIELDS]
        if ignored:
            them = "it" if len(ignored) == 1 else "them"
            raise DataError(
                f"row carries {', '.join(ignored)}, which adapter {self.name!r} ignores; "
                f"{_keeper(ignored, them)}, or set option ignore_extra_fields: true",
                kind="ignored_field",
            )


def _keeper(fields: list[str], them: str) -> str:
    """Which registered adapters read `fields`: the first that reads them all, else one per field."""
    from alignment.data.adapters import ADAPTERS  # the registry imports this module

    for name, cls in ADAPTERS.items():
        if all(f in cls.FIELDS for f in fields):
            return f"use adapter {name!r} to keep {them}"
    by_reader: dict[str | None, list[str]] = {}
    for f in fields:
        reader = next((name for name, cls in ADAPTERS.items() if f in cls.FIELDS), None)
        by_reader.setdefault(reader, []).append(f)
    parts = [f"adapter {r!r} reads {', '.join(fs)}" for r, fs in by_reader.items() if r is not None]
    if None in by_reader:
        parts.append(f"no adapter reads {', '.join(by_reader[None])} (see `paddock data adapters`)")
    return "; ".join(parts)


def flag_option(value: Any, option: str, adapter: str) -> bool:
    if not isinstance(value, bool):
        raise PaddockError(f"adapter {adapter!r}: {option} must be true or false, got {value!r}")
    return value


def validate_pair(pair: PreferencePair) -> PreferencePair:
    """The invariants every stage may rely on, checked once more on the finished record."""
    check_prompt(pair.prompt, "prompt")
    check_responses(pair.chosen, pair.rejected, "chosen", "rejected")
    if not isinstance(pair.category, Category):
        raise DataError(f"not a category: {pair.category!r}", field="category")
    if pair.rating is not None and not isinstance(pair.rating, Rating):
        raise DataError(f"not a rating: {pair.rating!r}", field="rating", kind="unknown_rating")
    return pair
