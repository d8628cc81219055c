"""Ghost Attention learns: after the stage, a model keeps a system instruction at the late turns
where it dropped it before (Llama 2 §3.3, Figure 28), on a tiny random model through the CLI.

A random model follows no instruction, and GAtt can only distil adherence that its sampler has (it
samples with the instruction appended to every user turn). So an SFT stage first makes a base
model with the failure GAtt fixes, on the gym's two case instructions ("Answer in all capital
letters for the rest of this conversation." -> "SURE.", "Write every answer in lowercase letters
only." -> "sure."; a plain turn gets "Sure."). Half its dialogues have no system message and each
user turn instructed (the instruction appended, as GAtt samples) or plain: the model follows an
instruction on the current turn, and only there. The other half have the instruction as the system
message, followed in the first answer only: the model drops it from turn 2 on. Then the GAtt stage
samples 24 dialogues of 8 turns with the instruction on every user turn (the base model follows it
there) and fine-tunes with the instruction only in the first turn's system message.

The stage's own evaluation plays 16 fresh dialogues for 8 turns (greedy, the instruction in the
system message only, the two instructions alternating), scored by the gym's gold checks. Two
instructions that exclude each other, not one: a model blind to the system message (one that
learnt "always answer in capitals", say) follows only where the instruction happens to match, about
8 of 16 dialogues at a turn, each a coin flip at best.

Asserted at each late turn, 5 to 8 (alignment/demo.py's "late" starts at 5), where all 16 dialogues
still fit the 256-token context: (a) after beats before by a one-sided Fisher exact test at
p < 1e-4 (with none followed before, that takes at least 11 of 16 after); (b) at least 14 of 16
follow after, which a system-blind model reaches with P(Bin(16, 1/2) >= 14) = 137/65536 ~ 0.002.
Seen on the 2-core CPU: before, 16/16 at turn 1 and 0/16 at each of turns 2-8; after, 16/16 at
every turn. With seeds 1-7 in place of 0 (data and run): the same 0/16 late before, 14 to 16 of
16 at each late turn after. A stage that changed nothing fails (a): greedy answers of the same
model give after = before.

Why 8 turns, not the ~12 the context would fit: every token costs a pass through the 49k-vocabulary
head (the fused loss computes it at masked positions too), and turns add tokens to the sampling,
the fine-tune and both evaluations. About 60 s on 2 cores (~100 s of CPU).
"""

from __future__ import annotations

import json
import math
import random

import pytest
import yaml

from alignment.gatt.dialogues import SEPARATOR
from tests.test_pipeline import REPO, paddock, tiny_checkpoint  # noqa: F401 (a fixture)

CASES = ["all_caps", "all_lowercase"]
WORDS = ["cat", "dog", "owl", "fern", "rock", "tide", "lamp", "moth", "pear", "kite", "coin", "reed"]
TURNS = 8  # per GAtt and evaluation dialogue
LATE = 5  # first "late" turn (as alignment/demo.py counts them)
N_EVAL = 16


def instructions() -> list[dict]:
    """The gym's single-check instructions "Answer in all capital letters for the rest of this
    conversation." and "Write every answer in lowercase letters only."."""
    rows = [json.loads(line) for line in (REPO / "data/gym/gatt_instructions.jsonl").read_text().splitlines()]
    return [next(r for r in rows if r["checks"] == [{"kind": kind}]) for kind in CASES]


def turn(word: str, instruction: dict | None) -> list[dict]:
    """One user/assistant exchange; with `instruction`, appended to the user turn as GAtt samples it
    (alignment/gatt/dialogues.py SEPARATOR) and followed by the answer."""
    if instruction is None:
        return [{"role": "user", "content": f"Say {word}."}, {"role": "assistant", "content": "Sure."}]
    answer = "SURE." if instruction["checks"] == [{"kind": "all_caps"}] else "sure."
    return [
        {"role": "user", "content": f"Say {word}.{SEPARATOR}{instruction['text']}"},
        {"role": "assistant", "content": answer},
    ]


def sft_dialogues(rules: list[dict], rng: random.Random, n: int) -> list[dict]:
    """2 to 8 turns each. Half are "forgetful": an instruction as the system message, followed in the
    first answer only. The others have no system message (the template's default one), each turn
    instructed (either instruction, appended to the user turn) or plain, at even odds."""
    rows = []
    for _ in range(n):
        turns = rng.randint(2, TURNS)
        if rng.random() < 0.5:
            rule = rng.choice(rules)
            first = turn(rng.choice(WORDS), rule)
            first[0]["content"] = first[0]["content"].split(SEPARATOR)[0]  # the instruction is the system's
            messages = [{"role": "system", "content": rule["text"]}, *first]
            for _ in range(turns - 1):
                messages += turn(rng.choice(WORDS), None)
        else:
            messages = []
            for _ in range(turns):
                messages += turn(rng.choice(WORDS), rng.choice(rules) if rng.random() < 0.5 else None)
        rows.append({"messages": messages, "category": "helpfulness"})
    return rows


def plain_dialogues(rng: random.Random, n: int, words: list[str]) -> list[dict]:
    dialogues = [[m for _ in range(TURNS) for m in turn(rng.choice(words), None)] for _ in range(n)]
    return [{"messages": messages, "category": "helpfulness"} for messages in dialogues]


def eval_dialogues(rules: list[dict], rng: random.Random) -> list[dict]:
    """The GAtt eval format: the instruction as the system message and in `meta.instruction`."""
    rows = plain_dialogues(rng, N_EVAL, WORDS)
    for i, row in enumerate(rows):
        rule = rules[i % len(rules)]
        row["messages"] = [{"role": "system", "content": rule["text"]}, *row["messages"]]
        row["meta"] = {
            "instruction": {k: rule[k] for k in ("id", "text", "short", "checks")},
            "instruction_seen": True,
            "n_turns": TURNS,
        }
    return rows


def write_jsonl(path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def fisher_one_sided(after: int, before: int, n: int) -> float:
    """P(a group of n gets >= `after` of the after + before successes, drawn without replacement
    from two groups of n): Fisher's exact test that "after" is no better than "before"."""
    total = after + before
    hits = range(after, min(n, total) + 1)
    return sum(math.comb(n, k) * math.comb(n, total - k) for k in hits) / math.comb(2 * n, total)


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Bin(n, 1/2)."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


def test_fisher_and_binomial_tails_are_the_textbook_values():
    assert fisher_one_sided(16, 0, 16) == pytest.approx(1 / math.comb(32, 16))
    assert fisher_one_sided(11, 0, 16) < 1e-4 < fisher_one_sided(10, 0, 16)
    assert fisher_one_sided(3, 3, 16) > 0.5
    assert binomial_tail(14, 16) == 137 / 65536


@pytest.mark.slow  # ~55 s on 2 cores: an SFT stage, then GAtt's sampling, fine-tune and two evaluations
def test_gatt_raises_adherence_to_a_system_instruction_at_late_turns(tmp_path, tiny_checkpoint):  # noqa: F811
    rules = instructions()
    rng = random.Random(0)
    write_jsonl(tmp_path / "instructions.jsonl", rules)
    write_jsonl(tmp_path / "sft.jsonl", sft_dialogues(rules, rng, 96))
    write_jsonl(tmp_path / "gatt.jsonl", plain_dialogues(rng, 24, WORDS))
    write_jsonl(tmp_path / "eval.jsonl", eval_dialogues(rules, rng))
    source = lambda name: {"sources": [{"path": str(tmp_path / name)}], "test_fraction": 0.0}  # noqa: E731
    stages = [
        # 100 steps (cosine from 1e-2): the loss ends at or below 0.01 with seeds 0-7. (With an
        # earlier variant of the task, 50 steps left some seeds short, and GAtt had little to distil.)
        {"type": "sft", "learning_rate": 1e-2, "max_steps": 100, "epochs": 100, "batch_size": 8,
         "warmup_ratio": 0.0, "max_length": 256, "checkpoint_every": 1000,
         "data": source("sft.jsonl")},
        {"type": "gatt", "instructions": str(tmp_path / "instructions.jsonl"),
         "combine_probability": 0.0, "short_form_probability": 0.0,
         "n_dialogues": 24, "max_turns": TURNS, "max_new_tokens": 6, "generation_batch_size": 24,
         # Every prefix: the 24 sampled dialogues give an example ending at each turn 1..8, so late
         # turns are trained as often as early ones.
         "examples": "every_prefix", "eval_examples": 0,
         "finetune": {"learning_rate": 1e-2, "epochs": 1, "batch_size": 8, "warmup_ratio": 0.0,
                      "max_length": 256, "checkpoint_every": 1000},
         "eval": {"dialogues": str(tmp_path / "eval.jsonl"), "n_dialogues": N_EVAL, "max_turns": TURNS,
                  "max_new_tokens": 6, "batch_size": N_EVAL},
         "data": source("gatt.jsonl")},
    ]  # fmt: skip
    recipe = {
        "run_name": "tiny",
        "output_dir": str(tmp_path / "runs"),
        "seed": 0,
        "model": {"name_or_path": str(tiny_checkpoint), "precision": "fp32"},
        "stages": stages,
        "logging": {"report_to": ["none"], "progress": False},
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = paddock("run", str(tmp_path / "recipe.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]

    summary = json.loads((tmp_path / "runs/tiny/gatt/summary.json").read_text())
    # The premise: the SFT model follows the instruction where GAtt samples it (on every user turn).
    # Seen: every sampled turn, with seeds 0-7. Below this, the SFT stage, not GAtt, failed.
    assert summary["gatt_data"]["sampled_adherence"] > 0.8, summary["gatt_data"]
    table = summary["adherence_table"]
    before = {r["turn"]: r for r in summary["adherence_before"]["by_turn"]}
    after = {r["turn"]: r for r in summary["adherence_after"]["by_turn"]}
    for t in range(LATE, TURNS + 1):
        b, a = before[t], after[t]
        assert b["n"] == a["n"] == N_EVAL, table  # every dialogue still fits the context here
        assert fisher_one_sided(a["followed"], b["followed"], N_EVAL) < 1e-4, (t, table)
        assert a["followed"] >= 14, (t, table)  # a system-blind model: P ~ 0.002 per turn
