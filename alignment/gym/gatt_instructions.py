"""Ghost Attention instructions that a program can check, turn by turn.

Why: Llama 2's Ghost Attention (§3.3) teaches a model to keep a system instruction for a whole
dialogue ("act as Napoleon", "speak French", hobbies, combinations, half the time shortened to
"Figure: Napoleon"). Whether a model still follows it at turn 20 is only measurable if adherence
can be checked mechanically, so every instruction here is a list of checks that
`graders.check_instruction` evaluates on each assistant turn:

    all_caps / all_lowercase     the letters' case             ("Style: ALL CAPS")
    ends_with {text}             a fixed sign-off              ("Sign-off: Cheers!")
    signature {name}             "— Name" at the end: a figure ("Figure: Napoleon")
    starts_with {text}           a fixed opening               ("Opening: Ahoy!")
    max_words {n}                length                        ("Length: at most 25 words")
    bullets                      every line starts with "- "   ("Format: bullet points")
    language {fr|es|de}          more marker words of that language than of any other
    mentions {word}              a hobby named in every answer ("Hobby: jazz")

Combinations take two checks from different slots (case, end, start, length, layout, language,
topic), never "starts_with" with "bullets". Some parameter values (and instructions built from
them) are held out for the test split, to measure generalisation to unseen instructions.
"""

from __future__ import annotations

import itertools
import random
import re

from alignment.gym.tasks import Task, clear_templates, render_clear, show

LANGUAGES = {"fr": "French", "es": "Spanish", "de": "German"}
ANSWER_IN = {
    "fr": "La réponse est {v}.",
    "es": "La respuesta es {v}.",
    "de": "Die Antwort ist {v}.",
    "en": "The answer is {v}.",
}
HOBBY_LINE = {
    "fr": "J'adore le {h} !",
    "es": "¡Y me encanta el {h}!",
    "de": "Und ich liebe {h}!",
    "en": "Speaking of which, I love {h}.",
}
HOBBIES = ["jazz", "yoga", "golf", "origami", "sudoku", "judo"]
FIGURES = ["Napoleon", "Cleopatra", "Shakespeare", "Ada Lovelace", "Marie Curie", "Confucius"]
SIGN_OFFS = ["Cheers!", "Best wishes.", "Over and out.", "Stay curious!"]
OPENINGS = ["Ahoy!", "Greetings!", "Well then,"]
MAX_WORDS = [15, 25, 40]
HELD_OUT = {"judo", "Confucius", "Stay curious!", "Well then,", "de", 25}  # test-only parameter values

SLOT = {
    "all_caps": "case",
    "all_lowercase": "case",
    "ends_with": "end",
    "signature": "end",
    "starts_with": "start",
    "max_words": "length",
    "bullets": "layout",
    "language": "language",
    "mentions": "topic",
}


def _single(check: dict) -> tuple[str, str]:
    """(full text, short form) of one check."""
    kind = check["kind"]
    if kind == "all_caps":
        return "Answer in all capital letters for the rest of this conversation.", "Style: ALL CAPS"
    if kind == "all_lowercase":
        return "Write every answer in lowercase letters only.", "Style: lowercase"
    if kind == "ends_with":
        return f"End every answer with the sign-off '{check['text']}'.", f"Sign-off: {check['text']}"
    if kind == "signature":
        name = check["name"]
        return f"Always act as {name}, and sign every answer '— {name}'.", f"Figure: {name}"
    if kind == "starts_with":
        return f"Begin every answer with '{check['text']}'.", f"Opening: {check['text']}"
    if kind == "max_words":
        return f"Keep every answer to at most {check['n']} words.", f"Length: at most {check['n']} words"
    if kind == "bullets":
        return (
            "Format every answer as a bulleted list, one point per line starting with '- '.",
            "Format: bullets",
        )
    if kind == "language":
        name = LANGUAGES[check["language"]]
        return f"Always respond in {name}, whatever language I write in.", f"Language: {name}"
    return f"You love {check['word']}: mention {check['word']} in every answer.", f"Hobby: {check['word']}"


def _held_out(check: dict) -> bool:
    return any(v in HELD_OUT for k, v in check.items() if k != "kind")


def single_checks() -> list[dict]:
    return (
        [{"kind": "all_caps"}, {"kind": "all_lowercase"}, {"kind": "bullets"}]
        + [{"kind": "ends_with", "text": t} for t in SIGN_OFFS]
        + [{"kind": "signature", "name": n} for n in FIGURES]
        + [{"kind": "starts_with", "text": t} for t in OPENINGS]
        + [{"kind": "max_words", "n": n} for n in MAX_WORDS]
        + [{"kind": "language", "language": code} for code in LANGUAGES]
        + [{"kind": "mentions", "word": h} for h in HOBBIES]
    )


def build_instructions(rng: random.Random, n_combos: int = 60, test_share: float = 0.15) -> list[dict]:
    """All single-check instructions and `n_combos` sampled two-check combinations, each with a split."""
    singles = single_checks()
    pairs = [
        (a, b)
        for a, b in itertools.combinations(singles, 2)
        if SLOT[a["kind"]] != SLOT[b["kind"]] and {a["kind"], b["kind"]} != {"starts_with", "bullets"}
    ]
    combos = rng.sample(pairs, n_combos)
    out = []
    for checks in [[c] for c in singles] + [list(p) for p in combos]:
        texts = [_single(c) for c in checks]
        held = any(_held_out(c) for c in checks) or (len(checks) > 1 and rng.random() < test_share)
        out.append(
            {
                "id": f"gatt/{len(out):03d}",
                "text": " ".join(t for t, _ in texts),
                "short": "\n".join(s for _, s in texts),  # one "Key: value" per line
                "checks": checks,
                "kinds": [c["kind"] for c in checks],
                "split": "test" if held else "train",
            }
        )
    return out


def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def compliant_answer(task: Task, instruction: dict, rng: random.Random) -> str:
    """A correct answer to `task` that follows every check of `instruction`."""
    checks = {c["kind"]: c for c in instruction["checks"]}
    lang = checks.get("language", {}).get("language", "en")
    if lang == "en":
        base = render_clear(task, task.answer, rng.choice(clear_templates(task)))
    else:
        base = ANSWER_IN[lang].format(v=show(task, task.answer))
    parts = _sentences(base)
    if "mentions" in checks:
        parts.append(HOBBY_LINE[lang].format(h=checks["mentions"]["word"]))
    if "starts_with" in checks:
        parts.insert(0, checks["starts_with"]["text"])
    if "ends_with" in checks:
        parts.append(checks["ends_with"]["text"])
    if "signature" in checks:
        parts.append(f"— {checks['signature']['name']}")
    if "bullets" in checks:
        text = "\n".join(f"- {p}" for p in parts)
    else:
        text = parts[0]
        if len(parts) > 1:  # a signature goes on its own line
            text = " ".join(parts[:-1]) + ("\n" if "signature" in checks else " ") + parts[-1]
    if "all_caps" in checks:
        text = text.upper()
    if "all_lowercase" in checks:
        text = text.lower()
    return text
