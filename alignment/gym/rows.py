"""One row of each gym file: preference pairs, SFT and GAtt dialogues, RL and borderline prompts.

Why: `generator.py` decides how many rows of which kind go into which split; this module says
what one row is, so the label rules (which pairs of answer kinds make each rating bucket) sit
next to the code that applies them. Pairs are `PreferencePair.to_dict()`; dialogues are {"messages",
"category", "source", "meta"}; prompts are {"prompt", "category", "source", "meta"}.
"""

from __future__ import annotations

import random

from alignment.data.records import Category, PreferencePair, Rating
from alignment.gym import borderline, gatt_instructions, safety_prompts
from alignment.gym.graders import check_instruction, grade_helpfulness
from alignment.gym.tasks import Task, draw_task, follow_up, render, respond

SYSTEMS = [
    "You are a helpful assistant.",
    "You are a careful assistant who answers precisely.",
    "Answer the user's questions accurately and concisely.",
]
GREETINGS = [
    ("Hi there!", "Hello! How can I help you today?"),
    ("Hello!", "Hi! What can I do for you?"),
    ("Good morning!", "Good morning! How can I help?"),
]
THANKS = ("Thanks, that's all.", "You're welcome! Have a great day.")


def msg(role: str, content: str) -> dict:
    return {"role": role, "content": content}


def prompt_context(rng: random.Random, seen: set) -> tuple[list[dict], list[str]]:
    """Sometimes a system message or an earlier exchange before the final user turn."""
    r = rng.random()
    if r < 0.15:
        return [msg("system", rng.choice(SYSTEMS))], []
    if r < 0.30:
        task = draw_task(rng, seen)
        return [msg("user", task.question), msg("assistant", render(task, 3, rng)[0])], [task.key]
    return [], []


# ---- helpfulness pairs -------------------------------------------------------------------------


# rating -> (chosen kind, rejected kind) pair types, used in turn (see `tasks.respond`). The rating
# says how plain the difference is: an obvious failure, a content-level one, a subtle one, or none.
HELPFULNESS_PAIRS = {
    Rating.SIGNIFICANTLY_BETTER: [
        ("clear", "refusal"),
        ("clear", "deflection"),
        ("clear", "off_topic"),
        ("clear", "garbled"),
    ],
    Rating.BETTER: [("clear", "far_off"), ("clear", "buried")],
    Rating.SLIGHTLY_BETTER: [
        ("clear", "near_miss"),
        ("clear", "hedged"),
        ("clear", "near_miss"),
        ("clear", "preachy"),
    ],
    Rating.NEGLIGIBLY_BETTER: [("clear", "clear"), ("clear", "clear"), ("near_miss", "near_miss")],
}


def task_answers(
    task: Task, chosen_kind: str, rejected_kind: str, rng: random.Random
) -> tuple[str, str, str]:
    """Two different answers to a task and the rejected one's kind as written (an off-topic
    fallback of a garbled answer says so)."""
    written = {}

    def make(kind: str) -> str:
        text, written[text] = respond(task, kind, rng)
        return text

    chosen, rejected = two_answers(make, chosen_kind, rejected_kind, rng)
    return chosen, rejected, written[rejected]


def helpfulness_pair(rng: random.Random, seen: set, rating: Rating, index: int) -> dict:
    """Pair type `index` (cycled) of the rating's list; both answers differ in text."""
    task = draw_task(rng, seen)
    context, context_keys = prompt_context(rng, seen)
    kinds = HELPFULNESS_PAIRS[rating]
    chosen_kind, rejected_kind = kinds[index % len(kinds)]
    chosen, rejected, rejected_kind = task_answers(task, chosen_kind, rejected_kind, rng)
    meta = {
        **task.meta(),
        "chosen_kind": chosen_kind,
        "rejected_kind": rejected_kind,
        "context_keys": context_keys,
    }
    pair = PreferencePair(
        context + [msg("user", task.question)],
        chosen,
        rejected,
        Category.HELPFULNESS,
        rating,
        source=f"gym/{task.kind}",
        meta=meta,
    )
    return pair.to_dict()


# ---- other (open-source-style) pairs -------------------------------------------------------------

# Stand-ins for the paper's open-source preference sets (Table 6), which the reward-model mixtures
# draw their "rest" from next to the safety data: general, unrated pairs (the open-source sets carry
# no Likert rating, so they get no margin) whose rejected answer is a plain failure, as in the
# Synthetic GPT-J set (a human answer against a weak model's). Tasks are fresh ones, so no prompt of
# a test file appears here.
OTHER_REJECTED = ("off_topic", "garbled", "deflection", "far_off")


def other_pair(rng: random.Random, seen: set, index: int) -> dict:
    task = draw_task(rng, seen)
    chosen, rejected, rejected_kind = task_answers(
        task, "clear", OTHER_REJECTED[index % len(OTHER_REJECTED)], rng
    )
    pair = PreferencePair(
        [msg("user", task.question)],
        chosen,
        rejected,
        Category.OTHER,
        None,
        source=f"gym/other/{task.kind}",
        meta={**task.meta(), "chosen_kind": "clear", "rejected_kind": rejected_kind},
    )
    return pair.to_dict()


# ---- safety ------------------------------------------------------------------------------------

# rating -> (chosen kind, rejected kind) pair types on harmful prompts (see `safety_prompts`). As in
# Llama 2's safety data, a pair may hold one safe and one unsafe answer, two safe answers (the more
# helpful refusal wins) or two unsafe ones (the less compliant wins). The rating is how much safer
# and more helpful the chosen answer is. Significantly better: a refusal against plain compliance.
# Better: a refusal against a partial or disguised compliance, a redirecting refusal against a curt
# one, or a disguised compliance against an eager one. Slightly better: a curt refusal against a
# generic how-to, which complies but gives nothing away (the same texts rank the other way under a
# benign request, see BORDERLINE_PAIRS), an explained refusal against a curt one or against one that
# also redirects, or one step less of compliance. Negligibly better: two answers of one kind.
SAFETY_PAIRS = {
    Rating.SIGNIFICANTLY_BETTER: [
        ("refuse_redirect", "eager"),
        ("refuse_explain", "eager"),
        ("bare_refusal", "eager"),
    ],
    Rating.BETTER: [
        ("refuse_redirect", "hedged"),
        ("refuse_explain", "hedged"),
        ("refuse_redirect", "disguised"),
        ("refuse_explain", "disguised"),
        ("refuse_redirect", "bare_refusal"),
        ("disguised", "eager"),
    ],
    Rating.SLIGHTLY_BETTER: [
        ("bare_refusal", "generic"),
        ("refuse_redirect", "refuse_explain"),
        ("hedged", "eager"),
        ("bare_refusal", "generic"),
        ("refuse_explain", "bare_refusal"),
        ("disguised", "hedged"),
    ],
    Rating.NEGLIGIBLY_BETTER: [
        ("refuse_redirect", "refuse_redirect"),
        ("refuse_explain", "refuse_explain"),
        ("bare_refusal", "bare_refusal"),
        ("hedged", "hedged"),
        ("eager", "eager"),
        ("generic", "generic"),
    ],
}


def two_answers(make, chosen_kind: str, rejected_kind: str, rng: random.Random) -> tuple[str, str]:
    """Two different answers of the given kinds; for two of one kind the order is a coin flip, so
    the redraw that keeps them apart favours neither side."""
    chosen, rejected = make(chosen_kind), make(rejected_kind)
    while rejected == chosen:
        rejected = make(rejected_kind)
    if chosen_kind == rejected_kind and rng.random() < 0.5:
        chosen, rejected = rejected, chosen
    return chosen, rejected


def safety_pool(topics: list[dict], rng: random.Random) -> list[tuple[dict, str, str]]:
    pool = [(t, attack, text) for t in topics for attack, text in safety_prompts.prompts_for(t)]
    rng.shuffle(pool)
    return pool


def safety_meta(topic: dict, attack: str) -> dict:
    return {"risk_category": topic["risk_category"], "topic": topic["topic"], "attack": attack}


def safety_pair(
    rng: random.Random,
    drawn_context: tuple[list[dict], list[str]],
    entry: tuple,
    rating: Rating,
    combo: tuple[str, str],
) -> dict:
    """drawn_context: (messages before the request, their task keys), from `prompt_context`."""
    topic, attack, text = entry
    chosen_kind, rejected_kind = combo
    context, context_keys = drawn_context
    meta = {
        **safety_meta(topic, attack),
        "chosen_kind": chosen_kind,
        "rejected_kind": rejected_kind,
        "context_keys": context_keys,
    }
    chosen, rejected = two_answers(lambda kind: safety_prompts.answer(topic, kind, rng), *combo, rng)
    pair = PreferencePair(
        context + [msg("user", text)],
        chosen,
        rejected,
        Category.SAFETY,
        rating,
        source=f"gym/safety/{topic['risk_category']}",
        chosen_safe=chosen_kind in safety_prompts.SAFE_KINDS,
        rejected_safe=rejected_kind in safety_prompts.SAFE_KINDS,
        meta=meta,
    )
    return pair.to_dict()


# The benign-but-risky-sounding prompts of the safety pairs: helpful is right, refusing is wrong,
# and the more an answer looks like a good refusal, the harder the pair (see `borderline`). The
# slightly-better bucket is the harmful prompts' curt-refusal-against-generic pairs mirrored, in
# about equal numbers (a quarter of the pairs are borderline, a third of the harmful slightly-better
# pairs are these): which of the two texts wins is a coin flip to anything that reads only the
# answers. Both answers are near useless, hence the weak rating.
BORDERLINE_PAIRS = {
    Rating.SIGNIFICANTLY_BETTER: [("helpful", "bare_refusal"), ("helpful", "explained_refusal")],
    Rating.BETTER: [("helpful", "generic"), ("helpful", "cautious")],
    Rating.SLIGHTLY_BETTER: [("generic", "bare_refusal")],
    Rating.NEGLIGIBLY_BETTER: [("helpful", "helpful"), ("generic", "generic")],
}


def borderline_pair(rng: random.Random, item: dict, text: str, rating: Rating) -> dict:
    chosen_kind, rejected_kind = rng.choice(BORDERLINE_PAIRS[rating])
    meta = {
        "task": "borderline",
        "item": item["item"],
        "keywords": item["keywords"],
        "risk_category": "borderline",
        "chosen_kind": chosen_kind,
        "rejected_kind": rejected_kind,
    }
    chosen, rejected = two_answers(
        lambda kind: borderline.answer(item, kind, rng), chosen_kind, rejected_kind, rng
    )
    pair = PreferencePair(
        [msg("user", text)],
        chosen,
        rejected,
        Category.SAFETY,
        rating,
        source="gym/borderline",
        chosen_safe=True,
        rejected_safe=True,
        meta=meta,
    )
    return pair.to_dict()


def borderline_pool(items: list[dict]) -> list[tuple[dict, str]]:
    return [(item, text) for item in items for text in borderline.prompts_for(item)]


def borderline_prompt(item: dict, text: str) -> dict:
    meta = {
        "task": "borderline",
        "item": item["item"],
        "keywords": item["keywords"],
        "reference": item["reference"],
    }
    return rl_prompt([msg("user", text)], Category.HELPFULNESS, "gym/borderline", meta)


def rl_prompt(prompt: list[dict], category: Category, source: str, meta: dict) -> dict:
    return {"prompt": prompt, "category": category.value, "source": source, "meta": meta}


def dialogue(messages: list[dict], category: Category, source: str, meta: dict) -> dict:
    return {"messages": messages, "category": category.value, "source": source, "meta": meta}


# ---- SFT dialogues -----------------------------------------------------------------------------


def sft_dialogue(rng: random.Random, seen: set, kind: str, pools: dict) -> dict:
    if kind == "safety":
        topic, attack, text = rng.choice(pools["safety"])
        messages, keys = ([], []) if rng.random() < 0.7 else prompt_context(rng, seen)
        messages += [
            msg("user", text),
            msg("assistant", safety_prompts.safe_answer(topic, "refuse_redirect", rng)),
        ]
        return dialogue(
            messages, Category.SAFETY, "gym/sft/safety", {**safety_meta(topic, attack), "context_keys": keys}
        )
    if kind == "borderline":
        item, text = rng.choice(pools["borderline"])
        return dialogue(
            [msg("user", text), msg("assistant", item["reference"])],
            Category.HELPFULNESS,
            "gym/sft/borderline",
            {"task": "borderline", "item": item["item"]},
        )
    messages, turns, meta = [], [], {}
    if kind == "instruction":
        instruction = rng.choice(pools["instructions"])
        messages.append(msg("system", instruction[rng.choice(["text", "short"])]))
        for _ in range(rng.randint(1, 3)):
            task, answer = gatt_turn(rng, seen, instruction)
            messages += [msg("user", task.question), msg("assistant", answer)]
            turns.append(task.meta())
        meta["instruction"] = instruction["id"]
    else:
        if rng.random() < 0.25:
            messages.append(msg("system", rng.choice(SYSTEMS)))
        n_tasks = 1 if kind == "task" else rng.randint(2, 3)
        if kind == "multi_task" and rng.random() < 0.3:
            messages += [
                msg(role, text)
                for role, text in zip(("user", "assistant"), rng.choice(GREETINGS), strict=True)
            ]
        task = None
        for _ in range(n_tasks):
            if task is not None and isinstance(task.answer, int) and rng.random() < 0.5:
                task = follow_up(task, rng, seen)
            else:
                task = draw_task(rng, seen)
            messages += [msg("user", task.question), msg("assistant", render(task, 3, rng)[0])]
            turns.append(task.meta())
        if kind == "multi_task" and rng.random() < 0.2:
            messages += [msg("user", THANKS[0]), msg("assistant", THANKS[1])]
    return dialogue(messages, Category.HELPFULNESS, f"gym/sft/{kind}", {**meta, "turns": turns})


SFT_MIX = ["task"] * 9 + ["multi_task"] * 4 + ["safety"] * 3 + ["borderline"] * 2 + ["instruction"] * 2


# ---- Ghost Attention ---------------------------------------------------------------------------


def gatt_turn(rng: random.Random, seen: set, instruction: dict) -> tuple[Task, str]:
    """A fresh task and a correct answer to it that follows the instruction."""
    for _ in range(200):
        task = draw_task(rng, seen)
        answer = gatt_instructions.compliant_answer(task, instruction, rng)
        if check_instruction(instruction, answer) and grade_helpfulness(task, answer):
            return task, answer
    raise RuntimeError(f"no compliant answer found for {instruction['id']}")


def gatt_dialogue(rng: random.Random, seen: set, instruction: dict, n_turns: int) -> dict:
    form = rng.choice(["text", "short"])
    messages, turns = [msg("system", instruction[form])], []
    for _ in range(n_turns):
        task, answer = gatt_turn(rng, seen, instruction)
        messages += [msg("user", task.question), msg("assistant", answer)]
        turns.append(task.meta())
    info = {k: instruction[k] for k in ("id", "text", "short", "checks")}
    meta = {
        "instruction": info,
        "system_form": "short" if form == "short" else "full",
        "n_turns": n_turns,
        "instruction_seen": instruction["split"] == "train",
        "turns": turns,
    }
    return dialogue(messages, Category.HELPFULNESS, "gym/gatt", meta)
