"""Data mixtures and prompt-disjoint splits.

The Llama 2 reward models were trained on mixtures, not on one dataset: the helpfulness RM on all
helpfulness data plus an equal amount drawn from the rest, the safety RM on safety data mixed
90/10 with helpfulness data. A mixture here is a table of named sources, each taking either
`count` rows, a `fraction` of its rows, or a `ratio` of the final mixture. Ratios need a total:
given explicitly, or fixed by an `anchor` source that contributes all its rows at its ratio.
`cap: true` takes all of a source's rows when it has fewer than its share (instead of an error).

    helpfulness RM: {helpful: {ratio: 0.5, anchor: true}, safety: {ratio: 0.25}, other: {ratio: 0.25}}
    safety RM:      {safety: {ratio: 0.9, anchor: true}, helpful: {ratio: 0.1}}

The presets (PAPER_MIXTURES) name record categories, and their `rest` is every category the
preset does not name, drawn uniformly from the union: the paper's helpfulness RM takes "equal
parts of the remaining data uniformly sampled from Meta Safety and from the open-source datasets",
so safety's share of that half follows how much safety data there is next to the other data.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from alignment.errors import PaddockError

PAPER_MIXTURES = {
    "llama2_helpfulness_rm": {
        "helpfulness": {"ratio": 0.5, "anchor": True},
        "rest": {"ratio": 0.5, "cap": True},
    },
    "llama2_safety_rm": {"safety": {"ratio": 0.9, "anchor": True}, "rest": {"ratio": 0.1, "cap": True}},
}
REST = "rest"  # in a preset: every category the preset does not name
KEYS = {"count", "fraction", "ratio", "anchor", "replace", "cap"}


@dataclass
class MixtureReport:
    requested: dict[str, int]
    used: dict[str, int]
    available: dict[str, int]

    def to_dict(self) -> dict:
        return {"requested": self.requested, "used": self.used, "available": self.available}


def _wanted(spec: Mapping[str, Mapping], sizes: Mapping[str, int], total: int | None) -> dict[str, int]:
    anchors = [name for name, s in spec.items() if s.get("anchor")]
    if len(anchors) > 1:
        raise PaddockError(f"mixture: at most one anchor source, got {', '.join(anchors)}")
    if any("ratio" in s for s in spec.values()) and total is None:
        if not anchors:
            raise PaddockError("mixture: ratios need a `total` or one source marked `anchor: true`")
        anchor = anchors[0]
        total = round(sizes[anchor] / spec[anchor]["ratio"])
    wanted = {}
    for name, s in spec.items():
        given = [k for k in ("count", "fraction", "ratio") if k in s]
        if len(given) != 1:
            raise PaddockError(f"mixture source {name!r}: give exactly one of count, fraction, ratio")
        if "count" in s:
            wanted[name] = int(s["count"])
        elif "fraction" in s:
            wanted[name] = round(float(s["fraction"]) * sizes[name])
        else:
            wanted[name] = sizes[name] if s.get("anchor") else round(float(s["ratio"]) * total)
    return wanted


def preset_sources(rows: Sequence, preset: Mapping[str, Mapping], category_of: Callable) -> dict[str, list]:
    """Rows grouped for a preset: each category it names gets that category's rows, `rest` the rows
    of every category it does not name (in their given order)."""
    return {
        key: [r for r in rows if (category_of(r) not in preset if key == REST else category_of(r) == key)]
        for key in preset
    }


def build_mixture(
    sources: Mapping[str, Sequence], spec: Mapping[str, Mapping], seed: int = 0, total: int | None = None
) -> tuple[list, MixtureReport]:
    """Draw from each named source as the spec says; shuffled, seeded. A source asked for more rows
    than it has is an error unless it sets `replace: true` (sampling with replacement)."""
    unknown = set(spec) - set(sources)
    if unknown:
        raise PaddockError(f"mixture names unknown source(s): {', '.join(sorted(unknown))}")
    for name, s in spec.items():
        bad = set(s) - KEYS
        if bad:
            raise PaddockError(f"mixture source {name!r}: unknown key(s) {', '.join(sorted(bad))}")
    sizes = {name: len(sources[name]) for name in spec}
    wanted = _wanted(spec, sizes, total)
    rng = random.Random(seed)
    mixed, used = [], {}
    for name in sorted(spec):  # sorted: the draw must not depend on the recipe's key order
        rows, n = list(sources[name]), wanted[name]
        if spec[name].get("cap"):
            n = min(n, len(rows))
        if n > len(rows) and not spec[name].get("replace"):
            raise PaddockError(
                f"mixture source {name!r}: {n} rows wanted, {len(rows)} available "
                "(set replace: true to resample)"
            )
        picked = rng.sample(rows, n) if n <= len(rows) else [rng.choice(rows) for _ in range(n)]
        mixed.extend(picked)
        used[name] = len(picked)
    rng.shuffle(mixed)
    return mixed, MixtureReport(requested=wanted, used=used, available=sizes)


def prompt_key(prompt) -> str:
    """A stable identity for a prompt (a string or a list of messages), whitespace-normalised."""
    if isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    canon = [(m.get("role"), " ".join(str(m.get("content", "")).split())) for m in prompt]
    return json.dumps(canon, ensure_ascii=False)


def split_by_prompt(
    rows: Sequence, test_fraction: float, seed: int = 0, prompt_of: Callable = lambda row: row.prompt
) -> tuple[list, list]:
    """Train/test split in which no prompt appears on both sides: rows are grouped by prompt and
    whole groups go to one side, chosen by a seeded hash so the split is stable as data grows."""
    if not 0 <= test_fraction < 1:
        raise PaddockError(f"test_fraction must be in [0, 1), got {test_fraction}")
    train, test = [], []
    for row in rows:
        digest = hashlib.sha256(f"{seed}:{prompt_key(prompt_of(row))}".encode()).digest()
        bucket = int.from_bytes(digest[:8], "big") / 2**64
        (test if bucket < test_fraction else train).append(row)
    return train, test
