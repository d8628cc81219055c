"""The reward-model stage learns: on a task a tiny model can learn (the chosen answer of every pair
says it is sure, the rejected one that it does not know), held-out accuracy ends far above chance.
A falling loss alone could come from the head's bias; accuracy on unseen prompts cannot."""

from __future__ import annotations

import json
import math
import random

import yaml

from tests.test_pipeline import paddock, tiny_checkpoint  # noqa: F401 (a fixture)

TOPICS = ["rivers", "planets", "bread", "chess", "violins", "tides", "ferns", "glaciers", "owls", "copper"]


def pairs(seed: int, n: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        topic, number = rng.choice(TOPICS), rng.randint(2, 999)
        rows.append(
            {
                "prompt": [{"role": "user", "content": f"Tell me fact {number} about {topic}."}],
                "chosen": f"Sure. Fact {number}: {topic} are remarkable, and here is why.",
                "rejected": "I do not know anything about that.",
                "rating": rng.choice(["significantly_better", "better"]),
                "category": "helpfulness",
            }
        )
    return rows


def binomial_tail(k: int, n: int) -> float:
    """P(X >= k) for X ~ Bin(n, 1/2): the chance a coin-flipping RM gets k or more right."""
    return sum(math.comb(n, i) for i in range(k, n + 1)) / 2**n


def test_reward_model_accuracy_on_held_out_prompts_is_far_above_chance(tmp_path, tiny_checkpoint):  # noqa: F811
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs(0, 96)))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pairs(1, 40)))
    recipe = {
        "run_name": "rm",
        "output_dir": str(tmp_path / "runs"),
        "model": {"name_or_path": str(tiny_checkpoint), "precision": "fp32"},
        "logging": {"report_to": ["none"], "progress": False},
        "stages": [
            {
                "type": "reward_model",
                "learning_rate": 3e-3,
                "max_steps": 24,
                "batch_size": 8,
                "max_length": 64,
                "min_warmup_steps": 2,
                "data": {
                    "sources": [{"path": str(tmp_path / "train.jsonl")}],
                    "test_sources": [{"path": str(tmp_path / "test.jsonl"), "name": "held_out"}],
                },
            }
        ],
    }
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    result = paddock("run", str(tmp_path / "recipe.yaml"))
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "runs/rm/reward_model/summary.json").read_text())
    held_out = summary["accuracy_by_test_set"]["held_out"]
    correct = round(held_out["accuracy"] * held_out["n"])
    assert held_out["n"] == 40 and correct >= 34, held_out  # 85 %
    assert binomial_tail(correct, 40) < 1e-5
