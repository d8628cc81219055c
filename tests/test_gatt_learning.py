"""Ghost Attention learns: after the stage, a model keeps a system instruction at late turns that it
ignored there before (Llama 2 §3.3, Figure 28's question), on a tiny random model through the CLI.

A random model follows no instruction, and GAtt can only distil adherence that its sampler has (it
samples with the instruction appended to every user turn). So an SFT stage first makes a base
model that has exactly the failure GAtt fixes: it follows the gym's "Begin every answer with
'Ahoy!'." (or "'Greetings!'.") when the instruction is appended to the current user turn, and only
then. Its dialogues mix instructed and plain turns, so an instruction given in an earlier turn is
not followed later, and it never sees the instruction as a system message. Then the GAtt stage
samples 24 dialogues of 8 turns with the instruction on every user turn (the base model follows it
there) and trains with the instruction only in the first turn's system message.

The stage's own evaluation replays 16 held-out dialogues (words never seen in training) for 8 turns
with the instruction in the system message only, greedy, alternating the two instructions; the
gold check is `starts_with`. Two instructions, not one, so that a model that learnt "always open
with 'Ahoy!'" (blind to the system message) cannot pass: whatever it says, it matches at most
the half of the dialogues with its opener (about 8 of 16 at a turn, each a coin flip at best).

Asserted at every late turn (5 to 8; alignment/demo.py's "late" is turn 5 on), where all 16
dialogues are still playing: (a) adherence after beats before, a one-sided Fisher exact test at
p < 1e-3 per turn (with none followed before, that needs at least 9 of 16 after); (b) at least
14 of 16 dialogues follow after, which a system-blind model (p <= 1/2 per dialogue) reaches with
probability P(Bin(16, 1/2) >= 14) = 137/65536 ~ 0.002. Seen on the 2-core CPU: before GAtt the
model follows 0 of 16 at turns 5-7 (it answers "Sure.") and 6 of 16 at turn 8; after it, 16 of 16
at each of turns 5-8 ("Ahoy! Sure." / "Greetings! Sure." by the system message); the weakest
turn's test is p = 1.2e-4. If the stage did nothing, or trained with the instruction still on
the user turns, "after" would stay where "before" is.

Why 8 turns, not more: the 256-token context of the tiny model would fit about 12, but the cost
(generation and training tokens, all through a 49k-vocabulary head) grows with every turn.
About 40 s of CPU on 2 cores, hence `slow`.
"""

from __future__ import annotations

import json
import math
import random

import pytest
import yaml

from tests.test_pipeline import REPO, paddock, tiny_checkpoint  # noqa: F401 (a fixture)

OPENERS = ["Ahoy!", "Greetings!"]
WORDS = ["cat", "dog", "owl", "fern", "rock", "tide", "lamp", "moth", "pear", "kite", "coin", "reed"]
HELD_OUT_WORDS = ["bell", "crab", "dune", "frog", "gulf", "hawk", "iris", "jade"]
TURNS = 8  # per GAtt and evaluation dialogue
LATE = 5  # first "late" turn (as alignment/demo.py counts them)
N_EVAL = 16


def instructions() -> list[dict]:
    """The gym's single-check instructions "Begin every answer with 'Ahoy!'." and "... 'Greetings!'."."""
    rows = [json.loads(line) for line in (REPO / "data/gym/gatt_instructions.jsonl").read_text().splitlines()]
    return [next(r for r in rows if r["checks"] == [{"kind": "starts_with", "text": o}]) for o in OPENERS]


def turn(word: str, instruction: dict | None) -> list[dict]:
    """One user/assistant exchange; with `instruction`, appended to the user turn as GAtt samples it
    (alignment/gatt/dialogues.py SEPARATOR) and followed by the answer."""
    if instruction is None:
        return [{"role": "user", "content": f"Say {word}."}, {"role": "assistant", "content": "Sure."}]
    opener = instruction["checks"][0]["text"]
    return [
        {"role": "user", "content": f"Say {word}.\n\n{instruction['text']}"},
        {"role": "assistant", "content": f"{opener} Sure."},
    ]


def sft_dialogues(rules: list[dict], rng: random.Random, n: int) -> list[dict]:
    """2-3 turns each. Half are "forgetful" dialogues: an instruction as the system message, followed
    in the first answer only. The others have no system message (the template's default one), and
    each turn is instructed (either instruction, appended to the user turn) or plain, even odds."""
    rows = []
    for _ in range(n):
        turns = rng.randint(2, 3)
        if rng.random() < 0.5:
            rule = rng.choice(rules)
            first = turn(rng.choice(WORDS), rule)
            first[0]["content"] = first[0]["content"].split("\n\n")[0]  # the instruction is the system's
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
    rows = plain_dialogues(rng, N_EVAL, HELD_OUT_WORDS)
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
    assert fisher_one_sided(9, 0, 16) < 1e-3 < fisher_one_sided(8, 0, 16)
    assert fisher_one_sided(3, 3, 16) > 0.5
    assert binomial_tail(14, 16) == 137 / 65536


@pytest.mark.slow  # ~40 s of CPU: an SFT stage, then GAtt's sampling, fine-tune and two evaluations
def test_gatt_raises_adherence_to_a_system_instruction_at_late_turns(tmp_path, tiny_checkpoint):  # noqa: F811
    rules = instructions()
    rng = random.Random(0)
    write_jsonl(tmp_path / "instructions.jsonl", rules)
    write_jsonl(tmp_path / "sft.jsonl", sft_dialogues(rules, rng, 96))
    write_jsonl(tmp_path / "gatt.jsonl", plain_dialogues(rng, 24, WORDS))
    write_jsonl(tmp_path / "eval.jsonl", eval_dialogues(rules, rng))
    source = lambda name: {"sources": [{"path": str(tmp_path / name)}], "test_fraction": 0.0}  # noqa: E731
    stages = [
        # 100 steps at a constant LR: enough for the 2-layer model to learn the conditional opener
        # (its loss ends near 0.05; a cosine decay over as many steps left it at ~1).
        {"type": "sft", "learning_rate": 1e-2, "max_steps": 100, "epochs": 100, "batch_size": 8,
         "min_lr_ratio": 1.0, "warmup_ratio": 0.0, "max_length": 256, "checkpoint_every": 1000,
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
    # The premise: the SFT model follows the instruction where GAtt samples it (on the user turn).
    # Seen: 0.85 of the sampled turns. Below this, the SFT stage, not GAtt, is what failed.
    assert summary["gatt_data"]["sampled_adherence"] > 0.6, summary["gatt_data"]
    table = summary["adherence_table"]
    before = {r["turn"]: r for r in summary["adherence_before"]["by_turn"]}
    after = {r["turn"]: r for r in summary["adherence_after"]["by_turn"]}
    for t in range(LATE, TURNS + 1):
        b, a = before[t], after[t]
        assert b["n"] == a["n"] == N_EVAL, table  # every dialogue still fits the context here
        assert fisher_one_sided(a["followed"], b["followed"], N_EVAL) < 1e-3, (t, table)
        assert a["followed"] >= 14, (t, table)  # a system-blind model: P ~ 0.002 per turn
