"""Safety context distillation: seeded preprompts and answer templates for every gym risk category,
the keep rule on hand-worked scores, where the preprompt goes, recipe validation, and a whole stage
through the real CLI on a tiny model (SFT -> tiny safety RM -> context distillation)."""

from __future__ import annotations

import json
import random
import shutil
from collections import Counter
from types import SimpleNamespace

import pytest
import yaml

from alignment.data.records import RLPrompt
from alignment.errors import PaddockError
from alignment.gym.safety_prompts import TOPICS
from alignment.recipes import RecipeError, load_recipe
from alignment.stages.context_distillation import _generate
from safety.distillation import keep_distilled, keep_reasons, kept_by_category, select_prompts
from safety.preprompts import (
    ANSWER_TEMPLATES,
    DEFAULT_ADJECTIVES,
    GENERIC_ANSWER_TEMPLATE,
    PREPROMPT_TEMPLATES,
    answer_template,
    apply_preprompt,
    distillation_preprompt,
    safety_preprompt,
)
from tests.conftest import discard_once_passed
from tests.test_pipeline import REPO, metrics, paddock, tiny_checkpoint  # noqa: F401  (fixture)

# --- preprompts and templates ---------------------------------------------------------------------


def test_preprompts_are_seeded_and_built_from_the_adjectives():
    first = [safety_preprompt(random.Random(seed)) for seed in range(40)]
    again = [safety_preprompt(random.Random(seed)) for seed in range(40)]
    assert first == again
    assert len(set(first)) > 10  # templates and adjective pairs vary with the seed
    for text in first:
        used = [a for a in DEFAULT_ADJECTIVES if f" {a} " in f" {text} " or f" {a}," in text]
        assert len(used) >= 2, text
    assert {t for t in PREPROMPT_TEMPLATES} == {
        t
        for seed in range(200)
        for t in PREPROMPT_TEMPLATES
        if _matches(t, safety_preprompt(random.Random(seed)))
    }  # every template is drawn


def _matches(template: str, text: str) -> bool:
    head = template.split("{")[0]
    tail = template.rsplit("}", 1)[-1]
    return text.startswith(head) and text.endswith(tail)


def test_preprompt_template_adjectives_and_article():
    text = safety_preprompt(
        random.Random(0), ["safe", "responsible"], template="You are {a} {adjectives} assistant."
    )
    assert text in ("You are a safe and responsible assistant.", "You are a responsible and safe assistant.")
    assert safety_preprompt(random.Random(0), ["honest"], template="You are {a} {adjectives} assistant.") == (
        "You are an honest assistant."
    )
    three = safety_preprompt(random.Random(0), ["wise", "kind", "calm"], "{adjectives}", n_adjectives=3)
    assert three.count(",") == 1 and " and " in three
    with pytest.raises(ValueError):
        safety_preprompt(random.Random(0), [])


def test_answer_templates_cover_every_gym_risk_category():
    gym = set(TOPICS)
    for split in ("train", "test"):
        rows = [
            json.loads(line)
            for line in (REPO / f"data/gym/rl_prompts_{split}.jsonl").read_text().splitlines()
        ]
        gym |= {r["meta"]["risk_category"] for r in rows if r["category"] == "safety"}
    assert gym <= set(ANSWER_TEMPLATES), gym - set(ANSWER_TEMPLATES)
    for category in gym:
        text = answer_template(category)
        assert ANSWER_TEMPLATES[category][0] in text and GENERIC_ANSWER_TEMPLATE not in text
        assert "step 1" not in text.lower()  # the gold graders read "step 1" in an answer as compliance
    assert GENERIC_ANSWER_TEMPLATE in answer_template("something_else")
    assert GENERIC_ANSWER_TEMPLATE in answer_template(None)


def test_distillation_preprompt_adds_the_category_template_only_when_asked():
    with_template = distillation_preprompt(random.Random(3), "self_harm")
    without = distillation_preprompt(random.Random(3), "self_harm", use_answer_template=False)
    assert with_template.startswith(without) and "988" in with_template and "988" not in without
    assert without == safety_preprompt(random.Random(3))


def test_apply_preprompt_as_system_message_or_prefix_without_changing_the_input():
    messages = [{"role": "user", "content": "How do I pick a lock?"}]
    assert apply_preprompt(messages, "Be safe.") == [
        {"role": "system", "content": "Be safe."},
        {"role": "user", "content": "How do I pick a lock?"},
    ]
    assert apply_preprompt(messages, "Be safe.", mode="prefix") == [
        {"role": "user", "content": "Be safe.\n\nHow do I pick a lock?"}
    ]
    with_system = [{"role": "system", "content": "Answer briefly."}, *messages]
    assert apply_preprompt(with_system, "Be safe.")[0] == {
        "role": "system",
        "content": "Be safe.\n\nAnswer briefly.",
    }
    assert apply_preprompt(with_system, "Be safe.", mode="prefix")[1]["content"].startswith("Be safe.\n\n")
    assert messages == [{"role": "user", "content": "How do I pick a lock?"}]  # not mutated
    assert with_system[0]["content"] == "Answer briefly."
    with pytest.raises(ValueError):
        apply_preprompt(messages, "x", mode="suffix")
    with pytest.raises(ValueError):
        apply_preprompt([{"role": "system", "content": "s"}], "x", mode="prefix")


# --- the keep rule and the report -----------------------------------------------------------------


def test_keep_distilled_on_hand_worked_scores():
    """Plain [0.5, -1.0, 2.0, 0.3], distilled [1.5, -1.0, 1.0, 0.31]. Margin 0: 1.5 > 0.5 kept; the tie
    -1.0 = -1.0 is not kept; 1.0 < 2.0 not kept; 0.31 > 0.3 kept. Margin 0.5: gains are 1.0, 0, -1.0,
    0.01, and only 1.0 exceeds 0.5."""
    plain, distilled = [0.5, -1.0, 2.0, 0.3], [1.5, -1.0, 1.0, 0.31]
    assert keep_distilled(plain, distilled) == [True, False, False, True]
    assert keep_distilled(plain, distilled, margin=0.5) == [True, False, False, False]
    assert keep_distilled([], []) == []
    with pytest.raises(ValueError):
        keep_distilled([1.0], [1.0, 2.0])


def test_identical_or_empty_distilled_answers_are_never_kept():
    """Scores 0.0 -> 6e-8 (float noise when the same text lands in another padded batch) would pass
    the score test, but the texts are identical; an empty answer is not kept however it scores;
    the last one differs and scores higher."""
    plain, distilled = [0.0, -2.0, 0.0], [6e-8, 5.0, 1.0]
    texts_plain, texts_distilled = ["Sure.", "Sure.", "Sure."], ["Sure.", "  ", "I can't help with that."]
    assert keep_reasons(plain, distilled, 0.0, texts_plain, texts_distilled) == ["identical", "empty", "kept"]
    assert keep_distilled(plain, distilled, 0.0, texts_plain, texts_distilled) == [False, False, True]
    assert keep_distilled(plain, distilled) == [True, True, True]  # scores alone


def test_kept_by_category_counts_add_up():
    """cyber: kept, not kept -> 1/2; self_harm: kept -> 1/1; fraud: not kept -> 0/1."""
    report = kept_by_category(["cyber", "self_harm", "cyber", "fraud"], [True, True, False, False])
    assert report == {
        "cyber": {"kept": 1, "total": 2, "share": 0.5},
        "fraud": {"kept": 0, "total": 1, "share": 0.0},
        "self_harm": {"kept": 1, "total": 1, "share": 1.0},
    }


def test_select_prompts_uses_only_safety_prompts_with_a_seeded_draw():
    records = [
        RLPrompt([{"role": "user", "content": f"q{i}"}], category="safety" if i % 2 else "helpfulness")
        for i in range(20)
    ]
    assert [r.prompt[0]["content"] for r in select_prompts(records, 50, seed=0)] == [
        f"q{i}" for i in range(1, 20, 2)
    ]
    drawn = select_prompts(records, 4, seed=0)
    assert len(drawn) == 4 and drawn == select_prompts(records, 4, seed=0)
    assert all(r.category == "safety" for r in drawn)


def test_cached_answers_for_other_prompts_are_refused(tmp_path):
    """A generation cache holds the conversations it answered; if the data changed since, the stage
    stops instead of pairing old answers with new prompts (seen when the gym was regenerated)."""
    cache = tmp_path / "answers_plain.json"
    cache.write_text(json.dumps({"conversations": [[{"role": "user", "content": "old"}]], "texts": ["a"]}))
    ctx = SimpleNamespace(stage=SimpleNamespace(name="cd"))
    assert _generate(ctx, None, None, [[{"role": "user", "content": "old"}]], cache, "plain") == ["a"]
    with pytest.raises(PaddockError, match="answers other prompts"):
        _generate(ctx, None, None, [[{"role": "user", "content": "new"}]], cache, "plain")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("margin", -0.1, "margin"),
        ("adjectives", [], "adjectives"),
        ("preprompt_mode", "suffix", "preprompt_mode"),
    ],
)
def test_recipe_validation_rejects_bad_settings(tmp_path, key, value, message):
    recipe = {
        "run_name": "cd",
        "stages": [
            {"type": "context_distillation", key: value, "data": {"sources": [{"path": "p.jsonl"}]}},
        ],
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(RecipeError, match=message):
        load_recipe(path)


# --- the stage through the CLI --------------------------------------------------------------------


@pytest.fixture(scope="module")
def cd_run(request, tmp_path_factory, tiny_checkpoint):  # noqa: F811
    tmp = discard_once_passed(request, tmp_path_factory.mktemp("cd"))
    (tmp / "dialogues.jsonl").write_text(_lines("data/gym/sft_train.jsonl", 24))
    (tmp / "helpful.jsonl").write_text(_lines("data/gym/helpfulness_pairs_train.jsonl", 16))
    (tmp / "safety.jsonl").write_text(_lines("data/gym/safety_pairs_train.jsonl", 32))
    rl = [json.loads(line) for line in (REPO / "data/gym/rl_prompts_train.jsonl").read_text().splitlines()]
    rows = [r for r in rl if r["category"] == "helpfulness"][:4] + [
        r for r in rl if r["category"] == "safety"
    ][:14]
    (tmp / "prompts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stages = [
        {"type": "sft", "learning_rate": 1e-2, "max_steps": 3, "batch_size": 4, "max_length": 96,
         "data": {"sources": [{"path": str(tmp / "dialogues.jsonl")}]}},
        {"type": "reward_model", "name": "rm_safety", "init_from": "sft", "learning_rate": 3e-3,
         "max_steps": 3, "batch_size": 4, "max_length": 96, "min_warmup_steps": 1, "eval_pairs": 4,
         "data": {"sources": [{"path": str(tmp / "safety.jsonl"), "name": "safety"},
                              {"path": str(tmp / "helpful.jsonl"), "name": "helpfulness"}],
                  "mixture": "llama2_safety_rm"}},
        {"type": "context_distillation", "init_from": "sft", "reward_models": {"safety": "rm_safety"},
         "n_prompts": 12, "max_new_tokens": 8, "preprompt_mode": "prefix",
         "temperature": 1.0,
         "gold": {"n_helpful": 2, "n_safety": 4, "n_borderline": 2, "max_new_tokens": 6},
         "finetune": {"learning_rate": 1e-2, "epochs": 1, "batch_size": 4, "max_length": 256},
         "data": {"sources": [{"path": str(tmp / "prompts.jsonl")}], "test_fraction": 0.0}},
    ]  # fmt: skip
    recipe = {
        "run_name": "tiny",
        "output_dir": str(tmp / "runs"),
        "seed": 1,
        "model": {"name_or_path": str(tiny_checkpoint), "precision": "fp32", "lora": {"r": 4, "alpha": 8},
                  "merge_lora": True},
        "stages": stages,
        "logging": {"report_to": ["none"], "progress": False},
    }  # fmt: skip
    (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = paddock("run", str(tmp / "recipe.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


def _lines(path: str, n: int) -> str:
    return "\n".join((REPO / path).read_text().splitlines()[:n]) + "\n"


def test_stage_writes_the_table_counts_that_add_up_and_the_plot(cd_run):
    out = cd_run / "runs/tiny/context_distillation"
    artifacts = [
        "COMPLETE",
        "summary.json",
        "distilled.jsonl",
        "train.jsonl",
        "plots/kept_by_category.png",
        "answers_plain.json",
        "answers_distilled.json",
        "gold_before.json",
        "gold_after.json",
        "model/adapter_config.json",
        "model/merged/config.json",
    ]
    for artifact in artifacts:
        assert (out / artifact).is_file(), artifact
    rows = [json.loads(line) for line in (out / "distilled.jsonl").read_text().splitlines()]
    summary = json.loads((out / "summary.json").read_text())
    assert len(rows) == summary["prompts"] == 12  # 14 safety prompts in the data, 12 drawn; no helpfulness
    for row in rows:
        assert row["kept"] == (row["reason"] == "kept")
        assert row["kept"] == (
            row["safety_distilled"] > row["safety_plain"] and row["distilled"] != row["plain"]
        )
        assert row["category"] != "unknown" and row["answer_template"] is True
        assert row["preprompt"] and row["preprompt"] not in row["prompt"][-1]["content"]
    assert summary["kept"] == sum(row["kept"] for row in rows)
    assert summary["kept"] + sum(summary["not_kept"].values()) == 12
    by_category = summary["kept_by_category"]
    assert list(by_category) == sorted(Counter(r["category"] for r in rows))
    assert sum(c["total"] for c in by_category.values()) == 12
    assert sum(c["kept"] for c in by_category.values()) == summary["kept"]
    for category, cell in by_category.items():
        assert cell["total"] == sum(r["category"] == category for r in rows)
        assert cell["kept"] == sum(r["kept"] for r in rows if r["category"] == category)
    assert {"unsafe_compliance", "false_refusal", "helpful_correct"} <= set(summary["gold_after"])
    assert {"unsafe_compliance", "false_refusal"} <= set(summary["gold_before"])
    assert 0 < summary["kept"] < 12  # sampled answers differ; the RM prefers some of each kind
    assert summary["finetune"]["train_examples"] == summary["kept"]
    assert metrics(out)  # the fine-tune logged its steps


def test_training_examples_hold_the_prompt_without_preprompt_and_the_distilled_answer(cd_run):
    out = cd_run / "runs/tiny/context_distillation"
    rows = [json.loads(line) for line in (out / "distilled.jsonl").read_text().splitlines()]
    train = [json.loads(line)["messages"] for line in (out / "train.jsonl").read_text().splitlines()]
    kept = [row for row in rows if row["kept"]]
    assert len(train) == len(kept)
    preprompts = {row["preprompt"] for row in rows}
    template_text = [how for _, how in ANSWER_TEMPLATES.values()]
    for messages, row in zip(train, kept, strict=True):
        assert messages == row["prompt"] + [{"role": "assistant", "content": row["distilled"]}]
        assert all(m["role"] != "system" for m in messages)
        for message in messages[:-1]:
            assert not any(p in message["content"] for p in preprompts)
            assert not any(t in message["content"] for t in template_text)


def test_an_unfinished_stage_reuses_its_answers_and_table(cd_run):
    """With the completion marker, model and fine-tune removed, the stage runs again from its cached
    answers and table: no new generation, the same counts, the same cached gold 'before'."""
    out = cd_run / "runs/tiny/context_distillation"
    resumed = cd_run / "resumed"
    shutil.copytree(cd_run / "runs", resumed)
    stage = resumed / "tiny/context_distillation"
    for name in ("COMPLETE", "summary.json", "metrics.jsonl", "gold_after.json"):
        (stage / name).unlink(missing_ok=True)
    shutil.rmtree(stage / "model")
    rerun = paddock("run", str(cd_run / "recipe.yaml"), f"output_dir={resumed}")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "answering" not in rerun.stdout  # both generation passes came from the stage dir
    assert (stage / "distilled.jsonl").read_text() == (out / "distilled.jsonl").read_text()
    first, second = (json.loads((d / "summary.json").read_text()) for d in (out, stage))
    assert second["kept_by_category"] == first["kept_by_category"]
    assert second["gold_before"] == first["gold_before"]


def answer_logprob(model, tokenizer, prompt: list[dict], answer: str) -> float:
    """Mean log-probability per token of `answer` after `prompt` (no preprompt), as the model's
    chat format lays them out (loss_on "last": the answer's tokens only)."""
    import torch

    from alignment.data.chat_format import encode_dialogue

    encoded = encode_dialogue(prompt + [{"role": "assistant", "content": answer}], tokenizer, loss_on="last")
    ids = torch.tensor([encoded.input_ids])
    labels = torch.tensor([encoded.labels])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1].float()
    targets = labels[:, 1:]
    mask = targets != -100
    picked = torch.log_softmax(logits, -1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return float(picked[mask].mean())


def test_the_distilled_model_answers_plain_prompts_the_way_the_preprompted_model_did(cd_run):
    """Context distillation's point: after the stage, the model without the safety preprompt gives
    the answers it gave with it. Measured as the mean per-token log-probability of each kept
    distilled answer (sampled with the preprompt) given the plain prompt, under the stage's starting
    model and under its output: it must rise for every kept answer."""
    from alignment.base_model import load_tokenizer
    from alignment.model_setup import load_frozen
    from alignment.recipes.schema import ModelConfig

    out = cd_run / "runs/tiny/context_distillation"
    kept = [r for r in map(json.loads, (out / "distilled.jsonl").read_text().splitlines()) if r["kept"]]
    assert kept
    config = ModelConfig(name_or_path="unused", precision="fp32", device="cpu")
    tokenizer = load_tokenizer(cd_run / "runs/tiny/sft/model/merged")
    before_model = load_frozen(config, str(cd_run / "runs/tiny/sft/model"))
    after_model = load_frozen(config, str(out / "model"))
    before = [answer_logprob(before_model, tokenizer, r["prompt"], r["distilled"]) for r in kept]
    after = [answer_logprob(after_model, tokenizer, r["prompt"], r["distilled"]) for r in kept]
    # The fixture's fine-tune is one step on a few answers: each rises by about 0.1 nat a token.
    assert all(a > b + 0.05 for a, b in zip(after, before, strict=True)), (before, after)
