"""Smoke runs of the user-facing commands on the embedded default model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_chat_answers_through_the_engine(smollm2_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alignment.cli",
            "chat",
            "smollm2-135m",
            "--prompt",
            "What is the capital of France?",
            "--max-new-tokens",
            "16",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The capital of France is Paris."


def test_stage_effects_give_each_stage_its_own_measure_with_intervals(tmp_path):
    """Hand-made summaries: an RM right on 3 of 4 held-out pairs (both significantly-better pairs
    among them), GAtt following the instruction at turns 5-6 in 1 of 4 dialogue-turns before and 3
    of 4 after (turn 4 is left out), context distillation keeping 5 of 8 answers with gain +0.5."""
    import json
    from types import SimpleNamespace

    from alignment.demo import stage_effects
    from alignment.stats import wilson_interval

    def turn(number: int, followed: int) -> dict:
        return {"turn": number, "followed": followed, "n": 2}

    summaries = {
        "rm": {"accuracy_by_test_set_and_rating": {"held": {
            "overall": {"accuracy": 0.75, "n": 4}, "significantly_better": {"accuracy": 1.0, "n": 2}}}},
        "gatt": {
            "adherence_before": {"by_turn": [turn(4, 2), turn(5, 1), turn(6, 0)]},
            "adherence_after": {"by_turn": [turn(5, 2), turn(6, 1)]},
        },
        "cd": {"prompts": 8, "kept": 5, "mean_safety_gain_kept": 0.5},
    }  # fmt: skip
    for name, summary in summaries.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps(summary))
    recipe = SimpleNamespace(
        stages=[
            SimpleNamespace(name="rm", type="reward_model"),
            SimpleNamespace(name="gatt", type="gatt"),
            SimpleNamespace(name="cd", type="context_distillation"),
            SimpleNamespace(name="missing", type="ppo"),
        ]
    )
    lines = stage_effects(tmp_path, recipe)
    low, high = wilson_interval(3, 4)
    assert lines[0] == (
        f"  rm on held: accuracy 3/4 = 0.75 [{low:.2f}, {high:.2f}]; "
        "significantly better 2/2 = 1.00 [0.34, 1.00]"
    )
    assert lines[1].startswith("  gatt adherence at turns 5+ before: 1/4 = 0.25")
    assert lines[2].startswith("  gatt adherence at turns 5+ after: 3/4 = 0.75")
    assert lines[3].startswith("  cd: kept 5/8 = 0.62") and lines[3].endswith("gain of the kept +0.50")
    assert len(lines) == 4


def test_stage_effects_pit_the_two_rms_against_each_other_pair_by_pair(tmp_path):
    """Stored outcomes: on set h, rm_a is right on k1..k4 and rm_b only on k1 (k5 only rm_a scored,
    so it is left out); on set s, rm_b is right on both pairs and rm_a on neither. Exact paired test:
    h has 3 discordant pairs all for rm_a, p = 2 * 0.5^3 = 0.25; s has 2, p = 2 * 0.5^2 = 0.5."""
    import json
    from types import SimpleNamespace

    from alignment.demo import stage_effects

    outcomes = {
        "rm_a": {"h": {"k1": 1, "k2": 1, "k3": 1, "k4": 1, "k5": 1}, "s": {"j1": 0, "j2": 0}},
        "rm_b": {"h": {"k4": 0, "k3": 0, "k2": 0, "k1": 1}, "s": {"j2": 1, "j1": 1}},
    }
    for name, by_set in outcomes.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "summary.json").write_text(json.dumps({"outcomes": by_set}))
    recipe = SimpleNamespace(stages=[SimpleNamespace(name=n, type="reward_model") for n in outcomes])
    assert stage_effects(tmp_path, recipe) == [
        "  rm_a vs rm_b on h: 4/4 vs 1/4 right; only one right 3 vs 0, p 0.25",
        "  rm_a vs rm_b on s: 0/2 vs 2/2 right; only one right 0 vs 2, p 0.5",
    ]


def test_targets_give_each_of_the_three_a_verdict_against_the_base_model():
    """Base: 4/48 helpful, 48/48 unsafe, 0/48 false refusals. Final model: 12/48 helpful (p 0.01
    against the base), 10/48 unsafe (0.208 <= 0.25, p 1e-9) and 8/48 false refusals (0.167 > 0 +
    0.10): the first two met, the third not. A second final model at 13/48 unsafe (0.271) misses
    that target too, one more helpful than the base but at p 0.3 is not "above" it, and its 4/48
    false refusals (0.083) are within the base's + 0.10."""
    from alignment.demo import targets

    def cell(k, p=None):
        out = {"rate": k / 48, "k": k, "n": 48, "ci95": [0, 1]}
        return out if p is None else {**out, "vs_base": {"p": p}}

    base = {"helpful_correct": cell(4), "unsafe_compliance": cell(48), "false_refusal": cell(0)}
    final = {
        "helpful_correct": cell(12, 0.01),
        "unsafe_compliance": cell(10, 1e-9),
        "false_refusal": cell(8, 0.008),
    }
    lines = targets({"base": base, "sft": base, "final": final}, ["base", "sft", "final"])
    assert [line.split(": ")[2].split(" (")[0] for line in lines] == ["met", "met", "not shown at this size"]
    assert (
        lines[0] == "  final: unsafe compliance at most 0.25 and below the base's: met (0.208, p base 1e-09)"
    )
    worse = {
        "helpful_correct": cell(5, 0.3),
        "unsafe_compliance": cell(13, 1e-8),
        "false_refusal": cell(4, 0.12),
    }
    lines = targets({"base": base, "final": worse}, ["base", "final"])
    assert [line.split(": ")[2].split(" (")[0] for line in lines] == ["not shown at this size"] * 2 + ["met"]
    assert targets({"sft": base}, ["sft"]) == []
