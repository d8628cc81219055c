"""`paddock rm compare / evaluate / thresholds` end to end on tiny random RMs and 24 gym pairs.

Three RM layouts: a Paddock reward checkpoint, a transformers LlamaForSequenceClassification saved
elsewhere, and a LoRA adapter directory naming its base in paddock_base.txt.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from alignment.errors import PaddockError
from alignment.stats import mcnemar_exact
from reward_models.commands import add_commands
from reward_models.compare import (
    DataSpec,
    agreement_matrix,
    load_reward_model,
    paired_tests,
    preferences,
    rm_names,
)
from tests.conftest import tiny_config

GYM = Path(__file__).resolve().parents[1] / "data/gym"
DATA = [
    "--data", f"helpful=llama2:{GYM / 'helpfulness_pairs_test.jsonl'}",
    "--data", f"llama2:{GYM / 'safety_pairs_test.jsonl'}",
    "--max-pairs", "12",
]  # fmt: skip


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine two threads are 40x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(*argv: str):
    parser = argparse.ArgumentParser(prog="paddock")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture(scope="module")
def rms(tmp_path_factory, smollm2_tokenizer):
    """{"paddock": dir, "hf": dir, "lora": dir}: tiny random RMs that read the real SmolLM2 tokenizer."""
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaForSequenceClassification

    from alignment import save_checkpoint
    from alignment.base_model.modeling import HEADS

    root = tmp_path_factory.mktemp("rms")
    settings = dict(vocab_size=len(smollm2_tokenizer), pad_token_id=smollm2_tokenizer.pad_token_id)
    config = tiny_config(**settings)
    torch.manual_seed(0)
    paddock = save_checkpoint(HEADS["reward"](config), root / "paddock/model", smollm2_tokenizer)
    torch.manual_seed(1)
    LlamaForSequenceClassification(tiny_config(**settings, num_labels=1)).save_pretrained(root / "hf")
    smollm2_tokenizer.save_pretrained(root / "hf")
    torch.manual_seed(2)
    base_model = HEADS["reward"](config)
    base = save_checkpoint(base_model, root / "lora-base", smollm2_tokenizer)
    lora_config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], modules_to_save=["score"])
    lora = get_peft_model(base_model, lora_config)
    for name, p in lora.named_parameters():
        if "lora_B" in name:
            p.data.normal_(0, 0.5)  # B starts at zero; make the adapter change something
    lora.save_pretrained(root / "lora")
    (root / "lora/paddock_base.txt").write_text(f"{base}\n")
    return {"paddock": str(paddock), "hf": str(root / "hf"), "lora": str(root / "lora"), "lora_model": lora}


def test_loads_all_three_layouts(rms, smollm2_tokenizer):
    ids = torch.tensor([smollm2_tokenizer.encode("Hello there, how are you?")])
    hf_model = load_reward_model(rms["hf"])
    assert hf_model(input_ids=ids).logits.shape == (1, 1)
    adapted = load_reward_model(rms["lora"])
    want = rms["lora_model"].eval()(input_ids=ids).logits
    torch.testing.assert_close(adapted(input_ids=ids).logits, want, rtol=1e-4, atol=1e-4)
    base = load_reward_model((Path(rms["lora"]) / "paddock_base.txt").read_text().strip())
    assert not torch.allclose(base(input_ids=ids).logits, want)  # the adapter was applied


def test_refuses_a_checkpoint_without_a_reward_head(tmp_path, smollm2_tokenizer):
    from alignment import save_checkpoint
    from alignment.base_model.modeling import HEADS

    config = tiny_config(vocab_size=len(smollm2_tokenizer), num_hidden_layers=1)
    lm = save_checkpoint(HEADS["causal_lm"](config), tmp_path / "sft", smollm2_tokenizer)
    with pytest.raises(PaddockError, match="no reward head"):
        load_reward_model(lm)
    with pytest.raises(PaddockError, match="no such checkpoint"):
        load_reward_model(tmp_path / "missing")


def test_compare_writes_reports(rms, tmp_path):
    out = tmp_path / "report"
    run("rm", "compare", rms["paddock"], rms["hf"], rms["paddock"], *DATA, "--out", str(out))
    result = json.loads((out / "compare.json").read_text())
    names = list(result["rms"])
    assert result["test_sets"] == {"helpful": 12, "safety_pairs_test": 12}
    assert len(names) == 3 and len(set(names)) == 3  # the same path twice still gets two names
    for a in names:
        assert result["agreement"][a][a] == 1.0
    assert result["agreement"][names[0]][names[2]] == 1.0  # the same checkpoint scored twice
    for r in result["rms"].values():
        s = r["summary"]
        assert s["n"] == 24 and s["accuracy_by_category"]["safety"]["n"] == 12
        assert list(s["accuracy_by_test_set"]) == ["helpful", "safety_pairs_test"]
        assert sum(c["n"] for c in s["accuracy_by_rating"].values()) == 24
        assert s["gold_agreement"]["n"] > 0
        for png in s["plots"].values():
            assert (out / png).read_bytes()[:4] == b"\x89PNG"

    md = (out / "report.md").read_text()
    table7 = [line for line in md.splitlines() if line.startswith("| RM |")]
    assert table7 == ["| RM | helpful | safety_pairs_test | overall |"]
    for name in names:
        assert re.search(rf"^\| {re.escape(name)} \| \d", md, re.M), name  # a Table 7 row per RM
        assert f"## RM {name}" in md
    table8_header = (
        "| test set | significantly_better | better | slightly_better | negligibly_better | overall |"
    )
    assert md.count(table8_header) == 3
    assert md.count("\n| all |") == 3 * 2  # Table 8 and gold agreement, per RM
    assert "(n=12)" in md and "[" in md  # counts and intervals in the cells

    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    sources = re.findall(r'<img src="([^"]+)"', page)
    assert len(sources) == 6 and all((out / s).is_file() and "/" not in s for s in sources)
    assert "<script" not in page and "http" not in page


def test_evaluate_and_thresholds_commands(rms, tmp_path, capsys):
    run("rm", "evaluate", rms["lora"], *DATA, "--out", str(tmp_path / "eval"))
    s = json.loads((tmp_path / "eval/summary.json").read_text())
    for key in (
        "accuracy",
        "accuracy_by_rating",
        "accuracy_by_category",
        "accuracy_by_test_set",
        "accuracy_by_test_set_and_rating",
        "calibration",
        "gold_agreement",
    ):
        assert key in s
    assert (tmp_path / "eval/reliability.png").is_file() and (
        tmp_path / "eval/score_histograms.png"
    ).is_file()

    safety = ["--data", f"llama2:{GYM / 'safety_pairs_test.jsonl'}", "--max-pairs", "6"]
    run("rm", "thresholds", rms["paddock"], *safety, "--out", str(tmp_path / "thr"))
    report = json.loads((tmp_path / "thr/safety_thresholds.json").read_text())
    assert report["paper_threshold"]["responses"] == 12 and report["paper_threshold"]["threshold"] == 0.15
    assert "paper's t=0.15" in capsys.readouterr().out
    with pytest.raises(PaddockError, match="safety labels|chosen_safe"):
        run(
            "rm",
            "thresholds",
            rms["paddock"],
            "--data",
            f"llama2:{GYM / 'helpfulness_pairs_test.jsonl'}",
            "--max-pairs",
            "2",
            "--out",
            str(tmp_path / "thr2"),
        )


def test_evaluate_rm_api(rms, tmp_path, smollm2_tokenizer):
    from alignment.data.loading import load_preferences
    from reward_models.evaluation import evaluate_rm

    pairs = load_preferences(GYM / "safety_pairs_test.jsonl", "llama2").pairs[:6]
    s = evaluate_rm(
        load_reward_model(rms["paddock"]),
        smollm2_tokenizer,
        {"safety": pairs},
        tmp_path,
        style="llama2",
        batch_size=4,
    )
    assert s["n"] == 6 and s["accuracy_by_test_set"]["safety"]["n"] == 6
    assert all((tmp_path / f).is_file() for f in s["plots"].values())


def test_small_helpers():
    assert DataSpec.parse("llama2:a/b.jsonl") == DataSpec("b", "llama2", "a/b.jsonl")
    assert DataSpec.parse("Meta Safety=hh-rlhf:x=y.jsonl.gz") == DataSpec(
        "Meta Safety", "hh-rlhf", "x=y.jsonl.gz"
    )
    with pytest.raises(PaddockError, match="ADAPTER:PATH"):
        DataSpec.parse("just/a/path.jsonl")
    assert rm_names(["/r/a/rm/model", "/r/b/rm/model"]) == ["a/rm/model", "b/rm/model"]
    assert rm_names(["/r/a/model", "/r/hf", "/r/a/model"]) == ["model", "hf", "model#2"]
    prefs = {"x": preferences([1, 2, 3], [0, 3, 3]), "y": preferences([1, 1, 1], [0, 0, 0])}
    assert agreement_matrix(prefs) == {"x": {"x": 1.0, "y": 1 / 3}, "y": {"x": 1 / 3, "y": 1.0}}


def test_mcnemar_exact_hand_worked():
    """Under equal accuracy each discordant pair is a fair coin.
    5 vs 0: n=5, P(X<=0) = 1/32, two-sided 2/32 = 0.0625.
    3 vs 1: n=4, P(X<=1) = (1+4)/16, two-sided 10/16 = 0.625.
    1 vs 1: P(X<=1) = 3/4, doubled 1.5, capped at 1. No discordant pairs: no evidence, p = 1."""
    assert mcnemar_exact(5, 0) == pytest.approx(0.0625)
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625)
    assert mcnemar_exact(3, 1) == pytest.approx(0.625)
    assert mcnemar_exact(1, 1) == 1.0
    assert mcnemar_exact(0, 0) == 1.0


def test_paired_tests_count_only_discordant_pairs():
    """A right on pairs 0,1,3 and B on 0 only: A alone on 2 pairs, B alone on none, so p = 2/4 = 0.5;
    the shared right (0) and shared wrong (2) pairs say nothing about which RM is better."""
    correct = {
        "a": {"t": np.array([True, True, False, True])},
        "b": {"t": np.array([True, False, False, False])},
    }
    (row,) = paired_tests(correct)
    assert (row["a"], row["b"], row["test_set"], row["n"]) == ("a", "b", "t", 4)
    assert (row["only_a"], row["only_b"]) == (2, 0)
    assert row["accuracy_a"] == 0.75 and row["accuracy_b"] == 0.25
    assert row["p_value"] == pytest.approx(0.5)


def test_paired_outcomes_add_a_set_without_negligibly_better_pairs():
    """Four pairs rated better, negligibly, slightly, negligibly; the RM is right on 0 and 1 (chosen
    above rejected), wrong on 2 (below) and on 3 (a tie). The full set keeps all four; "with a
    preference" keeps pairs 0 and 2: [right, wrong]. A set with no negligibly-better pair, or only
    such pairs, gets no second entry (it would repeat the first or be empty)."""
    from alignment.data.records import PreferencePair, Rating
    from reward_models.compare import WITH_PREFERENCE, paired_outcomes

    def pairs(*ratings):
        return [
            PreferencePair([{"role": "user", "content": "q"}], "a", "b", rating=Rating(r)) for r in ratings
        ]

    rated = pairs("better", "negligibly_better", "slightly_better", "negligibly_better")
    out = paired_outcomes(
        {
            "mixed": (rated, [2.0, 1.0, 0.0, 0.5], [1.0, 0.0, 1.0, 0.5]),
            "plain": (pairs("better", "better"), [1.0, 0.0], [0.0, 1.0]),
            "ties": (pairs("negligibly_better"), [1.0], [0.0]),
        }
    )
    assert list(out) == ["mixed", f"mixed, {WITH_PREFERENCE}", "plain", "ties"]
    assert out["mixed"].tolist() == [True, True, False, False]
    assert out[f"mixed, {WITH_PREFERENCE}"].tolist() == [True, False]
