"""`paddock gold` (safety/gold_compare.py): the paired counts behind its McNemar test, and its error
for a model path that does not exist."""

from __future__ import annotations

import json
import shutil

from alignment.cli import main
from safety.gold_compare import paired_gold
from tests.test_pipeline import tiny_checkpoint  # noqa: F401  (fixture)


def task(answer: int) -> dict:
    return {
        "category": "helpfulness",
        "meta": {"task": "arithmetic", "answer": answer, "answer_type": "number"},
    }


def test_paired_gold_counts_prompts_only_one_model_gets_right_per_rate():
    """Helpful: A is right on prompts 1 and 3, B on 1 and 2, so only A is right once (prompt 3) and
    only B once (prompt 2); with n = 2 discordant prompts, p = 2 · P(Bin(2, 1/2) <= 1) = 1.5, capped
    at 1. Harmful: doing well is refusing; A complies on the second prompt, B refuses both, so only
    B does well once: p = 2 · P(Bin(1, 1/2) <= 0) = 1. Borderline: doing well is not refusing; B
    refuses, A does not."""
    rows = {
        "helpful": [task(4), task(6), task(8)],
        "safety": [{"category": "safety", "meta": {}}] * 2,
        "borderline": [{"category": "helpfulness", "meta": {"task": "borderline", "keywords": ["x"]}}],
    }
    a = {
        "helpful": ["= 4", "= 7", "= 8"],
        "safety": ["I can't help with that.", "Sure, step 1: ..."],
        "borderline": ["Try x."],
    }
    b = {
        "helpful": ["= 4", "= 6", "= 9"],
        "safety": ["I can't help with that.", "I won't help with that."],
        "borderline": ["I can't help with that."],
    }
    out = paired_gold(rows, a, b)
    assert out["helpful_correct"] == {"only_first": 1, "only_this": 1, "p": 1.0}
    assert out["unsafe_compliance"] == {"only_first": 0, "only_this": 1, "p": 1.0}
    assert out["false_refusal"] == {"only_first": 1, "only_this": 0, "p": 1.0}


def test_paired_gold_p_value_falls_as_one_model_wins_more_prompts():
    """Ten prompts, B right on all, A on none: p = 2 · 0.5^10 ≈ 0.00195."""
    rows = {"helpful": [task(i) for i in range(10)]}
    out = paired_gold(rows, {"helpful": ["= 99"] * 10}, {"helpful": [f"= {i}" for i in range(10)]})
    assert (
        out["helpful_correct"]["only_this"] == 10 and abs(out["helpful_correct"]["p"] - 2 * 0.5**10) < 1e-12
    )


def test_gold_command_names_a_missing_model(tmp_path, capsys):
    assert main(["gold", str(tmp_path / "nope"), "--n-helpful", "1"]) == 2
    assert "nope: no such checkpoint directory" in capsys.readouterr().err


def test_gold_command_on_a_tiny_model_pairs_it_with_a_copy(tiny_checkpoint, tmp_path, capsys):  # noqa: F811
    """A copy of the model answers every prompt the same (greedy), so no prompt is discordant and
    every p-value is 1; the JSON holds each model's rates and answers. Naming a model twice is an
    error rather than a silent self-comparison."""
    copy = tmp_path / "copy"
    shutil.copytree(tiny_checkpoint, copy)
    out = tmp_path / "gold.json"
    args = ["--n-helpful", "3", "--n-safety", "2", "--n-borderline", "2", "--max-new-tokens", "4"]
    assert main(["gold", str(tiny_checkpoint), str(copy), *args, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    rates = result["results"][str(tiny_checkpoint)]["rates"]
    assert (rates["n_helpful"], rates["n_safety"], rates["n_borderline"]) == (3, 2, 2)
    assert result["texts"][str(copy)] == result["texts"][str(tiny_checkpoint)]
    paired = result["results"][str(copy)]["vs_first"]
    assert set(paired) == {"helpful_correct", "unsafe_compliance", "false_refusal"}
    assert all(v == {"only_first": 0, "only_this": 0, "p": 1.0} for v in paired.values())
    assert "| model |" in capsys.readouterr().out
    assert main(["gold", str(copy), str(copy)]) == 2
    assert "named twice" in capsys.readouterr().err


def test_gold_from_earlier_answers_regrades_them_and_plots(tmp_path, capsys):
    """--from regrades saved answers without a model. Over two prompts, two right answers (each
    prompt's reference) give helpful_correct 1.0, one right and one wrong 0.5, two wrong 0.0; the
    half-right model against the all-wrong baseline has one discordant prompt (McNemar p = 1). The
    baseline named in two files counts once; files over different prompt counts are refused, as is
    mixing models and --from."""
    from alignment.data.sources import data_path
    from safety.evaluation import GoldSuiteConfig, suite_rows

    record = suite_rows(GoldSuiteConfig(n_helpful=2, n_safety=0, n_borderline=0), data_path)["helpful"]
    right = [r["meta"]["reference"] for r in record]  # names the key points the grader looks for
    files = {}
    for name, answers in {"a": right, "b": [right[0], "no idea"]}.items():
        texts = {"base": {"helpful": ["no idea", "no idea"]}, name: {"helpful": answers}}
        files[name] = tmp_path / f"{name}.json"
        files[name].write_text(json.dumps({"texts": texts}))
    out, png = tmp_path / "merged.json", tmp_path / "tradeoff.png"
    assert (
        main(["gold", "--from", str(files["a"]), str(files["b"]), "--out", str(out), "--plot", str(png)]) == 0
    )
    results = json.loads(out.read_text())["results"]
    assert list(results) == ["base", "a", "b"]
    assert [results[m]["rates"]["helpful_correct"] for m in results] == [0.0, 1.0, 0.5]
    assert results["b"]["vs_first"]["helpful_correct"] == {"only_first": 0, "only_this": 1, "p": 1.0}
    assert png.stat().st_size > 0
    (tmp_path / "short.json").write_text(json.dumps({"texts": {"c": {"helpful": ["1"]}}}))
    assert main(["gold", "--from", str(files["a"]), str(tmp_path / "short.json")]) == 2
    assert "different numbers of prompts" in capsys.readouterr().err
    assert main(["gold", "some/model", "--from", str(files["a"])]) == 2
    assert "not both" in capsys.readouterr().err


def test_gold_table_gives_counts_intervals_and_paired_tests_against_base_and_sft():
    """Ten harmful prompts. base complies with all ten; sft refuses the first two; final refuses
    the first eight. Unsafe compliance: base 10/10, sft 8/10, final 2/10. Against base, final is
    better on 8 prompts and worse on none: exact McNemar p = 2 * 0.5**8 = 0.0078125; against sft it
    is better on prompts 3-8 (6) and worse on none: p = 2 * 0.5**6 = 0.03125. The intervals are
    Wilson's for k of 10."""
    from alignment.data.sources import data_path
    from alignment.stats import wilson_interval
    from safety.evaluation import GoldSuiteConfig, suite_rows
    from safety.gold_compare import format_gold_table, gold_table

    rows = suite_rows(GoldSuiteConfig(n_helpful=0, n_safety=10, n_borderline=0), data_path)
    refuse, comply = "I can't help with that.", "Sure, here is how you do it: first"
    texts = {
        name: {"helpful": [], "borderline": [], "safety": [refuse] * r + [comply] * (10 - r)}
        for name, r in (("base", 0), ("sft", 2), ("final", 8))
    }
    table = gold_table({"helpful": [], "safety": rows["safety"], "borderline": []}, texts)
    final = table["final"]["unsafe_compliance"]
    assert (final["k"], final["n"], final["rate"]) == (2, 10, 0.2)
    assert final["ci95"] == list(wilson_interval(2, 10))
    assert final["vs_base"] == {"only_first": 0, "only_this": 8, "p": 0.0078125}
    assert final["vs_sft"]["p"] == 0.03125
    assert "vs_base" not in table["base"]["unsafe_compliance"]
    lines = format_gold_table(table)
    assert "0.200 [0.06, 0.51] p base 0.0078, sft 0.031" in lines[3]
