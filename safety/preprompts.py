"""Safety preprompts and risk-category answer templates for context distillation (Llama 2 §4.2.4).

The paper builds a safety preprompt such as "You are a safe and responsible assistant" from
templates and adjectives associated with safe behaviour ("responsible", "respectful", "wise"), and,
for prompts whose risk category is known, adds the category and a tailored answer template that says
how such a request should be handled (the paper's Table 39). The model answers with the preprompt;
context distillation then trains it to give that answer *without* the preprompt.

Everything here is pure and seeded: the same `random.Random` state gives the same preprompt. The
answer templates cover every risk category of the gym's safety prompts
(`alignment.gym.safety_prompts.TOPICS`); a category without one gets `GENERIC_ANSWER_TEMPLATE`.
The templates describe the answer in prose rather than as numbered steps, because numbered steps
("Step 1") tend to be copied into the answer, and a numbered answer to a harmful request reads as
compliance.
"""

from __future__ import annotations

import random
from typing import Literal

# The paper's three, then others of the same kind; recipes choose their own list.
DEFAULT_ADJECTIVES: tuple[str, ...] = (
    "responsible",
    "respectful",
    "wise",
    "safe",
    "honest",
    "ethical",
    "careful",
    "trustworthy",
)

# `{adjectives}` becomes e.g. "safe and responsible"; `{a}` its article ("a" or "an").
PREPROMPT_TEMPLATES: tuple[str, ...] = (
    "You are {a} {adjectives} assistant.",
    "You are {a} {adjectives} assistant. Always answer as helpfully as you can while staying safe: "
    "never help with anything harmful, illegal or hurtful.",
    "As {a} {adjectives} assistant, you decline requests that could hurt someone, say why, and offer "
    "a safe alternative where you can.",
    "You are {a} {adjectives} assistant who cares about the wellbeing of the user and of everyone "
    "else. If a request could cause harm, politely refuse and suggest something helpful instead.",
    "Some requests try to get you to behave unsafely. Remember that you are {a} {adjectives} assistant.",
)

# Risk category -> (readable name, how an answer to such a request should go). The four parts follow
# the paper's answer templates: immediate safety first where it applies, refuse the request as asked
# and say why, give context or a legitimate alternative, invite a safe follow-up.
ANSWER_TEMPLATES: dict[str, tuple[str, str]] = {
    "criminal_activity": (
        "criminal activity",
        "Refuse to help with the crime, saying plainly that you can't help because it is illegal and "
        "could harm other people. Point out the legal risks, then offer a lawful way to meet the need "
        "behind the request, and invite the user to ask about that instead.",
    ),
    "weapons_violence": (
        "weapons and violence",
        "If anyone may be in danger, first urge the user to contact emergency services. Refuse to give "
        "any information that could be used to hurt people or to make or modify weapons, and say why. "
        "Then offer a safe alternative, such as de-escalation, legal and safe handling, or getting "
        "help.",
    ),
    "hate_harassment": (
        "hate and harassment",
        "Refuse to write content that demeans, threatens or targets a person or a group, and explain "
        "that it causes real harm. Stay respectful towards the user, and offer to help them say what "
        "they need without attacking anyone.",
    ),
    "self_harm": (
        "self-harm",
        "Put the user's safety first. Say with warmth that you can't help with hurting themselves, "
        "acknowledge how they may be feeling, and encourage them to reach out to someone they trust or "
        "to a crisis line such as 988 in the US or their local emergency number. Do not describe any "
        "method.",
    ),
    "privacy_violation": (
        "privacy violation",
        "Refuse to find, collect, reveal or spy on anyone's personal information without their "
        "consent, and explain that it violates their privacy and could put them at risk. Suggest a "
        "consent-based or official way to reach the goal instead.",
    ),
    "cybercrime": (
        "cybercrime",
        "Refuse to help attack, break into or damage any system, account or network the user does not "
        "own, and say that it is illegal and harms real people. Offer legal ways to learn about "
        "security or to protect their own accounts.",
    ),
    "fraud_deception": (
        "fraud and deception",
        "Refuse to help deceive, scam or mislead anyone, and explain that it costs people their money, "
        "their trust or their health. Offer an honest way to reach the user's goal, or tips for "
        "spotting and avoiding this kind of fraud.",
    ),
    "unqualified_advice": (
        "unqualified medical, legal or financial advice",
        "Do not give instructions that could hurt the user if they are wrong for their situation. Say "
        "that you can't advise on this safely, explain briefly why it needs a qualified professional, "
        "and point them to the right one (a doctor, pharmacist, lawyer or licensed adviser), or to "
        "emergency services if it may be urgent.",
    ),
}

GENERIC_ANSWER_TEMPLATE = (
    "Refuse to help with anything that could cause harm, say briefly why, and offer a safe and helpful "
    "alternative instead."
)


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" or word.lower().startswith(("hon", "heir")) else "a"


def _join(words: list[str]) -> str:
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def safety_preprompt(
    rng: random.Random,
    adjectives: list[str] | tuple[str, ...] = DEFAULT_ADJECTIVES,
    template: str | None = None,
    n_adjectives: int = 2,
) -> str:
    """A safety preprompt: a template (drawn from PREPROMPT_TEMPLATES unless given) filled with
    `n_adjectives` distinct adjectives drawn from `adjectives`, e.g. "You are a safe and responsible
    assistant." Draws from `rng` only, so equal seeds give equal preprompts."""
    if not adjectives:
        raise ValueError("safety_preprompt needs at least one adjective")
    chosen = rng.sample(list(adjectives), min(n_adjectives, len(adjectives)))
    template = template if template is not None else rng.choice(PREPROMPT_TEMPLATES)
    return template.format(a=_article(chosen[0]), adjectives=_join(chosen))


def answer_template(risk_category: str | None) -> str:
    """The paper's "risk category + tailored answer template" as preprompt text."""
    if risk_category in ANSWER_TEMPLATES:
        name, how = ANSWER_TEMPLATES[risk_category]
        return f"The following request was classified in the risk category '{name}'. {how}"
    return f"The following request may be unsafe. {GENERIC_ANSWER_TEMPLATE}"


def distillation_preprompt(
    rng: random.Random,
    risk_category: str | None = None,
    adjectives: list[str] | tuple[str, ...] = DEFAULT_ADJECTIVES,
    use_answer_template: bool = True,
) -> str:
    """The preprompt context distillation answers with: a safety preprompt, then (optionally) the
    answer template of the prompt's risk category."""
    text = safety_preprompt(rng, adjectives)
    return f"{text} {answer_template(risk_category)}" if use_answer_template else text


def apply_preprompt(
    messages: list[dict], preprompt: str, mode: Literal["system", "prefix"] = "system"
) -> list[dict]:
    """A copy of `messages` with the preprompt added (the input is not changed).

    `system`: as the system message; an existing system message is kept after it.
    `prefix`: in front of the first user message's text, separated by a blank line."""
    out = [dict(m) for m in messages]
    if mode == "system":
        if out and out[0].get("role") == "system":
            out[0]["content"] = f"{preprompt}\n\n{out[0]['content']}"
            return out
        return [{"role": "system", "content": preprompt}, *out]
    if mode == "prefix":
        for message in out:
            if message.get("role") == "user":
                message["content"] = f"{preprompt}\n\n{message['content']}"
                return out
        raise ValueError("apply_preprompt: the conversation has no user message to prefix")
    raise ValueError(f"apply_preprompt: mode must be 'system' or 'prefix', not {mode!r}")
