"""Preference adapters, chosen by name: each turns one source row into canonical PreferencePairs.

`llama2` reads Paddock's own schema (`PreferencePair.to_dict()`), `trl` the TRL preference
formats; the public datasets' schemas live in `adapters_public`. `get_adapter("shp", thresholds=...)`
builds one with options and names a misspelt adapter or option instead of ignoring it. Each
adapter class declares the fields it reads (`FIELDS`) and its options (`OPTIONS`), which is what
`paddock data adapters` prints.
"""

from __future__ import annotations

import difflib
import os

from alignment.data import adapters_base as base
from alignment.data.adapters_base import COMMON_OPTIONS, Adapter, Option
from alignment.data.adapters_public import (
    HHRLHFAdapter,
    PKUSafeRLHFAdapter,
    SHPAdapter,
    UltraFeedbackAdapter,
)
from alignment.data.records import Message, PreferencePair, Rating
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
# a format adapter cannot tell what its rows measure, so it keeps the record model's default
CATEGORY_OPTION = Option("helpfulness", "category of rows without one: helpfulness, safety or other")


class Llama2Adapter(Adapter):
    """Paddock's canonical schema, as written by `PreferencePair.to_dict()`; prompt may be a plain string.

    Extra columns go to `meta`, except ones that look like a misspelt field ("ratng", "catgory"):
    those are errors, because dropping a safety category or a rating by typo would go unnoticed.
    Options `category` and `source` fill in rows that lack those fields.
    """

    name = "llama2"
    FIELDS = LLAMA2_FIELDS
    OPTIONS = {
        "category": CATEGORY_OPTION,
        "source": Option("", "source of rows without one"),
        "ignore_extra_fields": COMMON_OPTIONS["ignore_extra_fields"],
    }

    def __init__(self, **options):
        super().__init__(**options)
        self.category = base.category_option(self.options["category"], self.name)

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
    message), or whole dialogues that repeat the prompt's turns before the answer (the "trl-style"
    HH-RLHF sets, whose `prompt` is the first user turn): the dialogue before the final assistant
    turn becomes the prompt. Without a `prompt` column (TRL's "implicit prompt"), they are whole
    texts or conversations: the shared leading messages, or the shared leading text cut back to a
    word boundary, are the prompt. A `margin` column is passed through; other columns go to `meta`.
    """

    name = "trl"
    FIELDS = ("prompt", "chosen", "rejected", "margin")
    OPTIONS = {"category": CATEGORY_OPTION, **COMMON_OPTIONS}

    def __init__(self, **options):
        super().__init__(**options)
        self.category = base.category_option(self.options["category"], self.name)

    def convert(self, row: dict) -> list[PreferencePair]:
        if row.get("prompt") is not None:
            prompt, chosen, rejected = _with_prompt(row)
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
                meta=base.extras(row, self.FIELDS),
            )
        ]


def _with_prompt(row: dict) -> tuple[list[Message], str, str]:
    """(prompt dialogue, chosen, rejected) when a `prompt` column is given: each response is a
    completion, or a whole dialogue whose turns before the answer start with the prompt's."""
    prompt = base.prompt_messages(row["prompt"], "prompt")
    contexts, replies = [], []
    for field in ("chosen", "rejected"):
        before, reply = base.split_reply(row.get(field), field)
        if before and not _starts_with(before, prompt):
            raise DataError("the turns before the answer do not start with the 'prompt' turns", field=field)
        contexts.append(before or prompt)
        replies.append(reply)
    if contexts[0] != contexts[1]:
        raise DataError("the turns before the answer differ from those of 'chosen'", field="rejected")
    return base.check_prompt(contexts[0], "chosen"), replies[0], replies[1]


def _starts_with(dialogue: list[Message], prompt: list[Message]) -> bool:
    # the prompt column is often the first turn re-extracted, so surrounding whitespace may differ
    head = dialogue[: len(prompt)]
    return len(head) == len(prompt) and all(
        a["role"] == b["role"] and a["content"].strip() == b["content"].strip()
        for a, b in zip(head, prompt, strict=True)
    )


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
    """The adapter registered as `name` ("hh_rlhf" and "HH-RLHF" also work), built with `options`;
    an unknown option is a PaddockError naming the valid ones."""
    key = str(name).strip().lower().replace("_", "-")
    if key not in ADAPTERS:
        raise PaddockError(
            f"unknown adapter {name!r}{_did_you_mean(key, ADAPTERS)}; adapters: {', '.join(ADAPTERS)}"
        )
    return ADAPTERS[key](**options)


def _did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
