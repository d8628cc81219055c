"""The `trl` adapter on each TRL preference style, written by hand.

- standard: `prompt` string, `chosen`/`rejected` strings;
- conversational: `prompt` messages, `chosen`/`rejected` one assistant message each;
- whole dialogue: `chosen`/`rejected` full conversations that repeat the prompt's turns, with a
  `prompt` column (the HH-RLHF "trl-style" sets, whose prompt is the first user turn) or without.
"""

from __future__ import annotations

import pytest

from alignment.data.adapters import get_adapter
from alignment.data.records import PreferencePair
from alignment.data.sources import DataError
from tests.test_adapters import A, S, U


def pair(prompt, chosen, rejected):
    return PreferencePair(prompt, chosen, rejected, source="trl")


TRL = get_adapter("trl")

STYLES = {
    "standard": ({"prompt": "2 + 2 =", "chosen": " 4", "rejected": " 5"}, pair([U("2 + 2 =")], " 4", " 5")),
    "conversational": (
        {
            "prompt": [S("Be brief."), U("Capital of Peru?")],
            "chosen": [A("Lima.")],
            "rejected": [A("Cusco.")],
        },
        pair([S("Be brief."), U("Capital of Peru?")], "Lima.", "Cusco."),
    ),
    "whole dialogue, prompt = first user turn": (
        {
            "prompt": "I want to bake bread.",
            "chosen": [
                U("I want to bake bread."),
                A("Do you have yeast?"),
                U("Yes."),
                A("Mix flour and water."),
            ],
            "rejected": [U("I want to bake bread."), A("Do you have yeast?"), U("Yes."), A("Buy some.")],
        },
        pair(
            [U("I want to bake bread."), A("Do you have yeast?"), U("Yes.")],
            "Mix flour and water.",
            "Buy some.",
        ),
    ),
    "whole dialogue, prompt = messages": (
        {
            "prompt": [S("Be brief."), U("Capital of Peru?")],
            "chosen": [S("Be brief."), U("Capital of Peru?"), A("Lima.")],
            "rejected": [S("Be brief."), U("Capital of Peru?"), A("Cusco.")],
        },
        pair([S("Be brief."), U("Capital of Peru?")], "Lima.", "Cusco."),
    ),
    "whole dialogue, prompt with other whitespace": (
        {
            "prompt": "  Name a colour.\n",
            "chosen": [U("Name a colour."), A("Red.")],
            "rejected": [U("Name a colour."), A("Car.")],
        },
        pair([U("Name a colour.")], "Red.", "Car."),
    ),
    "whole dialogue, no prompt column": (
        {
            "chosen": [U("Hi"), A("Hello!"), U("Joke?"), A("Knock knock.")],
            "rejected": [U("Hi"), A("Hello!"), U("Joke?"), A("No.")],
        },
        pair([U("Hi"), A("Hello!"), U("Joke?")], "Knock knock.", "No."),
    ),
    "one whole dialogue, one completion": (
        {"prompt": "Say hi.", "chosen": [U("Say hi."), A("Hi!")], "rejected": [A("Bye.")]},
        pair([U("Say hi.")], "Hi!", "Bye."),
    ),
}


@pytest.mark.parametrize("style", sorted(STYLES))
def test_each_trl_style(style):
    row, expected = STYLES[style]
    assert TRL(row) == [expected]


@pytest.mark.parametrize(
    "row, message",
    [
        (
            {"prompt": "q", "chosen": [U("another question"), A("a")], "rejected": [U("q"), A("b")]},
            "field 'chosen': the turns before the answer do not start with the 'prompt' turns",
        ),
        (
            {"prompt": "q", "chosen": [U("q"), A("a"), U("and?"), A("c")], "rejected": [U("q"), A("b")]},
            "field 'rejected': the turns before the answer differ from those of 'chosen'",
        ),
        (
            {"prompt": "q", "chosen": [U("q"), A("a"), A("b")], "rejected": [U("q"), A("a"), A("d")]},
            "field 'chosen': prompt must end with a user turn, not 'assistant'",
        ),
        (
            {"prompt": "q", "chosen": [U("q"), A("a")], "rejected": [U("q"), U("b")]},
            "field 'rejected': must end with an assistant message, not 'user'",
        ),
        (
            {"prompt": [U("q")], "chosen": [U("q"), A("same")], "rejected": [U("q"), A("same ")]},
            "field 'rejected': same text as 'chosen'",
        ),
    ],
)
def test_whole_dialogues_that_do_not_fit(row, message):
    with pytest.raises(DataError) as info:
        TRL(row)
    assert str(info.value) == message
