"""On-policy preference collection (alignment/stages/preference_collection.py): pairing graded
answers, the rows it writes, a resumed stage grading the same answers, and the recipe plumbing that
lets a later stage read its output (`{stage: ..., path: ...}` sources, model-less stages)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from types import SimpleNamespace

import pytest

from alignment.data import loading
from alignment.data.records import RLPrompt
from alignment.pipeline import stage_init
from alignment.recipes import load_recipe
from alignment.recipes.config import RecipeError
from alignment.stages import preference_collection as pc

ARITHMETIC = RLPrompt(
    [{"role": "user", "content": "Compute 12 × 3."}],
    source="gym/arithmetic",
    meta={"task": "arithmetic", "answer": 36, "answer_type": "number", "tolerance": 0.0},
)
HARMFUL = RLPrompt(
    [{"role": "user", "content": "How do I pick my neighbour's lock?"}],
    category="safety",
    source="gym/safety/criminal_activity",
    meta={"risk": "criminal_activity"},
)


def test_graded_pairs_spread_over_distinct_answers():
    """Answers a, b, a, c, d graded 1, 0, 1, 0, 1: a counts once, and the candidate pairs (higher
    grade first) are (a, b), (a, c), (d, b), (d, c). The first pick uses two answers; the second must
    then be the one candidate that uses neither, so 2 pairs cover all four answers. A third pick
    reuses one answer on each side; a cap above the 4 candidates gives all 4."""
    two = pc.graded_pairs(["a", "b", "a", "c", "d"], [1, 0, 1, 0, 1], max_pairs=2, rng=random.Random(0))
    assert {c for c, _ in two} == {"a", "d"} and {r for _, r in two} == {"b", "c"}
    three = pc.graded_pairs(["a", "b", "a", "c", "d"], [1, 0, 1, 0, 1], max_pairs=3, rng=random.Random(0))
    assert three[:2] == two and len(set(three)) == 3
    every = pc.graded_pairs(["a", "b", "a", "c", "d"], [1, 0, 1, 0, 1], max_pairs=9, rng=random.Random(0))
    assert sorted(every) == [("a", "b"), ("a", "c"), ("d", "b"), ("d", "c")]


def test_graded_pairs_order_three_levels_and_skip_equal_grades():
    """Grades h 1, g 0.5, r 0: the candidates are (h, g), (h, r), (g, r); equal grades (p, q both 1,
    or both 0) give nothing to compare."""
    pairs = pc.graded_pairs(["r", "g", "h"], [0, 0.5, 1], max_pairs=5, rng=random.Random(1))
    assert sorted(pairs) == [("g", "r"), ("h", "g"), ("h", "r")]
    assert len(pc.graded_pairs(["r", "g", "h"], [0, 0.5, 1], max_pairs=2, rng=random.Random(1))) == 2
    assert pc.graded_pairs(["p", "q"], [1, 1], max_pairs=2, rng=random.Random(0)) == []
    assert pc.graded_pairs(["p", "q"], [0, 0], max_pairs=2, rng=random.Random(0)) == []


def test_borderline_answers_grade_help_over_an_attempt_over_a_refusal():
    """For "How do I fire someone kindly?" with keywords privately/hr: naming a keyword helps (1), an
    answer that misses them is still an attempt (0.5), a refusal is 0. Task prompts keep the plain
    right/wrong grade."""
    borderline = RLPrompt(
        [{"role": "user", "content": "How do I fire someone kindly?"}],
        meta={"task": "borderline", "keywords": ["privately", "hr"]},
    )
    texts = ["Meet privately and be brief.", "Be nice about it.", "I can't help with firing someone."]
    assert pc.answer_grades(borderline, texts) == [1.0, 0.5, 0.0]
    assert pc.answer_grades(ARITHMETIC, ["12 × 3 = 36.", "I can't help with that."]) == [1.0, 0.0]


def test_draw_by_kind_keeps_each_kinds_split_proportion():
    """8 helpful prompts (6 train, 2 test) and 4 harmful (3, 1). Asking 4 helpful: round(4 · 2/8) = 1
    from test and 3 from train; `None` for safety takes all 4; borderline is not asked for."""
    helpful = [
        RLPrompt([{"role": "user", "content": f"q{i}"}], meta={"answer_type": "number"}) for i in range(8)
    ]
    harmful = [RLPrompt([{"role": "user", "content": f"h{i}"}], category="safety") for i in range(4)]
    train, test = pc.draw_by_kind(
        helpful[:6] + harmful[:3], helpful[6:] + harmful[3:], {"helpful": 4, "safety": None}, random.Random(0)
    )
    assert [pc.prompt_kind(r) for r in train] == ["helpful"] * 3 + ["safety"] * 3
    assert [pc.prompt_kind(r) for r in test] == ["helpful", "safety"]
    assert all(r in helpful[:6] + harmful[:3] for r in train)


def test_pair_rows_load_as_llama2_preferences_with_safety_labels(tmp_path):
    rows = pc.pair_records(HARMFUL, [("I can't help with that.", "Sure, step 1: ...")], "better")
    rows += pc.pair_records(ARITHMETIC, [("12 × 3 = 36.", "12 × 3 = 38.")], "better")
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    pairs = loading.load_preferences(path, "llama2").records
    assert [p.category.value for p in pairs] == ["safety", "helpfulness"]
    assert (pairs[0].chosen_safe, pairs[0].rejected_safe) == (True, False)
    assert (pairs[1].chosen_safe, pairs[1].rejected_safe) == (None, None)
    assert pairs[0].source == "onpolicy/gym/safety/criminal_activity"
    assert pairs[1].rating.value == "better" and pairs[1].meta["answer"] == 36


def test_prompt_kind_separates_tasks_borderline_and_harmful():
    borderline = RLPrompt(
        [{"role": "user", "content": "How do I fire someone kindly?"}], meta={"task": "borderline"}
    )
    assert [pc.prompt_kind(r) for r in (ARITHMETIC, borderline, HARMFUL)] == [
        "helpful",
        "borderline",
        "safety",
    ]


def fake_ctx(tmp_path: Path, **settings) -> SimpleNamespace:
    cfg = pc.PreferenceCollectionConfig(type="preference_collection", samples_per_prompt=2, **settings)
    return SimpleNamespace(stage=cfg, seed=0, dir=SimpleNamespace(root=tmp_path))


def test_collect_grades_answers_pairs_them_and_reuses_its_cache(tmp_path, monkeypatch):
    """Sampled answers 36 and 38 to 12 × 3, greedy 40: one right, two wrong, so with 2 pairs per
    prompt the right one is chosen twice and each wrong one rejected once. The harmful prompt's
    answers both refuse: no pair. A second call (a resumed stage) must grade the cached answers,
    not sample again."""
    calls = []

    def fake_sample(ctx, model, tokenizer, records, temperature, n, seed):
        calls.append(temperature)
        if temperature == 0.0:
            return ["The answer is 40.", "I can't help with that."]
        return ["The answer is 36.", "The answer is 38.", "I can't help with that.", "I won't do that."]

    monkeypatch.setattr(pc, "sample", fake_sample)
    ctx = fake_ctx(tmp_path)
    rows, report = pc.collect(ctx, None, None, [ARITHMETIC, HARMFUL], "train", random.Random(0))
    assert calls == [1.0, 0.0]
    assert [(r["chosen"], r["rejected"]) for r in rows] in (
        [("The answer is 36.", "The answer is 38."), ("The answer is 36.", "The answer is 40.")],
        [("The answer is 36.", "The answer is 40."), ("The answer is 36.", "The answer is 38.")],
    )
    assert report["by_kind"]["helpful"] == {
        "prompts": 1,
        "paired": 1,
        "pairs": 2,
        "passed": pytest.approx(1 / 3),
    }
    assert report["by_kind"]["safety"] == {"prompts": 1, "paired": 0, "pairs": 0, "passed": 1.0}
    again, _ = pc.collect(ctx, None, None, [ARITHMETIC, HARMFUL], "train", random.Random(0))
    assert calls == [1.0, 0.0] and again == rows


def test_collect_without_greedy_grades_only_the_samples(tmp_path, monkeypatch):
    monkeypatch.setattr(pc, "sample", lambda *a, **k: ["The answer is 36.", "The answer is 36."])
    rows, report = pc.collect(
        fake_ctx(tmp_path, greedy_candidate=False), None, None, [ARITHMETIC], "train", random.Random(0)
    )
    assert rows == [] and report["by_kind"]["helpful"]["passed"] == 1.0


def recipe_with(tmp_path: Path, rm_sources: list[dict], order=("collect", "rm")) -> Path:
    """sft, then the collection and RM stages in `order` (recipe loading reads no data files)."""
    data = {"sources": [{"path": str(tmp_path / "rows.jsonl")}]}
    stages = {
        "collect": {"type": "preference_collection", "name": "collect", "data": data},
        "rm": {"type": "reward_model", "name": "rm", "data": {"sources": rm_sources}},
    }
    recipe = {"run_name": "t", "output_dir": str(tmp_path), "stages": [{"type": "sft", "data": data}]}
    recipe["stages"] += [stages[name] for name in order]
    path = tmp_path / "recipe.yaml"
    path.write_text(json.dumps(recipe))
    return path


def test_a_source_may_name_an_earlier_stage_and_a_later_one_is_refused(tmp_path):
    good = load_recipe(recipe_with(tmp_path, [{"stage": "collect", "path": "pairs_train.jsonl"}]))
    assert good.stages[2].data.sources[0].stage == "collect"
    with pytest.raises(RecipeError, match="not an earlier stage"):
        load_recipe(
            recipe_with(tmp_path, [{"stage": "collect", "path": "pairs_train.jsonl"}], ("rm", "collect"))
        )
    with pytest.raises(RecipeError, match="'colect' is not an earlier stage.*collect"):
        load_recipe(recipe_with(tmp_path, [{"stage": "colect", "path": "pairs_train.jsonl"}]))


def test_a_stage_after_a_model_less_one_starts_from_the_model_before_it(tmp_path):
    recipe = load_recipe(recipe_with(tmp_path, [{"stage": "collect", "path": "pairs_train.jsonl"}]))
    assert stage_init(recipe, 2, tmp_path / "t") == str(tmp_path / "t" / "sft" / "model")


def test_an_unknown_prompt_kind_is_refused(tmp_path):
    path = recipe_with(tmp_path, [{"stage": "collect", "path": "pairs_train.jsonl"}])
    recipe = json.loads(path.read_text())
    recipe["stages"][1]["prompts"] = {"helpfull": 10}
    path.write_text(json.dumps(recipe))
    with pytest.raises(RecipeError, match="unknown prompt kind 'helpfull'"):
        load_recipe(path)
