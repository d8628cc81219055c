"""The reference docs say what the code does: each stage page lists every setting of its config
with the current default, the stage index matches the stage table, and every relative link in the
README and docs/ leads to a file (and heading) that exists."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from alignment.recipes.schema import StageConfig
from alignment.stages.registry import STAGE_TYPES

REPO = Path(__file__).resolve().parents[1]
STAGE_DOCS = REPO / "docs" / "stages"
ROW = re.compile(r"^\| `(?P<name>[a-z_0-9]+)` \| (?P<default>[^|]*) \| (?P<meaning>.*) \|$")


def settings_rows(page: Path) -> dict[str, tuple[str, str]]:
    """Rows of the first table of the page's `## Settings` section, the stage's own fields: name ->
    (default cell, meaning cell). Tables after it describe nested settings."""
    section = page.read_text().split("\n## Settings\n", 1)[1]
    table = section[section.index("\n|") :].split("\n\n", 1)[0]
    return {m["name"]: (m["default"].strip(), m["meaning"]) for m in map(ROW.match, table.splitlines()) if m}


def plain(text: str) -> str:
    """Markdown cell text as the help string reads: no code ticks, no final full stop."""
    return text.replace("`", "").rstrip(".")


def documented_default(f: dataclasses.Field) -> str | None:
    """The default cell a scalar or list field must show; None for nested settings (own defaults)."""
    value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    return None if dataclasses.is_dataclass(value) else f"`{json.dumps(value)}`"


@pytest.mark.parametrize("stage_type", sorted(STAGE_TYPES))
def test_each_stage_page_lists_its_settings_with_the_current_defaults(stage_type):
    config = STAGE_TYPES[stage_type].config
    common = {f.name for f in dataclasses.fields(StageConfig)}
    rows = settings_rows(STAGE_DOCS / f"{stage_type}.md")
    for f in dataclasses.fields(config):
        if f.name in common:
            continue
        assert f.name in rows, f"docs/stages/{stage_type}.md: setting `{f.name}` is not documented"
        default, meaning = rows[f.name]
        expected = documented_default(f)
        if expected is not None:
            assert default == expected, (
                f"docs/stages/{stage_type}.md: `{f.name}` default {default}, code {expected}"
            )
        assert plain(meaning).startswith(plain(f.metadata["help"])), (
            f"docs/stages/{stage_type}.md: `{f.name}`: help text differs from the code"
        )
    extra = set(rows) - {f.name for f in dataclasses.fields(config)}
    assert not extra, f"docs/stages/{stage_type}.md documents settings the config lacks: {sorted(extra)}"


def test_the_stage_index_matches_the_stage_table():
    index = (STAGE_DOCS / "README.md").read_text()
    rows = re.findall(r"^\| \[`(\w+)`\]\(\w+\.md\) \|.*\| (\w+) \| (yes|no) \|$", index, re.M)
    assert {name: (kind, writes) for name, kind, writes in rows} == {
        name: (stage.data_kind or "none", "yes" if stage.writes_model else "no")
        for name, stage in STAGE_TYPES.items()
    }


def markdown_files() -> list[Path]:
    return [REPO / "README.md", REPO / "benchmarks" / "RESULTS.md", *sorted((REPO / "docs").rglob("*.md"))]


def anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_every_relative_link_in_the_docs_resolves():
    broken = []
    for page in markdown_files():
        text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # code blocks hold no links
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            path, _, anchor = target.partition("#")
            resolved = (page.parent / path).resolve() if path else page
            if not resolved.exists():
                broken.append(f"{page.relative_to(REPO)}: {target}")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page.relative_to(REPO)}: {target} (no such heading)")
    assert not broken, "broken links:\n" + "\n".join(broken)
