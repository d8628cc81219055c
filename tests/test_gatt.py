"""Ghost Attention: the data transformations on hand-made dialogues (instruction on every user turn
for sampling; only in the first turn's system message for training; loss on the last answer only),
the turn-by-turn loop and adherence by turn on scripted answers, and the stage through the CLI on a
tiny random model (artifacts, not learning: a random model follows no instruction)."""

from __future__ import annotations

import json

import pytest
import yaml

from alignment.data.chat_format import IGNORE_INDEX, encode_dialogue, encode_prompt
from alignment.gatt.dialogues import (
    SEPARATOR,
    instruction_pools,
    pick,
    plan_dialogues,
    select_examples,
    training_dialogue,
    training_examples,
    with_instruction_on_every_turn,
)
from alignment.gatt.evaluation import (
    adherence_by_turn,
    adherence_table,
    converse,
    evaluate_adherence,
    score_turns,
    select_dialogues,
    user_turns,
)
from alignment.gym.gatt_instructions import SLOT
from alignment.gym.graders import check_instruction
from tests.conftest import discard_once_passed
from tests.test_pipeline import REPO, metrics, paddock, tiny_checkpoint  # noqa: F401  (fixture)

NAPOLEON = "Always act as Napoleon, and sign every answer '— Napoleon'."


def plain() -> list[dict]:
    return [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "4."},
        {"role": "user", "content": "And 3 + 3?"},
        {"role": "assistant", "content": "6."},
        {"role": "user", "content": "Sort 3, 1, 2."},
        {"role": "assistant", "content": "1, 2, 3.\n— Napoleon"},
    ]


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- the GAtt data ------------------------------------------------------------------------------


def test_instruction_is_appended_to_every_user_turn_and_nothing_else():
    sampled = with_instruction_on_every_turn(plain(), NAPOLEON)
    assert [m["role"] for m in sampled] == [m["role"] for m in plain()]
    for before, after in zip(plain(), sampled, strict=True):
        if before["role"] == "user":
            assert after["content"] == before["content"] + "\n\n" + NAPOLEON
        else:
            assert after == before
    assert plain()[0]["content"] == "What is 2 + 2?"  # the input is not modified


def test_training_dialogue_has_the_instruction_only_in_the_first_turn():
    sampled = with_instruction_on_every_turn(plain(), NAPOLEON)
    trained = training_dialogue(sampled, NAPOLEON, "Figure: Napoleon")
    assert trained[0] == {"role": "system", "content": "Figure: Napoleon"}
    assert trained[1:] == plain()  # user turns back to plain, sampled answers kept as they are
    assert sum(NAPOLEON in m["content"] for m in trained) == 0
    # The full form: the instruction appears exactly once, as the system message.
    full = training_dialogue(sampled, NAPOLEON, NAPOLEON)
    assert [m["content"] for m in full].count(NAPOLEON) == 1 and full[0]["role"] == "system"


def test_training_dialogue_refuses_a_user_turn_without_the_instruction():
    sampled = with_instruction_on_every_turn(plain(), NAPOLEON)
    sampled[2] = {"role": "user", "content": "And 3 + 3?"}
    with pytest.raises(ValueError, match="does not end with the instruction"):
        training_dialogue(sampled, NAPOLEON, NAPOLEON)
    with pytest.raises(ValueError, match="no system message"):
        training_dialogue([{"role": "system", "content": "x"}, *plain()], NAPOLEON, NAPOLEON)


@pytest.mark.parametrize("style", ["template", "llama2"])
def test_loss_covers_only_the_last_answer(style, smollm2_tokenizer):
    tok = smollm2_tokenizer
    trained = training_dialogue(
        with_instruction_on_every_turn(plain(), NAPOLEON), NAPOLEON, "Figure: Napoleon"
    )
    enc = encode_dialogue(trained, tok, style=style, loss_on="last")
    labelled = [i for i, label in enumerate(enc.labels) if label != IGNORE_INDEX]
    assert labelled == list(range(labelled[0], labelled[-1] + 1))  # one contiguous span
    assert [enc.input_ids[i] for i in labelled] == [enc.labels[i] for i in labelled]
    text = tok.decode([enc.input_ids[i] for i in labelled], skip_special_tokens=True).strip()
    assert text == "1, 2, 3.\n— Napoleon"
    assert enc.input_ids[labelled[-1]] == tok.eos_token_id  # the answer's end is trained too
    # Everything before is masked, earlier assistant answers included, and the prompt is intact.
    prompt = encode_prompt(trained[:-1], tok, style=style)
    assert enc.input_ids[: len(prompt)] == prompt and labelled[0] >= len(prompt)
    all_answers = encode_dialogue(trained, tok, style=style, loss_on="all")
    assert all_answers.loss_tokens > enc.loss_tokens  # "4." and "6." would carry loss without masking
    decoded = tok.decode(enc.input_ids)
    assert decoded.count("Figure: Napoleon") == 1 and NAPOLEON not in decoded


def test_every_prefix_examples_end_in_each_answer():
    trained = training_dialogue(with_instruction_on_every_turn(plain(), NAPOLEON), NAPOLEON, NAPOLEON)
    assert training_examples(trained, "last") == [trained]
    prefixes = training_examples(trained, "every_prefix")
    assert [len(p) for p in prefixes] == [3, 5, 7]
    assert all(p[0]["role"] == "system" and p[-1]["role"] == "assistant" for p in prefixes)
    assert prefixes[-1] == trained


def test_gold_filter_keeps_only_examples_whose_trained_answer_followed():
    trained = training_dialogue(with_instruction_on_every_turn(plain(), NAPOLEON), NAPOLEON, NAPOLEON)
    data = [
        {"training": trained, "followed": [False, False, True]},
        {"training": trained[:5], "followed": [True, False]},
    ]
    assert select_examples(data, "last") == [trained, trained[:5]]
    assert select_examples(data, "last", gold_filter=True) == [trained]
    assert select_examples(data, "every_prefix", gold_filter=True) == [trained, trained[:3]]
    assert len(select_examples(data, "every_prefix")) == 5


def test_instruction_pools_keep_the_training_split_and_valid_combinations():
    rows = read_jsonl(REPO / "data/gym/gatt_instructions.jsonl")
    held_out = {json.dumps(sorted(map(str, r["checks"]))) for r in rows if r["split"] == "test"}
    singles, combos = instruction_pools(rows, "train", "random")
    assert singles and all(r["split"] == "train" and len(r["checks"]) == 1 for r in singles)
    assert len(combos) > 100
    for combo in combos:
        a, b = combo["checks"]
        assert SLOT[a["kind"]] != SLOT[b["kind"]] and {a["kind"], b["kind"]} != {"starts_with", "bullets"}
        assert json.dumps(sorted(map(str, combo["checks"]))) not in held_out  # never a test instruction
        assert combo["short"].count("\n") == 1 and combo["text"].count(".") >= 2
    _, gym = instruction_pools(rows, "train", "gym")
    assert gym and all(r["split"] == "train" and len(r["checks"]) == 2 for r in gym)


def test_plan_draws_seeded_forms_and_combinations():
    rows = read_jsonl(REPO / "data/gym/gatt_instructions.jsonl")
    singles, combos = instruction_pools(rows, "train", "random")
    users = [["q1", "q2"]] * 400
    plan = plan_dialogues(users, singles, combos, 0.25, 0.5, seed=3)
    assert plan == plan_dialogues(users, singles, combos, 0.25, 0.5, seed=3)
    assert plan != plan_dialogues(users, singles, combos, 0.25, 0.5, seed=4)
    short = sum(p["system_form"] == "short" for p in plan)
    combined = sum(len(p["instruction"]["checks"]) == 2 for p in plan)
    assert 160 < short < 240 and 60 < combined < 140
    for p in plan:
        assert p["system"] == p["instruction"]["text" if p["system_form"] == "text" else "short"]
    assert all(p["system_form"] == "text" for p in plan_dialogues(users, singles, [], 0.9, 0.0, seed=1))
    assert all(len(p["instruction"]["checks"]) == 1 for p in plan_dialogues(users, singles, [], 0.9, 0.0, 1))


def test_pick_prefers_compliant_then_reward_then_earliest():
    assert pick([0.1, 0.9, 0.5], None) == 1
    assert pick([0.1, 0.9, 0.5], [False, False, True]) == 2
    assert pick([0.1, 0.9, 0.9], [True, True, True]) == 1
    assert pick(None, [False, True, True]) == 1
    assert pick(None, [False, False]) == 0
    assert pick(None, None) == 0


# --- the turn-by-turn loop and adherence by turn ---------------------------------------------------


def test_converse_batches_across_dialogues_and_feeds_back_its_answers():
    calls = []

    def respond(indices, conversations, turn):
        calls.append((turn, list(indices)))
        for conversation in conversations:
            assert conversation[0] == {"role": "system", "content": "S"}
            assert conversation[-1]["content"].startswith(f"u{turn}")
            # every earlier answer is the model's own, in order
            assert [m["content"] for m in conversation if m["role"] == "assistant"] == [
                f"a{t}" for t in range(turn)
            ]
        return [f"a{turn}"] * len(conversations)

    openings = [[{"role": "system", "content": "S"}]] * 3
    users = [[f"u{t}" for t in range(n)] for n in (5, 2, 4)]
    # dialogue 2 does not fit from its turn 3 on (its conversations there are the longest)
    fits = lambda conversation: len(conversation) < 8 or conversation[-1]["content"] != "u3-third"  # noqa: E731
    users[2][3] = "u3-third"
    answers = converse(openings, users, respond, max_turns=4, fits=fits)
    assert answers == [["a0", "a1", "a2", "a3"], ["a0", "a1"], ["a0", "a1", "a2"]]
    assert calls == [(0, [0, 1, 2]), (1, [0, 1, 2]), (2, [0, 2]), (3, [0])]

    # Resuming from answers saved after turn 1 plays the same remaining turns.
    calls.clear()
    resumed = converse(openings, users, respond, 4, fits, answers=[a[:2] for a in answers])
    assert resumed == answers and calls == [(2, [0, 2]), (3, [0])]


def test_adherence_by_turn_counts_dialogues_reaching_each_turn():
    caps = {"checks": [{"kind": "all_caps"}]}
    scripted = [
        ["HELLO", "THERE", "now lower", "STILL"],  # follows at turns 1, 2, 4
        ["YES", "no"],
        ["fine", "FINE", "FINE"],
    ]
    by_turn = adherence_by_turn([score_turns(caps, answers) for answers in scripted])
    assert [(r["turn"], r["n"], r["followed"]) for r in by_turn] == [
        (1, 3, 2),
        (2, 3, 2),
        (3, 2, 1),
        (4, 1, 1),
    ]
    assert by_turn[0]["rate"] == pytest.approx(2 / 3) and by_turn[3]["rate"] == 1.0
    assert all(r["helpful_rate"] is None for r in by_turn)  # no task metadata given


def gym_test_dialogues(n: int) -> list[dict]:
    return select_dialogues(read_jsonl(REPO / "data/gym/gatt_dialogues_test.jsonl"), n)


def test_select_dialogues_takes_the_longest_alternating_seen_and_unseen():
    records = gym_test_dialogues(6)
    assert [len(user_turns(r["messages"])) for r in records] == [20] * 6
    assert [r["meta"]["instruction_seen"] for r in records] == [True, False] * 3


def test_gold_answers_follow_at_every_turn_and_a_forgetful_model_decays():
    """Replaying the gym's own compliant answers gives 100 % adherence and helpfulness at every turn
    (so instructions, turns and task metadata line up); a model that forgets after turn 3 shows it."""
    records = gym_test_dialogues(4)
    gold = {
        i: [m["content"] for m in r["messages"] if m["role"] == "assistant"] for i, r in enumerate(records)
    }
    seen_systems = []

    def replay(indices, conversations, turn):
        seen_systems.extend(c[0]["content"] for c in conversations)
        assert all(sum(m["role"] == "system" for m in c) == 1 for c in conversations)  # first turn only
        return [gold[i][turn] for i in indices]

    summary, transcripts = evaluate_adherence(records, replay, max_turns=20)
    assert [r["turn"] for r in summary["by_turn"]] == list(range(1, 21))
    assert all(r["n"] == 4 and r["rate"] == 1.0 and r["helpful_rate"] == 1.0 for r in summary["by_turn"])
    assert summary["by_instruction"] == {"seen": 1.0, "unseen": 1.0}
    assert set(seen_systems) == {r["messages"][0]["content"] for r in records}

    def forgetful(indices, conversations, turn):
        return [gold[i][turn] if turn < 3 else "I do not remember any instruction." for i in indices]

    summary, transcripts = evaluate_adherence(records, forgetful, max_turns=6)
    assert [r["rate"] for r in summary["by_turn"]] == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert [len(t["turns"]) for t in transcripts] == [6] * 4
    assert transcripts[0]["turns"][3]["followed"] is False
    kinds = {}
    for r in records:
        for c in r["meta"]["instruction"]["checks"]:
            kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
    assert set(summary["by_check"]) == set(kinds)
    for kind, row in summary["by_check"].items():  # gold answers pass every check in turns 1-3
        assert row["turns"] == 6 * kinds[kind] and row["passed"] >= 3 * kinds[kind]
    assert summary["by_check"]["mentions"] == {"passed": 6, "turns": 12, "rate": 0.5}  # no hobby after

    table = adherence_table(summary, None)
    shorter = {**summary, "by_turn": summary["by_turn"][:4]}
    shorter["by_turn"][3] = {**shorter["by_turn"][3], "n": 3}
    both = adherence_table(summary, shorter).splitlines()
    assert both[2].startswith("| 1 | 4 | 100 % | 100 % |") and both[5].startswith("| 4 | 4/3 | 0 % | 0 % |")
    assert both[7].startswith("| 6 | 4/– | 0 % | – |")
    assert "| 1 | 4 | 100 % | – |" in table and "| 4 | 4 | 0 % | – |" in table
    assert table.splitlines()[-1].startswith("| all | | 50 % |")


# --- the stage through the CLI on a tiny random model ------------------------------------------------


@pytest.fixture(scope="module")
def gatt_run(request, tmp_path_factory, tiny_checkpoint):  # noqa: F811
    tmp = discard_once_passed(request, tmp_path_factory.mktemp("gatt"))
    lines = (REPO / "data/gym/gatt_dialogues_train.jsonl").read_text().splitlines()[:24]
    (tmp / "dialogues.jsonl").write_text("\n".join(lines) + "\n")
    # Held-out gold dialogues for the fine-tune's eval loss: short ones, so they fit max_length.
    short = [r for r in read_jsonl(REPO / "data/gym/gatt_dialogues_test.jsonl") if r["meta"]["n_turns"] == 2]
    (tmp / "held_out.jsonl").write_text("".join(json.dumps(r) + "\n" for r in short[:4]))
    stage = {
        "type": "gatt",
        "n_dialogues": 6,
        "max_turns": 3,
        "samples_per_turn": 2,
        "gold_select": True,
        # The tiny checkpoint doubles as both "reward models" (a fresh random scalar head): it only
        # has to exercise best-of-K ranking, not to be a good RM.
        "reward_models": {"helpful": str(tiny_checkpoint), "safety": str(tiny_checkpoint)},
        "combine_probability": 0.5,
        "max_new_tokens": 8,
        "eval_examples": 4,
        "generation_batch_size": 4,
        "finetune": {"learning_rate": 1e-2, "epochs": 1, "batch_size": 2, "max_length": 256},
        "eval": {"n_dialogues": 4, "max_turns": 20, "max_new_tokens": 8},
        "data": {
            "sources": [{"path": str(tmp / "dialogues.jsonl")}],
            "test_sources": [{"path": str(tmp / "held_out.jsonl")}],
        },
    }
    recipe = {
        "run_name": "tiny",
        "output_dir": str(tmp / "runs"),
        "seed": 2,
        "model": {"name_or_path": str(tiny_checkpoint), "precision": "fp32", "lora": {"r": 4, "alpha": 8}},
        "stages": [stage],
        "logging": {"report_to": ["none"], "progress": False},
    }
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = paddock("run", str(tmp / "recipe.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


def test_stage_writes_sampled_data_in_both_forms(gatt_run):
    out = gatt_run / "runs/tiny/gatt"
    data = read_jsonl(out / "gatt_data.jsonl")
    assert len(data) == 6
    source_users = {u for r in read_jsonl(gatt_run / "dialogues.jsonl") for u in user_turns(r["messages"])}
    train_ids = {
        r["id"] for r in read_jsonl(REPO / "data/gym/gatt_instructions.jsonl") if r["split"] == "train"
    }
    for d in data:
        instruction, training, sampled = d["instruction"], d["training"], d["sampled"]
        assert all(part in train_ids for part in instruction["id"].split("+"))
        assert training[0] == {"role": "system", "content": instruction[d["system_form"]]}
        assert 1 <= len(d["followed"]) <= 3 and len(sampled) == 2 * len(d["followed"])
        for s, t in zip(sampled, training[1:], strict=True):
            if s["role"] == "user":
                assert s["content"] == t["content"] + SEPARATOR + instruction["text"]
                assert t["content"] in source_users  # the dialogue's own user turn, instruction removed
            else:
                assert s == t  # the sampled answer is what is trained on
        for turn, samples in enumerate(d["samples"]):
            assert len(samples) == 2 and all("reward" in s for s in samples)
            kept = samples[pick([s["reward"] for s in samples], [s["followed"] for s in samples])]
            assert sampled[2 * turn + 1]["content"] == kept["text"]
            assert all(s["followed"] == check_instruction(instruction, s["text"]) for s in samples)


def test_stage_reports_adherence_by_turn_as_far_as_the_context_allows(gatt_run, smollm2_tokenizer):
    out = gatt_run / "runs/tiny/gatt"
    summary = json.loads((out / "summary.json").read_text())
    for when in ("before", "after"):
        result = summary[f"adherence_{when}"]
        by_turn = result["by_turn"]
        assert result["context_limit"] == 256  # the tiny model's max_position_embeddings
        assert [r["turn"] for r in by_turn] == list(range(1, len(by_turn) + 1))
        assert by_turn[0]["n"] == 4 and [r["n"] for r in by_turn] == sorted(
            (r["n"] for r in by_turn), reverse=True
        )
        assert 1 < len(by_turn) < 20  # 20-turn dialogues, cut by the 256-token context
        for row in by_turn:
            assert row["rate"] == row["followed"] / row["n"]
        transcripts = read_jsonl(out / f"adherence_{when}_dialogues.jsonl")
        assert [len(t["turns"]) for t in transcripts] == result["turns_played"]
        for t in transcripts:  # every prompt the model answered fitted the context with its answer
            messages = [{"role": "system", "content": t["system"]}]
            for turn in t["turns"]:
                messages.append({"role": "user", "content": turn["user"]})
                assert len(encode_prompt(messages, smollm2_tokenizer)) + 8 <= 256
                messages.append({"role": "assistant", "content": turn["answer"]})
    turns = max(len(summary[f"adherence_{w}"]["by_turn"]) for w in ("before", "after"))
    assert summary["adherence_table"].count("\n") == turns + 2  # header, separator, turns, "all"
    assert summary["gatt_data"]["dialogues"] == 6
    assert summary["gatt_data"]["train_dialogues"] == summary["train_examples"] + summary["dropped_too_long"]
    assert summary["test_examples"] >= 1 and "eval_loss" in metrics(out)[-1]
    for artifact in ("COMPLETE", "plots/gatt_adherence.png", "plots/loss.png", "model/adapter_config.json"):
        assert (out / artifact).is_file(), artifact
    assert not (out / "trainable.safetensors").exists() and not (out / "gatt_sampling_state.json").exists()


def test_unfinished_stage_reuses_its_samples_and_gives_the_same_result(gatt_run):
    out = gatt_run / "runs/tiny/gatt"
    first = json.loads((out / "summary.json").read_text())
    data_before = (out / "gatt_data.jsonl").read_text()
    (out / "COMPLETE").unlink()
    (out / "adherence_after.json").unlink()
    (out / "gatt_data.jsonl").write_text(data_before)  # unchanged, but a re-sample would rewrite it
    changed = paddock("run", str(gatt_run / "recipe.yaml"), "stages.gatt.temperature=0.9")
    assert (
        changed.returncode == 2
        and "stage gatt started with other settings (temperature: 0.7 -> 0.9)" in changed.stderr
    )
    again = paddock("run", str(gatt_run / "recipe.yaml"))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "sampling" not in again.stdout  # the cached dialogues were reused
    second = json.loads((out / "summary.json").read_text())
    assert (out / "gatt_data.jsonl").read_text() == data_before
    assert second["adherence_before"] == first["adherence_before"]
    assert second["adherence_after"] == first["adherence_after"]
    assert second["final"]["loss"] == pytest.approx(first["final"]["loss"], rel=1e-5)
