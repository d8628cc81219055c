"""Ghost Attention's data (Llama 2 §3.3), as pure functions: which instruction each dialogue gets,
how it is appended to every user turn for sampling, and how a sampled dialogue becomes a training
dialogue (the instruction only as the first turn's system message, loss on the last answer).

The stage that samples and fine-tunes is alignment/stages/gatt.py; adherence is measured by
alignment/gatt/evaluation.py; the gym's checkable instructions are alignment/gym/gatt_instructions.py.
"""

from __future__ import annotations

import json
import random

from alignment.gym.gatt_instructions import SLOT

SEPARATOR = "\n\n"  # between a user turn and the instruction appended to it


def with_instruction_on_every_turn(messages: list[dict], instruction_text: str) -> list[dict]:
    """The sampling form: `instruction_text` appended to every user turn (other messages as given)."""
    return [
        {**m, "content": m["content"] + SEPARATOR + instruction_text} if m["role"] == "user" else dict(m)
        for m in messages
    ]


def training_dialogue(sampled_messages: list[dict], instruction_text: str, system_text: str) -> list[dict]:
    """The training form of a sampled dialogue: `system_text` (the instruction, full or short) as the
    first turn's system message, the user turns without the appended `instruction_text`, the
    sampled assistant turns kept as they are."""
    suffix = SEPARATOR + instruction_text
    out = [{"role": "system", "content": system_text}]
    for m in sampled_messages:
        if m["role"] == "system":
            raise ValueError(
                "a sampled GAtt dialogue has no system message (the instruction is on every user turn)"
            )
        if m["role"] == "user":
            if not m["content"].endswith(suffix):
                raise ValueError(f"user turn does not end with the instruction: {m['content'][-80:]!r}")
            out.append({"role": "user", "content": m["content"][: -len(suffix)]})
        else:
            out.append(dict(m))
    return out


def training_examples(messages: list[dict], mode: str = "last") -> list[list[dict]]:
    """`last`: the dialogue itself; `every_prefix`: every prefix that ends in an assistant turn."""
    if mode == "last":
        return [messages]
    if mode != "every_prefix":
        raise ValueError(f"unknown examples mode {mode!r}")
    return [messages[: i + 1] for i, m in enumerate(messages) if m["role"] == "assistant"]


def select_examples(data: list[dict], mode: str = "last", gold_filter: bool = False) -> list[list[dict]]:
    """The training dialogues of sampled GAtt data (`training`, `followed` per turn): each dialogue's
    examples (`training_examples`), without those whose last answer broke the instruction when
    `gold_filter` is on."""
    out = []
    for d in data:
        for messages in training_examples(d["training"], mode):
            turn = sum(m["role"] == "assistant" for m in messages) - 1
            if not gold_filter or d["followed"][turn]:
                out.append(messages)
    return out


def compatible(a: dict, b: dict) -> bool:
    """Two checks that can hold together (the gym's rule): different slots, not an opening + bullets."""
    return SLOT[a["kind"]] != SLOT[b["kind"]] and {a["kind"], b["kind"]} != {"starts_with", "bullets"}


def _check_key(checks: list[dict]) -> str:
    return json.dumps(sorted(checks, key=lambda c: json.dumps(c, sort_keys=True)), sort_keys=True)


def combine(a: dict, b: dict) -> dict:
    """A two-check instruction from two single-check ones, worded as the gym words its combinations."""
    return {
        "id": f"{a['id']}+{b['id']}",
        "text": f"{a['text']} {b['text']}",
        "short": f"{a['short']}\n{b['short']}",
        "checks": a["checks"] + b["checks"],
        "kinds": [c["kind"] for c in a["checks"] + b["checks"]],
    }


def instruction_pools(rows: list[dict], split: str, combinations: str) -> tuple[list[dict], list[dict]]:
    """(single-check instructions, two-check ones) of `split`. Random combinations never rebuild an
    instruction another split holds (the gym holds some combinations out for test)."""
    singles = [r for r in rows if len(r["checks"]) == 1 and r.get("split", split) == split]
    if combinations == "gym":
        return singles, [r for r in rows if len(r["checks"]) > 1 and r.get("split", split) == split]
    elsewhere = {_check_key(r["checks"]) for r in rows if r.get("split", split) != split}
    combos = [
        combine(a, b)
        for i, a in enumerate(singles)
        for b in singles[i + 1 :]
        if compatible(a["checks"][0], b["checks"][0])
        and _check_key(a["checks"] + b["checks"]) not in elsewhere
    ]
    return singles, combos


def plan_dialogues(
    user_turn_lists: list[list[str]],
    singles: list[dict],
    combos: list[dict],
    combine_probability: float,
    short_form_probability: float,
    seed: int,
) -> list[dict]:
    """One instruction and system form per dialogue, drawn with a seeded generator."""
    if not singles:
        raise ValueError("no single-check instructions to draw from")
    rng = random.Random(seed)
    plan = []
    for index, users in enumerate(user_turn_lists):
        combined = bool(combos) and rng.random() < combine_probability
        instruction = rng.choice(combos if combined else singles)
        form = "short" if rng.random() < short_form_probability else "text"
        plan.append(
            {
                "index": index,
                "users": users,
                "instruction": {k: instruction[k] for k in ("id", "text", "short", "checks")},
                "system_form": form,
                "system": instruction[form],
            }
        )
    return plan


def pick(rewards: list[float] | None, followed: list[bool] | None) -> int:
    """Index of the kept sample among K: gold-compliant first (when given), then the highest reward
    (when given), then the earliest."""
    k = len(rewards) if rewards is not None else len(followed or [None])
    key = lambda j: (  # noqa: E731
        bool(followed[j]) if followed is not None else False,
        rewards[j] if rewards is not None else 0.0,
        -j,
    )
    return max(range(k), key=key)
