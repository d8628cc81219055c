"""Canonical records every adapter produces and every stage consumes (docs/design.md, Data flow).

Messages are plain dicts {"role": "system" | "user" | "assistant", "content": str}, the format
chat templates and TRL already use, so records serialise to JSONL without a schema of their own.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import Enum


class Rating(str, Enum):
    """How much better the chosen response is, in the four buckets of the Llama 2 paper."""

    SIGNIFICANTLY_BETTER = "significantly_better"
    BETTER = "better"
    SLIGHTLY_BETTER = "slightly_better"
    NEGLIGIBLY_BETTER = "negligibly_better"  # "negligibly better / unsure"

    @classmethod
    def parse(cls, value: str) -> Rating:
        """Accepts the canonical names and common spellings ("Significantly Better", "unsure")."""
        key = str(value).strip().lower().replace("-", "_").replace(" ", "_").replace("/", "_")
        key = RATING_ALIASES.get(key, key)
        try:
            return cls(key)
        except ValueError:
            names = ", ".join(r.value for r in cls)
            raise ValueError(f"unknown rating {value!r}; use one of {names}") from None


RATING_ALIASES = {
    "significantly": "significantly_better",
    "slightly": "slightly_better",
    "negligibly": "negligibly_better",
    "negligibly_better_unsure": "negligibly_better",
    "negligibly_better_or_unsure": "negligibly_better",
    "unsure": "negligibly_better",
}


class Category(str, Enum):
    HELPFULNESS = "helpfulness"
    SAFETY = "safety"
    # General preference data from neither annotation effort, as the paper's open-source sets
    # (Anthropic HH, SHP, Synthetic GPT-J, ...): the reward-model mixtures draw their "rest" from it.
    OTHER = "other"


Message = dict  # {"role": str, "content": str}


@dataclass
class PreferencePair:
    """One comparison: the same prompt (a conversation ending in a user turn) answered twice."""

    prompt: list[Message]
    chosen: str
    rejected: str
    category: Category = Category.HELPFULNESS
    rating: Rating | None = None
    margin: float | None = None  # an explicit margin from the source, used as is when present
    source: str = ""
    chosen_safe: bool | None = None  # per-response safety labels where the source has them
    rejected_safe: bool | None = None
    meta: dict = field(default_factory=dict)  # anything else the source carried (ids, severity, ...)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["category"] = self.category.value
        out["rating"] = self.rating.value if self.rating else None
        return out

    @classmethod
    def from_dict(cls, row: dict) -> PreferencePair:
        row = dict(row)
        row["category"] = Category(row.get("category") or "helpfulness")
        row["rating"] = Rating.parse(row["rating"]) if row.get("rating") else None
        return cls(**row)


@dataclass
class Dialogue:
    """An SFT example: a whole conversation; which assistant turns carry loss is the formatter's choice."""

    messages: list[Message]
    category: Category = Category.HELPFULNESS
    source: str = ""
    meta: dict = field(default_factory=dict)


@dataclass
class RLPrompt:
    """A prompt for rejection sampling or PPO, tagged so the reward combination knows safety prompts."""

    prompt: list[Message]
    category: Category = Category.HELPFULNESS
    source: str = ""
    meta: dict = field(default_factory=dict)  # e.g. risk category, gold answer for graders


def category_of(row) -> str:
    """A record's category as a plain string (enum or str; helpfulness when it has none)."""
    category = getattr(row, "category", "helpfulness")
    return getattr(category, "value", category)
