"""Load canonical records (preference pairs, SFT dialogues, RL prompts) with one error policy.

`on_error="raise"` stops at the first bad row with a DataError naming file, line and field.
`on_error="skip"` sets bad rows aside (each with its location, kind and reason) in the report and
counts them, so a few broken rows in a public dataset need not stop a run, yet none disappears
unnoticed. Nothing is ever written beside the user's data (their folder may be read-only, shared,
or under version control): the rejects go to a file only when `rejects_path` names one, as the
stages do with a file in their run directory. That file is written even when empty, so a stale one
from an earlier run cannot mislead.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignment.data import adapters_base as base
from alignment.data.adapters import Adapter, get_adapter
from alignment.data.records import Dialogue, RLPrompt
from alignment.data.sources import DataError, Row, iter_rows
from alignment.errors import PaddockError

log = logging.getLogger(__name__)


@dataclass
class LoadReport:
    """What happened to every row: read, turned into records, or rejected (counted by kind)."""

    source: str
    rows_read: int = 0
    produced: int = 0  # records made (one row may give several, e.g. PKU-SafeRLHF gives two pairs)
    rejected: Counter = field(default_factory=Counter)  # kind -> rows
    rejects: list[dict] = field(default_factory=list)  # each rejected row, where and why
    rejects_path: str | None = None  # where they were written; None when no rejects_path was given

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    def summary(self) -> str:
        text = f"{self.source}: read {self.rows_read} rows, made {self.produced} records"
        if self.rejected:
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(self.rejected.items()))
            text += f", rejected {self.rows_rejected} ({kinds})"
            text += f"; see {self.rejects_path}" if self.rejects_path else "; rejects not written to a file"
        return text


@dataclass
class LoadResult:
    records: list
    report: LoadReport

    @property
    def pairs(self) -> list:
        """The preference loader's name for `records`."""
        return self.records


def load_preferences(
    path: str | Path,
    adapter: str | Adapter = "llama2",
    *,
    on_error: str = "raise",
    rejects_path: str | Path | None = None,
    split: str | None = None,
    allow_hub: bool = False,
    hub_options: dict | None = None,
    **adapter_options,
) -> LoadResult:
    """PreferencePairs from `path` read through an adapter: a name in `adapters.ADAPTERS` built
    with `adapter_options`, or an Adapter instance (a user's own schema)."""
    if not isinstance(adapter, Adapter):
        adapter = get_adapter(adapter, **adapter_options)
    elif adapter_options:
        raise PaddockError(f"adapter options {sorted(adapter_options)} given with an adapter instance")
    return _load(path, adapter, on_error, rejects_path, split=split, allow_hub=allow_hub, hub=hub_options)


DIALOGUE_FIELDS = ("messages", "category", "source", "meta")
RL_PROMPT_FIELDS = ("prompt", "category", "source", "meta")


def load_dialogues(
    path: str | Path,
    *,
    on_error: str = "raise",
    rejects_path: str | Path | None = None,
    split: str | None = None,
    allow_hub: bool = False,
    hub_options: dict | None = None,
    category: str = "helpfulness",
    source: str = "",
) -> LoadResult:
    """SFT Dialogues from rows {"messages": [...], "category", "source", "meta"}.

    A dialogue must start (after an optional system message) with a user turn and end with a
    non-empty assistant turn: a trailing user turn would carry no loss and usually means truncation.
    """
    default = base.category_option(category, "dialogues")

    def convert(row: Any) -> list[Dialogue]:
        row = _object(row)
        base.check_field_names(row, DIALOGUE_FIELDS)
        messages = base.messages(row.get("messages"), "messages")
        if messages[-1]["role"] != "assistant":
            raise DataError(
                f"must end with an assistant turn, not {messages[-1]['role']!r}", field="messages"
            )
        turns = [m for m in messages if m["role"] != "system"]
        if turns[0]["role"] != "user":
            raise DataError("the first turn after any system message must be the user's", field="messages")
        base.check_prompt(messages[:-1], "messages")  # everything before the last answer is a valid prompt
        if not messages[-1]["content"].strip():
            raise DataError("the last assistant turn is empty", field="messages", kind="empty_response")
        category_ = base.row_category(row, default)
        return [Dialogue(messages, category_, _source(row, source), base.row_meta(row, DIALOGUE_FIELDS))]

    return _load(path, convert, on_error, rejects_path, split=split, allow_hub=allow_hub, hub=hub_options)


def load_rl_prompts(
    path: str | Path,
    *,
    on_error: str = "raise",
    rejects_path: str | Path | None = None,
    split: str | None = None,
    allow_hub: bool = False,
    hub_options: dict | None = None,
    category: str = "helpfulness",
    source: str = "",
) -> LoadResult:
    """RLPrompts from rows {"prompt": str or [...], "category", "source", "meta"}, ending in a user turn."""
    default = base.category_option(category, "rl prompts")

    def convert(row: Any) -> list[RLPrompt]:
        row = _object(row)
        base.check_field_names(row, RL_PROMPT_FIELDS)
        prompt = base.prompt_messages(row.get("prompt"), "prompt")
        category_ = base.row_category(row, default)
        return [RLPrompt(prompt, category_, _source(row, source), base.row_meta(row, RL_PROMPT_FIELDS))]

    return _load(path, convert, on_error, rejects_path, split=split, allow_hub=allow_hub, hub=hub_options)


def _object(row: Any) -> dict:
    if not isinstance(row, dict):
        raise DataError(f"row is {base.type_name(row)}, not an object", kind="not_an_object")
    return row


def _source(row: dict, default: str) -> str:
    value = base.text(row, "source", optional=True)
    return default if value is None else value


def _load(
    path: str | Path,
    convert: Callable[[Any], list],
    on_error: str,
    rejects_path: str | Path | None,
    *,
    split: str | None,
    allow_hub: bool,
    hub: dict | None,
) -> LoadResult:
    if on_error not in ("raise", "skip"):
        raise PaddockError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    report = LoadReport(source=str(path))
    records: list = []
    # a bad file as a whole (missing, unreadable, wrong layout) raises from iter_rows in either mode
    for row in iter_rows(path, split=split, allow_hub=allow_hub, hub_kwargs=hub):
        report.rows_read += 1
        try:
            if row.error is not None:
                raise row.error
            records.extend(convert(row.data))
        except DataError as e:
            located = e if e.file else e.at(row.file, row.unit, row.number)
            if on_error == "raise":
                raise located from None
            report.rejected[located.kind] += 1
            report.rejects.append(_reject(located, row))
    report.produced = len(records)
    if on_error == "skip":
        if rejects_path is not None:
            target = Path(rejects_path)
            if Path(path).exists() and target.resolve() == Path(path).resolve():
                raise PaddockError(f"rejects_path {str(target)!r} is the input file itself")
            _write_jsonl(target, report.rejects)
            report.rejects_path = str(target)
        if report.rejected:
            log.warning(report.summary())
    return LoadResult(records, report)


def _reject(error: DataError, row: Row) -> dict:
    out = {"file": row.file, row.unit: row.number, "field": error.field, "kind": error.kind}
    out.update(reason=error.reason, error=str(error))
    if row.error is not None:
        out["raw"] = row.raw
    else:
        out["row"] = row.data
    return out


# JSON leaves these unescaped, but str.splitlines() and many editors treat them as line breaks
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def _json_line(row: dict) -> str:
    text = json.dumps(row, ensure_ascii=False, default=str)
    for char, escape in _LINE_BREAKS.items():
        text = text.replace(char, escape)  # these only occur inside strings, where the escape is equivalent
    return text


def _write_jsonl(target: Path, rows: list[dict]) -> None:
    """Written whole and renamed into place, so a killed run never leaves half a rejects file."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(_json_line(row) + "\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


__all__ = [
    "DataError",
    "LoadReport",
    "LoadResult",
    "load_dialogues",
    "load_preferences",
    "load_rl_prompts",
]
