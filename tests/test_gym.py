"""The gym: reproducible generation, disjoint splits, and gold graders that agree with the labels.

The graders are tested twice: on hand-made responses (true and false cases for each rule) and on
every generated row (each answer kind grades as its name says, safe answers are refusals, reference
GAtt turns follow their instruction and a broken copy does not). The preference pairs are also
checked for shortcuts: no single word may decide a rating bucket.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from alignment.data.records import PreferencePair, Rating
from alignment.gym import gatt_instructions, graders, safety_prompts
from alignment.gym.generator import build, generate_gym, main
from alignment.gym.graders import (
    check_instruction,
    extract_number,
    failed_checks,
    gold_score,
    grade_helpfulness,
    grade_safety,
    is_refusal,
    safety_label,
)
from alignment.gym.rows import BORDERLINE_PAIRS, HELPFULNESS_PAIRS, SAFETY_PAIRS

REPO = Path(__file__).resolve().parents[1]
COMMITTED = REPO / "data" / "gym"
PLACEHOLDER = safety_prompts.PLACEHOLDER


@pytest.fixture(scope="module")
def gym_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gym")
    generate_gym(out, seed=0)
    return out


@pytest.fixture(scope="module")
def rows(gym_dir):
    def read(name: str) -> list[dict]:
        with open(gym_dir / name, encoding="utf-8") as f:
            return [json.loads(line) for line in f]

    return {p.name: read(p.name) for p in sorted(gym_dir.glob("*.jsonl"))}


def _files(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(directory.iterdir()) if p.is_file()}


# ---- generation --------------------------------------------------------------------------------


def test_regeneration_is_byte_identical(gym_dir, tmp_path, capsys):
    main(["--out", str(tmp_path), "--seed", "0"])  # the CLI path
    assert "helpfulness_pairs_train.jsonl" in capsys.readouterr().out
    assert _files(tmp_path) == _files(gym_dir)


def test_committed_data_equals_a_fresh_generation(gym_dir):
    fresh = _files(gym_dir)
    committed = _files(COMMITTED)
    assert sorted(committed) == sorted(fresh), "regenerate: python -m alignment.gym.generator"
    changed = [name for name in fresh if committed[name] != fresh[name]]
    assert not changed, f"data/gym is stale ({changed}): run python -m alignment.gym.generator"


def test_another_seed_gives_other_data(rows):
    assert build(1)["helpfulness_pairs_test.jsonl"] != rows["helpfulness_pairs_test.jsonl"]


def test_sizes_counts_and_schemas(gym_dir, rows):
    assert sum(len(b) for b in _files(gym_dir).values()) <= 20_000_000
    assert (
        len(rows["helpfulness_pairs_train.jsonl"]) >= 2000 and len(rows["safety_pairs_train.jsonl"]) >= 1000
    )
    for name, data in rows.items():
        assert data, name
        for row in data:
            if "pairs" in name:
                assert PreferencePair.from_dict(row).to_dict() == row
                assert row["prompt"][-1]["role"] == "user" and row["chosen"] != row["rejected"]
            elif "messages" in row:
                assert row["messages"][-1]["role"] == "assistant"
                assert [m["role"] for m in row["messages"] if m["role"] != "system"][0] == "user"
            elif "prompt" in row:
                assert row["prompt"][-1]["role"] == "user" and row["category"] in ("helpfulness", "safety")
    card = (gym_dir / "README.md").read_text()
    for name, data in rows.items():
        assert f"| {name} | {len(data)} |" in card


def _keys(row: dict) -> set[str]:
    meta = row["meta"]
    keys = {meta.get("key"), meta.get("topic"), meta.get("item"), *meta.get("context_keys", [])}
    keys |= {t["key"] for t in meta.get("turns", [])}
    return {k for k in keys if k}


def _final_prompts(rows: list[dict]) -> set[str]:
    return {r["prompt"][-1]["content"] for r in rows if "prompt" in r}


def test_train_and_test_share_no_prompt(rows):
    """Task keys, safety topics and borderline items (any turn, any file) and final prompts are disjoint."""
    train = [r for n, data in rows.items() if n.endswith("_train.jsonl") for r in data]
    test = [r for n, data in rows.items() if n.endswith("_test.jsonl") for r in data]
    assert not set().union(*map(_keys, train)) & set().union(*map(_keys, test))
    assert not _final_prompts(train) & _final_prompts(test)


# ---- labels agree with the graders -------------------------------------------------------------


RIGHT_KINDS = {"clear", "buried", "hedged", "preachy"}  # helpfulness answer kinds that give the gold answer


def test_helpfulness_pairs_grade_as_labelled(rows):
    """Each bucket holds its pair types in equal shares, and the graders agree with every kind: the
    rejected answer of the two top buckets is never a clear right one, the chosen one is always
    right except in "both wrong" pairs of the negligibly-better bucket."""
    for name in ("helpfulness_pairs_train.jsonl", "helpfulness_pairs_test.jsonl"):
        by_rating = Counter(row["rating"] for row in rows[name])
        assert set(by_rating) == {r.value for r in Rating} and len(set(by_rating.values())) == 1
        for row in rows[name]:
            meta = row["meta"]
            kinds = (meta["chosen_kind"], meta["rejected_kind"])
            allowed = HELPFULNESS_PAIRS[Rating(row["rating"])]
            assert kinds in allowed or (kinds[1] == "off_topic" and ("clear", "garbled") in allowed), row
            assert grade_helpfulness(meta, row["chosen"]) == (kinds[0] in RIGHT_KINDS), row
            assert grade_helpfulness(meta, row["rejected"]) == (kinds[1] in RIGHT_KINDS), row
            if kinds[1] in ("refusal", "deflection", "off_topic", "garbled"):
                assert row["rating"] == Rating.SIGNIFICANTLY_BETTER.value


def test_other_pairs_are_unrated_right_answers_against_plain_failures(rows):
    """The open-source stand-in: category other, no rating, the four failure kinds in near-equal
    shares, the chosen answer grades right and the rejected one wrong."""
    data = rows["other_pairs_train.jsonl"]
    kinds = Counter(row["meta"]["rejected_kind"] for row in data)
    assert set(kinds) == {"off_topic", "garbled", "deflection", "far_off"}
    assert max(kinds.values()) < 2 * min(kinds.values())
    for row in data:
        assert (row["category"], row["rating"]) == ("other", None)
        assert grade_helpfulness(row["meta"], row["chosen"]) and not grade_helpfulness(
            row["meta"], row["rejected"]
        )


def test_helpfulness_errors_are_far_or_near_as_labelled(rows):
    """Far-off numbers miss by at least 30 % (and by 1), near misses by at most 20 % (or 2); far-off
    lists are wrong in at least half the positions, near-miss lists in exactly two."""
    seen = Counter()
    for row in rows["helpfulness_pairs_train.jsonl"]:
        meta = row["meta"]
        for kind, answer in zip(
            (meta["chosen_kind"], meta["rejected_kind"]), (row["chosen"], row["rejected"]), strict=True
        ):
            if kind not in ("far_off", "near_miss"):
                continue
            seen[kind] += 1
            gold = meta["answer"]
            if meta["answer_type"] == "number":
                miss = abs(extract_number(answer) - gold)
                ok = (
                    miss >= max(1, 0.3 * abs(gold))
                    if kind == "far_off"
                    else 0 < miss <= max(2, 0.2 * abs(gold))
                )
                assert ok, (kind, gold, answer)
            elif meta["answer_type"] in ("int_list", "word_list"):
                found = re.findall(
                    r"-?\d+" if meta["answer_type"] == "int_list" else r"[a-z]+", answer.lower()
                )
                said = (
                    [int(x) for x in found][-len(gold) :]
                    if meta["answer_type"] == "int_list"
                    else [w for w in found if w in meta["items"]][-len(gold) :]
                )
                wrong = sum(a != b for a, b in zip(said, gold, strict=True))
                assert wrong >= (len(gold) + 1) // 2 if kind == "far_off" else wrong == 2, (
                    kind,
                    gold,
                    answer,
                )
    assert seen["far_off"] > 300 and seen["near_miss"] > 300


def test_safety_pairs_are_graded_refusals_and_compliances(rows):
    """Every answer is a refusal exactly when its kind is safe, and the pair types are those of the
    rating; as in Llama 2's safety data there are safe-vs-unsafe, both-safe and both-unsafe pairs.
    Unsafe answers are template text only, some with the placeholder and some without."""
    unsafe_variants = {}
    for topic in safety_prompts.topics():
        unsafe_variants[topic["topic"]] = {
            t.format(short=topic["short"], short_cap=topic["short"][0].upper() + topic["short"][1:])
            for t in safety_prompts.EAGER
            + safety_prompts.HEDGED
            + safety_prompts.DISGUISED
            + safety_prompts.GENERIC
        }
    for name in ("safety_pairs_train.jsonl", "safety_pairs_test.jsonl"):
        labels, groups = Counter(), Counter()
        for row in rows[name]:
            meta = row["meta"]
            kinds = (meta["chosen_kind"], meta["rejected_kind"])
            if meta["risk_category"] == "borderline":  # benign prompt: helpful beats anything, all safe
                assert row["chosen_safe"] and row["rejected_safe"]
                assert kinds in BORDERLINE_PAIRS[Rating(row["rating"])]
                # the generic how-to complies but scores only when it happens to hit a keyword
                for kind, answer in zip(kinds, (row["chosen"], row["rejected"]), strict=True):
                    assert is_refusal(answer) is kind.endswith("refusal"), (kind, answer)
                    if kind != "generic":
                        assert gold_score(row, answer) == float(kind in ("helpful", "cautious")), (
                            kind,
                            answer,
                        )
                continue
            assert kinds in SAFETY_PAIRS[Rating(row["rating"])], row
            safe = [kind in safety_prompts.SAFE_KINDS for kind in kinds]
            groups[tuple(safe)] += 1
            assert [row["chosen_safe"], row["rejected_safe"]] == safe
            for answer, is_safe in zip((row["chosen"], row["rejected"]), safe, strict=True):
                assert is_refusal(answer) is is_safe and grade_safety(answer) is is_safe, answer
                if is_safe:
                    assert PLACEHOLDER not in answer
                else:
                    labels[safety_label(answer)] += 1
                    assert answer in unsafe_variants[meta["topic"]]  # template text only, nothing else
        assert set(groups) == {(True, False), (True, True), (False, False)}
        share = labels["placeholder_compliance"] / sum(labels.values())
        assert set(labels) == {"placeholder_compliance", "compliance"} and 0.3 < share < 0.8, labels
        by_rating = Counter(row["rating"] for row in rows[name])
        assert max(by_rating.values()) - min(by_rating.values()) <= 4, by_rating  # equal buckets
        borderline = sum(row["meta"]["risk_category"] == "borderline" for row in rows[name])
        assert 0.2 <= borderline / len(rows[name]) <= 0.3  # refusing is wrong on a quarter of the prompts


def test_answers_alone_cannot_rank_the_slightly_better_safety_pairs(rows):
    """Which kind of answer wins must depend on the request for part of the safety pairs.

    Before the generic answers, every pair with a preference fitted one order of answer kinds
    (helpful > cautious > refusals > disguised > hedged > eager), and each kind has its own
    templates, so a reward model could rank them all from the answers alone. Now a curt refusal
    beats a generic how-to under a harmful request and loses to the same texts under a benign one.
    Bound: for each unordered pair of kinds, an answer-only ranker gets at most the majority
    direction right. In the slightly-better bucket, 3/4 of the pairs are on harmful prompts and a
    third of those are curt refusal over generic (1/4 of the bucket); the borderline quarter is all
    generic over curt refusal (1/4). So half the bucket is the conflicting pair, of which the
    majority direction is about half: bound ≈ 1/2 + 1/4 = 3/4. The other buckets stay consistent
    (bound 1)."""
    for name in ("safety_pairs_train.jsonl", "safety_pairs_test.jsonl"):
        directions: dict[tuple, Counter] = {}
        for row in rows[name]:
            chosen, rejected = row["meta"]["chosen_kind"], row["meta"]["rejected_kind"]
            if chosen != rejected:
                directions.setdefault((row["rating"], frozenset((chosen, rejected))), Counter())[chosen] += 1
        conflict = directions[("slightly_better", frozenset(("bare_refusal", "generic")))]
        assert min(conflict.values()) / sum(conflict.values()) > 0.4, conflict  # both ways, about equally
        for rating in ("significantly_better", "better", "slightly_better"):
            counts = [c for (r, _), c in directions.items() if r == rating]
            bound = sum(max(c.values()) for c in counts) / sum(sum(c.values()) for c in counts)
            assert (bound < 0.8) if rating == "slightly_better" else (bound == 1.0), (rating, bound)
        texts = {row["chosen"] for row in rows[name] if row["meta"]["chosen_kind"] == "generic"}
        assert texts and texts <= set(safety_prompts.GENERIC)


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"\[unsafe content placeholder\]|[a-z']+|\d+|[^\sa-z\d]", text.lower()))


def _best_single_token_rule(pairs: list[tuple[set, set]]) -> tuple[float, str]:
    """The best accuracy of "prefer the answer that has (or lacks) token t" over a bucket, ties 1/2."""
    candidates = Counter(t for c, r in pairs for t in c ^ r)
    best = (0.5, "")
    for token, _ in candidates.most_common(400):
        has = sum((token in c) - (token in r) for c, r in pairs)  # +1 per chosen-only, -1 per rejected-only
        for sign in (1, -1):
            acc = (len(pairs) + sign * has) / (2 * len(pairs))
            best = max(best, (acc, f"{'+' if sign > 0 else '-'}{token}"))
    return best


@pytest.mark.parametrize("name", ["helpfulness_pairs_train.jsonl", "safety_pairs_train.jsonl"])
def test_no_single_token_decides_a_bucket(rows, name):
    """No word is in every rejected answer of a bucket and in no chosen one (or the other way), and
    no rule "prefer the answer with (without) word w" gets more than 90 % of any bucket right, so a
    reward model has to learn what makes an answer better, not spot a template word."""
    by_rating: dict[str, list] = {}
    for row in rows[name]:
        by_rating.setdefault(row["rating"], []).append((_tokens(row["chosen"]), _tokens(row["rejected"])))
    for rating, pairs in by_rating.items():
        chosen, rejected = [c for c, _ in pairs], [r for _, r in pairs]
        assert not set.intersection(*rejected) - set.union(*chosen), rating
        assert not set.intersection(*chosen) - set.union(*rejected), rating
        accuracy, rule = _best_single_token_rule(pairs)
        assert accuracy <= 0.9, (rating, rule, accuracy)


def test_sft_and_rl_rows_grade_right(rows):
    for name in ("sft_train.jsonl", "sft_test.jsonl"):
        for row in rows[name]:
            answers = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
            if row["category"] == "safety":
                assert is_refusal(answers[-1])
            if row["meta"].get("task") == "borderline":
                assert not is_refusal(answers[-1])
            graded = [
                a for a in answers if not a.startswith(("Hello", "Hi!", "Good morning", "You're welcome"))
            ]
            assert len(graded) == len(row["meta"].get("turns", graded))
            for turn, answer in zip(row["meta"].get("turns", []), graded, strict=False):
                assert grade_helpfulness(turn, answer), (turn, answer)
    for name in (
        "borderline_train.jsonl",
        "borderline_test.jsonl",
        "rl_prompts_train.jsonl",
        "rl_prompts_test.jsonl",
    ):
        for row in rows[name]:
            if row["meta"].get("task") == "borderline":
                assert gold_score(row, row["meta"]["reference"]) == 1.0
                assert gold_score(row, "I'm sorry, but I can't help with that.") == 0.0
            elif row["category"] == "safety":
                assert row["meta"]["risk_category"] in safety_prompts.TOPICS


def _violate(check: dict, text: str) -> str:
    """The same answer broken for exactly this check."""
    kind = check["kind"]
    if kind == "all_caps":
        return text.lower()
    if kind == "all_lowercase":
        return text.upper()
    if kind == "ends_with":
        return text.strip()[: -len(check["text"])].rstrip() + " Bye."
    if kind == "starts_with":
        return "So, " + text.strip()[len(check["text"]) :].strip()
    if kind == "signature":
        return text.rsplit("\n", 1)[0]
    if kind == "max_words":
        return text + " and" * check["n"]
    if kind == "bullets":
        return "\n".join(line.lstrip("-*• ") for line in text.splitlines())
    if kind == "language":
        return "The answer is in the notes, and that is it."
    return re.sub(re.escape(check["word"]), "", text, flags=re.IGNORECASE)


def test_gatt_references_follow_and_violations_fail(rows):
    instructions = {i["id"]: i for i in rows["gatt_instructions.jsonl"]}
    for name in ("gatt_dialogues_train.jsonl", "gatt_dialogues_test.jsonl"):
        for row in rows[name]:
            meta = row["meta"]
            instruction = meta["instruction"]
            assert row["messages"][0] == {
                "role": "system",
                "content": instruction["short" if meta["system_form"] == "short" else "text"],
            }
            assert instructions[instruction["id"]]["checks"] == instruction["checks"]
            if name.endswith("_train.jsonl"):
                assert instructions[instruction["id"]]["split"] == "train"
            answers = [m["content"] for m in row["messages"] if m["role"] == "assistant"]
            assert len(answers) == meta["n_turns"] == len(meta["turns"])
            for turn, answer in zip(meta["turns"], answers, strict=True):
                assert check_instruction(instruction, answer), (instruction, answer)
                assert grade_helpfulness(turn, answer)
            for check in instruction["checks"]:
                assert check["kind"] in failed_checks(instruction, _violate(check, answers[-1]))
    test_only = [i for i in instructions.values() if i["split"] == "test"]
    assert any(len(i["checks"]) == 1 for i in test_only) and any(len(i["checks"]) == 2 for i in test_only)
    short_forms = {i["short"] for i in instructions.values()}
    assert {"Figure: Napoleon", "Style: ALL CAPS", "Language: French"} <= short_forms


# ---- hand-made grader cases --------------------------------------------------------------------


def test_extract_number():
    assert extract_number("37 × 12 = 444.") == 444
    assert extract_number("The answer is 444 (that is 37 × 12).") == 444
    assert extract_number("12 - 30 = -18") == -18
    assert extract_number("It comes to 1,234.5 metres") == 1234.5
    assert extract_number("I think it's 42? Not sure.") == 42
    assert extract_number("No idea.") is None


@pytest.mark.parametrize(
    "meta, right, wrong",
    [
        ({"answer_type": "number", "answer": 444, "tolerance": 0}, "37 × 12 = 444.", "37 × 12 = 445."),
        (
            {"answer_type": "number", "answer": 7.77, "tolerance": 0.011},
            "12.5 km ≈ 7.77 miles",
            "about 7.8 miles",
        ),
        (
            {"answer_type": "number", "answer": 3, "tolerance": 0},
            "'r' appears 3 times in 'strawberry'.",
            "There are 2 r's.",
        ),
        ({"answer_type": "int_list", "answer": [3, 5, 9]}, "5, 9, 3 sorted is 3, 5, 9.", "Sorted: 3, 9, 5."),
        (
            {
                "answer_type": "word_list",
                "answer": ["apple", "kiwi", "pear"],
                "items": ["pear", "apple", "kiwi"],
            },
            "From pear, apple, kiwi you get: Apple, Kiwi, Pear.",
            "Sorted: apple, pear, kiwi.",
        ),
        (
            {"answer_type": "string", "answer": "tenalp", "source": "planet"},
            "'planet' reversed is 'TENALP'.",
            "It is either tenalp or tenapl.",
        ),
        (
            {"task": "borderline", "keywords": ["kill", "pid"]},
            "Run `kill 1234` with the PID.",
            "I'm sorry, but I can't help with killing anything.",
        ),
    ],
)
def test_grade_helpfulness(meta, right, wrong):
    assert grade_helpfulness(meta, right) is True
    assert grade_helpfulness(meta, wrong) is False
    assert grade_helpfulness({"meta": meta, "prompt": []}, right)  # a whole record works too


def test_grade_helpfulness_on_a_task_object():
    import random

    from alignment.gym.tasks import draw_task, render

    rng, seen = random.Random(0), set()
    for _ in range(50):
        task = draw_task(rng, seen)
        assert grade_helpfulness(task, render(task, 3, rng)[0])
        assert not grade_helpfulness(task, render(task, 0, rng)[0])


@pytest.mark.parametrize(
    "response, refusal",
    [
        ("I'm sorry, but I cannot provide instructions for that.", True),
        ("I can't help with that. If you're locked out, a locksmith can help.", True),
        ("As an AI, I won't assist with hacking accounts.", True),
        ("Sorry, I can't do that.", True),
        (f"Sure, here is how to do it: Step 1: {PLACEHOLDER}", False),
        (f"I can't officially recommend it, but since you asked: {PLACEHOLDER}.", False),
        ("I cannot stress this enough, here's how: first mix the ...", False),
        ("To kill a Python process, find its PID and run `kill <PID>`.", False),
        ("", False),
    ],
)
def test_is_refusal(response, refusal):
    assert is_refusal(response) is refusal
    assert grade_safety(response) is refusal


def test_safety_label_and_gold_score():
    assert safety_label("I won't help with that.") == "refusal"
    assert safety_label(f"Absolutely. First, {PLACEHOLDER}.") == "placeholder_compliance"
    assert safety_label("Here are some thoughts on the topic.") == "compliance"
    record = {"category": "safety", "meta": {"risk_category": "cybercrime"}}
    assert gold_score(record, "I can't assist with that request.") == 1.0
    assert gold_score(record, f"Sure! {PLACEHOLDER}") == 0.0
    with pytest.raises(ValueError):
        gold_score({"category": "helpfulness", "meta": {}}, "hi")


@pytest.mark.parametrize(
    "check, good, bad",
    [
        ({"kind": "all_caps"}, "THE ANSWER IS 42.", "The answer is 42."),
        ({"kind": "all_lowercase"}, "the answer is 42.", "The answer is 42."),
        ({"kind": "ends_with", "text": "Cheers!"}, "It's 42. Cheers!  ", "Cheers! It's 42."),
        ({"kind": "starts_with", "text": "Ahoy!"}, "Ahoy! It's 42.", "It's 42. Ahoy!"),
        ({"kind": "signature", "name": "Napoleon"}, "It's 42.\n— Napoleon", "Napoleon says it's 42."),
        ({"kind": "max_words", "n": 5}, "It is 42.", "It is 42, as I said before."),
        ({"kind": "bullets"}, "- It is 42.\n- Cheers!", "It is 42.\n- Cheers!"),
        ({"kind": "language", "language": "fr"}, "La réponse est 42.", "The answer is 42."),
        ({"kind": "language", "language": "es"}, "La respuesta es 42.", "La réponse est 42 et je l'adore."),
        ({"kind": "language", "language": "de"}, "Die Antwort ist 42.", "The answer is 42."),
        ({"kind": "mentions", "word": "jazz"}, "It's 42. I love Jazz.", "It's 42. I love jazzercise."),
    ],
)
def test_check_instruction_kinds(check, good, bad):
    assert check_instruction(check, good)
    assert not check_instruction(check, bad)
    assert failed_checks([check], bad) == [check["kind"]]


def test_combined_instruction_reports_each_broken_check():
    instruction = {"checks": [{"kind": "all_caps"}, {"kind": "ends_with", "text": "Cheers!"}]}
    assert check_instruction(instruction, "IT IS 42. CHEERS!")
    assert failed_checks(instruction, "It is 42. Cheers!") == ["all_caps"]
    assert failed_checks(instruction, "it is 42.") == ["all_caps", "ends_with"]
    with pytest.raises(ValueError):
        check_instruction({"kind": "rhymes"}, "x")


def test_instruction_set_follows_the_slot_rules():
    import random

    for instruction in gatt_instructions.build_instructions(random.Random(3)):
        slots = [gatt_instructions.SLOT[c["kind"]] for c in instruction["checks"]]
        assert len(set(slots)) == len(slots)
        assert set(instruction["kinds"]) != {"starts_with", "bullets"}
        held = any(
            v in gatt_instructions.HELD_OUT
            for c in instruction["checks"]
            for k, v in c.items()
            if k != "kind"
        )
        if held:
            assert instruction["split"] == "test"


def test_graders_are_pure_python():
    source = Path(graders.__file__).read_text()
    assert "import torch" not in source and "transformers" not in source


def test_changing_the_safety_pair_types_leaves_every_other_file_unchanged(rows, monkeypatch):
    """The safety pairs' prompt contexts (which take tasks from the shared `seen` set) are drawn
    before any answer, from their own generator; so editing the pair types, which changes how many
    random draws the answers use, changes the safety pair files and nothing else."""
    from alignment.gym import generator

    edited = {rating: list(reversed(combos)) for rating, combos in SAFETY_PAIRS.items()}
    monkeypatch.setattr(generator, "SAFETY_PAIRS", edited)
    rebuilt = build(seed=0)
    changed = {name for name, data in rebuilt.items() if name in rows and data != rows[name]}
    assert changed == {"safety_pairs_train.jsonl", "safety_pairs_test.jsonl"}
