"""Preference adapters, chosen by name: each turns one source row into canonical PreferencePairs.

`llama2` reads Paddock's own schema (`PreferencePair.to_dict()`), `trl` the TRL preference
formats; the public datasets' schemas live in `adapters_public`. `get_adapter("shp", thresholds=...)`
builds one with options and names a misspelt adapter or option instead of ignoring it.
"""

from __future__ import annotations

import difflib
import inspect
import os

from alignment.data import adapters_base as base
from alignment.data.adapters_base import Adapter
from alignment.data.adapters_public import (
    HHRLHFAdapter,
    PKUSafeRLHFAdapter,
    SHPAdapter,
    UltraFeedbackAdapter,
)
from alignment.data.records import PreferencePair, Rating
from alignment.data.sources import DataError
from alignment.errors import PaddockError

LLAMA2_FIELDS = (
    "prompt",
    "chosen",
    "rejected",
    "rating",
    "category",
    "margin",
    "source",
    "chosen_safe",
    "rejected_safe",
    "meta",
)


class Llama2Adapter(Adapter):
    """Paddock's canonical schema, as written by `PreferencePair.to_dict()`; prompt may be a plain string.

    Extra columns go to `meta`, except ones that look like a misspelt field ("ratng", "catgory"):
    those are errors, because dropping a safety category or a rating by typo would go unnoticed.
    Options `category` and `source` fill in rows that lack those fields.
    """

    name = "llama2"

    def __init__(self, *, category: str = "helpfulness", source: str = ""):
        super().__init__(source=source)
        self.category = base.category_option(category, self.name)

    def convert(self, row: dict) -> list[PreferencePair]:
        base.check_field_names(row, LLAMA2_FIELDS)
        prompt = base.prompt_messages(row.get("prompt"), "prompt")
        chosen, rejected = base.text(row, "chosen"), base.text(row, "rejected")
        base.check_responses(chosen, rejected, "chosen", "rejected")
        source = base.text(row, "source", optional=True)
        return [
            PreferencePair(
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                category=base.row_category(row, self.category),
                rating=_rating(row),
                margin=base.number(row, "margin", optional=True),
                source=self.source if source is None else source,
                chosen_safe=base.boolean(row, "chosen_safe"),
                rejected_safe=base.boolean(row, "rejected_safe"),
                meta=base.row_meta(row, LLAMA2_FIELDS),
            )
        ]


def _rating(row: dict) -> Rating | None:
    value = base.text(row, "rating", optional=True)
    if not value:  # null or "" both mean "no rating", as in PreferencePair.from_dict
        return None
    try:
        return Rating.parse(value)
    except ValueError as e:
        raise DataError(str(e), field="rating", kind="unknown_rating") from None


class TRLAdapter(Adapter):
    """TRL's preference datasets: standard (strings) or conversational (message lists).

    With a `prompt` column, `chosen`/`rejected` are the completions (a string, or one assistant
    message). Without one (TRL's "implicit prompt"), they are whole texts or conversations: the
    shared leading messages, or the shared leading text cut back to a word boundary, are the prompt.
    A `margin` column is passed through; other columns go to `meta`.
    """

    name = "trl"
    USED = ("prompt", "chosen", "rejected", "margin")

    def __init__(self, *, category: str = "helpfulness", source: str | None = None):
        super().__init__(source=source)
        self.category = base.category_option(category, self.name)

    def convert(self, row: dict) -> list[PreferencePair]:
        if row.get("prompt") is not None:
            prompt = base.prompt_messages(row["prompt"], "prompt")
            chosen, rejected = _completion(row, "chosen"), _completion(row, "rejected")
        else:
            prompt, chosen, rejected = _split_implicit(
                base.required(row, "chosen"), base.required(row, "rejected")
            )
        base.check_responses(chosen, rejected, "chosen", "rejected")
        return [
            PreferencePair(
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                category=self.category,
                margin=base.number(row, "margin", optional=True),
                source=self.source,
                meta=base.extras(row, self.USED),
            )
        ]


def _completion(row: dict, field: str) -> str:
    before, reply = base.split_reply(row.get(field), field)
    if before:
        raise DataError(
            f"with a 'prompt' column, expected one assistant message, got {len(before) + 1} messages",
            field=field,
        )
    return reply


def _split_implicit(chosen, rejected) -> tuple[list, str, str]:
    if isinstance(chosen, str):
        if not isinstance(rejected, str):
            raise base.wrong_type("rejected", "a string, like 'chosen'", rejected)
        n = len(os.path.commonprefix([chosen, rejected]))
        cut = max((i for i in range(n) if chosen[i].isspace()), default=0)  # back off to a word boundary
        prompt = chosen[:cut].strip()
        if not prompt:
            raise DataError(
                "no 'prompt' column, and 'chosen' and 'rejected' share no leading text", field="chosen"
            )
        prompt_messages = base.check_prompt([{"role": "user", "content": prompt}], "chosen")
        return prompt_messages, chosen[cut:].lstrip(), rejected[cut:].lstrip()
    before_c, reply_c = base.split_reply(chosen, "chosen")
    if not isinstance(rejected, list):
        raise base.wrong_type("rejected", "a list of messages, like 'chosen'", rejected)
    before_r, reply_r = base.split_reply(rejected, "rejected")
    if before_c != before_r:
        raise DataError("must share every message but the last with 'chosen'", field="rejected")
    return base.check_prompt(before_c, "chosen"), reply_c, reply_r


ADAPTERS: dict[str, type[Adapter]] = {
    cls.name: cls
    for cls in (
        Llama2Adapter,
        TRLAdapter,
        HHRLHFAdapter,
        PKUSafeRLHFAdapter,
        UltraFeedbackAdapter,
        SHPAdapter,
    )
}


def get_adapter(name: str, **options) -> Adapter:
    """The adapter registered as `name` ("hh_rlhf" and "HH-RLHF" also work), built with `options`."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in ADAPTERS:
        raise PaddockError(
            f"unknown adapter {name!r}{_did_you_mean(key, ADAPTERS)}; adapters: {', '.join(ADAPTERS)}"
        )
    cls = ADAPTERS[key]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    for option in options:
        if option not in allowed:
            raise PaddockError(
                f"adapter {key!r} has no option {option!r}{_did_you_mean(option, allowed)}; "
                f"options: {', '.join(allowed)}"
            )
    return cls(**options)


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
