"""docs/data.md says what the adapters do: its tables list every adapter's fields and every
option with the default and meaning the adapter classes declare, so the page cannot drift."""

from __future__ import annotations

import re
from pathlib import Path

from alignment.data.adapters import ADAPTERS
from alignment.data.adapters_base import MEANINGFUL_FIELDS
from alignment.data.inspect import adapters_table, show_value

PAGE = (Path(__file__).resolve().parents[1] / "docs" / "data.md").read_text()


def test_the_fields_table_matches_the_adapters():
    table = PAGE.split("| adapter | reads |", 1)[1].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^\| `([a-z0-9-]+)` \| (`[^|]*`) \| [^|]* \|$", table, re.M))
    assert set(rows) == set(ADAPTERS)
    for name, cls in ADAPTERS.items():
        assert rows[name] == ", ".join(f"`{f}`" for f in cls.FIELDS), name


def test_the_options_table_matches_the_declared_options():
    rows = re.findall(r"^\| `([a-z0-9-]+)` \| `(\w+)` \| `([^`]*)` \| (.*) \|$", PAGE, re.M)
    documented = {(adapter, option): (default, meaning) for adapter, option, default, meaning in rows}
    declared = {
        (name, option): (show_value(entry["default"]), entry["help"])
        for name, table in adapters_table().items()
        for option, entry in table["options"].items()
    }
    assert documented == declared


def test_the_meaningful_fields_are_listed():
    section = PAGE.split("### Fields an adapter would drop", 1)[1].split("###", 1)[0]
    listed = re.findall(r"`(\w+)`", section.split("Without this", 1)[0])
    assert [f for f in listed if f in MEANINGFUL_FIELDS] == list(MEANINGFUL_FIELDS)
