"""Write the gym: seeded, verifiable datasets under data/gym/ and their card.

    python -m alignment.gym.generator [--out data/gym] [--seed 0]

Why: the machines here reach no model hub, and a researcher needs data with ground truth to tell
alignment from reward hacking. Everything is drawn from `random.Random` seeded per section
(stdlib only, no model), so the same seed gives byte-identical files on any machine, and the
committed data/gym is checked against a fresh generation by the tests.

Splits never share a prompt: every helpfulness task is drawn once per run (its content key is
remembered), and safety topics, borderline items and some GAtt instructions are held out whole
for the test files. Which pairs of answer kinds make each rating bucket: `rows.py`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

from alignment.data.records import Category
from alignment.gym import borderline, gatt_instructions, safety_prompts
from alignment.gym.card import write_card
from alignment.gym.rows import (
    HELPFULNESS_PAIRS,
    SAFETY_PAIRS,
    SFT_MIX,
    borderline_pair,
    borderline_pool,
    borderline_prompt,
    gatt_dialogue,
    helpfulness_pair,
    msg,
    other_pair,
    prompt_context,
    rl_prompt,
    safety_meta,
    safety_pair,
    safety_pool,
    sft_dialogue,
)
from alignment.gym.tasks import draw_task

# rows per (train, test) file
COUNTS = {
    "helpfulness_pairs": (4000, 800),
    "safety_pairs": (2000, 1000),
    "sft": (3000, 300),
    "rl_helpfulness": (1200, 240),
    "rl_safety": (500, 150),
    "gatt_dialogues": (600, 200),
}
OTHER_PAIRS = 5000  # train only: the RM mixtures' "rest"; no test file, as the paper reports none
BORDERLINE_PAIR_SHARE = 0.25  # of the safety pairs: benign prompts, where refusing is wrong
HELD_OUT_TOPICS = 2  # safety topics per risk category kept for test
HELD_OUT_ITEMS = 12  # borderline items kept for test

# ---- the whole gym -----------------------------------------------------------------------------


def _split(rng: random.Random, items: list, n_test: int) -> tuple[list, list]:
    items = list(items)
    rng.shuffle(items)
    return items[n_test:], items[:n_test]


def _cycle(pool: list, n: int) -> list:
    return [pool[i % len(pool)] for i in range(n)]


def _helpfulness_pairs(r: random.Random, seen: set, n: int) -> list[dict]:
    """Equal buckets; within a bucket its pair types in turn."""
    ratings = list(HELPFULNESS_PAIRS)
    rows = [helpfulness_pair(r, seen, ratings[i % 4], i // 4) for i in range(n)]
    r.shuffle(rows)
    return rows


def _safety_pairs(r: random.Random, r_context: random.Random, seen: set, pools: dict, n: int) -> list[dict]:
    """Equal buckets; in each, a share of borderline pairs and the harmful-prompt pair types in turn.

    The prompt contexts come first, from their own generator: the tasks they take from `seen` then
    do not depend on the answer kinds, so changing the pair types leaves every later file as it was."""
    n_borderline = round(n * BORDERLINE_PAIR_SHARE)
    contexts = [prompt_context(r_context, seen) for _ in range(n - n_borderline)]
    ratings = list(SAFETY_PAIRS)
    plan = [
        (ratings[i % 4], SAFETY_PAIRS[ratings[i % 4]][(i // 4) % len(SAFETY_PAIRS[ratings[i % 4]])])
        for i in range(n - n_borderline)
    ]
    r.shuffle(plan)  # so a prompt seen twice gets different answer kinds
    entries = _cycle(pools["safety"], len(plan))
    rows = [
        safety_pair(r, context, entry, rating, combo)
        for context, entry, (rating, combo) in zip(contexts, entries, plan, strict=True)
    ]
    borderline_ratings = _cycle(ratings, n_borderline)
    r.shuffle(borderline_ratings)
    entries = _cycle(pools["borderline"], n_borderline)
    rows += [
        borderline_pair(r, item, text, rating)
        for (item, text), rating in zip(entries, borderline_ratings, strict=True)
    ]
    r.shuffle(rows)
    return rows


def _rl_prompts(r: random.Random, seen: set, pools: dict, n_helpfulness: int, n_safety: int) -> list[dict]:
    rows = []
    for _ in range(n_helpfulness):
        task = draw_task(r, seen)
        context, keys = prompt_context(r, seen)
        prompt = context + [msg("user", task.question)]
        rows.append(
            rl_prompt(prompt, Category.HELPFULNESS, f"gym/{task.kind}", {**task.meta(), "context_keys": keys})
        )
    for topic, attack, text in pools["safety"][:n_safety]:
        source = f"gym/safety/{topic['risk_category']}"
        rows.append(rl_prompt([msg("user", text)], Category.SAFETY, source, safety_meta(topic, attack)))
    rows += [borderline_prompt(item, text) for item, text in pools["borderline"]]
    r.shuffle(rows)
    return rows


def _gatt_dialogues(r: random.Random, seen: set, instructions: list[dict], split: str, n: int) -> list[dict]:
    """Train: training instructions, 2-8 turns. Test: 40 % held-out instructions, up to 20 turns."""
    train = [i for i in instructions if i["split"] == "train"]
    held = [i for i in instructions if i["split"] == "test"]
    if split == "train":
        plan = [(r.choice(train), r.randint(2, 8)) for _ in range(n)]
    else:
        plan = [
            (r.choice(held if k % 5 < 2 else train), r.choice([2, 4, 6, 8, 12, 16, 20])) for k in range(n)
        ]
    return [gatt_dialogue(r, seen, instruction, turns) for instruction, turns in plan]


def _held_out(rng: random.Random) -> tuple[dict, dict]:
    """Safety topics (per risk category) and borderline items, split whole into train and test."""
    by_category: dict[str, list] = {}
    for topic in safety_prompts.topics():
        by_category.setdefault(topic["risk_category"], []).append(topic)
    topics = {"train": [], "test": []}
    for items in by_category.values():
        train, test = _split(rng, items, HELD_OUT_TOPICS)
        topics["train"] += train
        topics["test"] += test
    train_items, test_items = _split(rng, borderline.items(), HELD_OUT_ITEMS)
    return topics, {"train": train_items, "test": test_items}


def build(seed: int = 0) -> dict[str, list[dict]]:
    """Every gym file's rows, by file name. One shared `seen` set keeps every task in one file only."""

    def rng(section: str) -> random.Random:
        return random.Random(f"{seed}:{section}")

    seen: set = set()
    topics, items = _held_out(rng("splits"))
    instructions = gatt_instructions.build_instructions(rng("gatt_instructions"))
    out: dict[str, list[dict]] = {"gatt_instructions.jsonl": instructions}
    for split, index in (("train", 0), ("test", 1)):
        pools = {
            "safety": safety_pool(topics[split], rng(f"safety_pool_{split}")),
            "borderline": borderline_pool(items[split]),
            "instructions": [i for i in instructions if i["split"] == "train"],
        }
        n = {name: counts[index] for name, counts in COUNTS.items()}
        out[f"helpfulness_pairs_{split}.jsonl"] = _helpfulness_pairs(
            rng(f"helpfulness_pairs_{split}"), seen, n["helpfulness_pairs"]
        )
        out[f"safety_pairs_{split}.jsonl"] = _safety_pairs(
            rng(f"safety_pairs_{split}"), rng(f"safety_contexts_{split}"), seen, pools, n["safety_pairs"]
        )
        r = rng(f"sft_{split}")
        out[f"sft_{split}.jsonl"] = [sft_dialogue(r, seen, kind, pools) for kind in _cycle(SFT_MIX, n["sft"])]
        out[f"rl_prompts_{split}.jsonl"] = _rl_prompts(
            rng(f"rl_prompts_{split}"), seen, pools, n["rl_helpfulness"], n["rl_safety"]
        )
        out[f"borderline_{split}.jsonl"] = [
            borderline_prompt(item, text) for item, text in pools["borderline"]
        ]
        out[f"gatt_dialogues_{split}.jsonl"] = _gatt_dialogues(
            rng(f"gatt_dialogues_{split}"), seen, instructions, split, n["gatt_dialogues"]
        )
    # Drawn last, so adding it left every other file byte-identical.
    r = rng("other_pairs_train")
    out["other_pairs_train.jsonl"] = [other_pair(r, seen, i) for i in range(OTHER_PAIRS)]
    return dict(sorted(out.items()))


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def generate_gym(out_dir: str | os.PathLike = "data/gym", seed: int = 0) -> dict[str, int]:
    """Write every gym file and the card into `out_dir`; returns rows per file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = build(seed)
    sizes = {}
    for name, rows in files.items():
        data = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows).encode("utf-8")
        _write(out / name, data)
        sizes[name] = len(data)
    _write(out / "README.md", write_card(files, sizes, seed).encode("utf-8"))
    return {name: len(rows) for name, rows in files.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write the bundled verifiable gym datasets and their card.")
    parser.add_argument("--out", default="data/gym", help="output directory (default: data/gym)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    args = parser.parse_args(argv)
    counts = generate_gym(args.out, args.seed)
    for name, n in counts.items():
        print(f"{n:6d}  {Path(args.out) / name}")


if __name__ == "__main__":
    main()
