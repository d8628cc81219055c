"""The whole pipeline through the real CLI on a tiny model, as recipes/llama2_chat.yaml chains it:
SFT -> both RMs -> rejection sampling -> Ghost Attention -> PPO -> context distillation ->
evaluation, LoRA with merged weights (the smoke run of the default test tier). The run has no
network: hub libraries offline plus a socket guard, so nothing in the pipeline reaches out.
Checks every artifact, the Figure 7 curve, the pool, the PPO metrics and plots, resume of a
killed PPO stage, and that the saved policy is a plain adapter (the critic adapter is not in it)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest
import torch
import yaml

from tests.conftest import discard_once_passed
from tests.test_pipeline import REPO, metrics, paddock, tiny_checkpoint  # noqa: F401  (fixture)


def lines(path: str, n: int) -> str:
    return "\n".join((REPO / path).read_text().splitlines()[:n]) + "\n"


def rm_stage(name: str, mixture: str) -> dict:
    return {
        "type": "reward_model",
        "name": name,
        "init_from": "sft",
        "learning_rate": 3e-3,
        "max_steps": 4,
        "batch_size": 4,
        "max_length": 96,
        "min_warmup_steps": 1,
        "eval_pairs": 8,
        "data": {
            "sources": [
                {"path": "helpful.jsonl", "name": "helpfulness"},
                {"path": "safety.jsonl", "name": "safety"},
            ],
            "mixture": mixture,
        },
    }


@pytest.fixture(scope="module")
def rl_run(request, tmp_path_factory, tiny_checkpoint):  # noqa: F811
    tmp = discard_once_passed(request, tmp_path_factory.mktemp("rl"))
    result = paddock("run", str(write_pipeline_recipe(tmp, tiny_checkpoint)), env=offline_env())
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp


def write_pipeline_recipe(tmp, tiny_checkpoint):  # noqa: F811
    """The whole pipeline at toy sizes on the tiny model, its data copied into `tmp`."""
    (tmp / "dialogues.jsonl").write_text(lines("data/gym/sft_train.jsonl", 32))
    (tmp / "helpful.jsonl").write_text(lines("data/gym/helpfulness_pairs_train.jsonl", 32))
    (tmp / "safety.jsonl").write_text(lines("data/gym/safety_pairs_train.jsonl", 32))
    (tmp / "gatt.jsonl").write_text(lines("data/gym/gatt_dialogues_train.jsonl", 8))
    rl = (REPO / "data/gym/rl_prompts_train.jsonl").read_text().splitlines()
    (tmp / "prompts.jsonl").write_text("\n".join(rl[:24] + rl[-8:]) + "\n")  # helpfulness + safety prompts
    prompts = {"sources": [{"path": str(tmp / "prompts.jsonl")}], "test_fraction": 0.25}
    gold = {"n_helpful": 4, "n_safety": 4, "n_borderline": 4, "max_new_tokens": 8}
    stages = [
        {"type": "sft", "learning_rate": 1e-2, "max_steps": 4, "batch_size": 4, "max_length": 96,
         "data": {"sources": [{"path": str(tmp / "dialogues.jsonl")}]}},
        rm_stage("rm_helpful", "llama2_helpfulness_rm"),
        rm_stage("rm_safety", "llama2_safety_rm"),
        {"type": "preference_collection", "name": "collect", "init_from": "sft",
         "prompts": {"helpful": 8, "safety": 4},
         "samples_per_prompt": 2, "max_new_tokens": 8, "data": prompts},
        {**rm_stage("rm_onpolicy", None), "init_from": "rm_helpful",
         "data": {"sources": [{"stage": "collect", "path": "pairs_train.jsonl", "name": "onpolicy"},
                              {"path": str(tmp / "helpful.jsonl"), "name": "helpfulness"}],
                  "test_sources": [{"stage": "collect", "path": "pairs_test.jsonl", "name": "onpolicy_t"}]}},
        {"type": "rejection_sampling", "init_from": "sft", "iterations": 2, "prompts_per_iteration": 6,
         "samples_per_prompt": 3, "max_new_tokens": 8, "pool_from_iteration": 2, "gold": gold,
         "greedy_candidate": True,
         "finetune": {"learning_rate": 1e-2, "epochs": 1, "batch_size": 2, "max_length": 96},
         "data": prompts},
        {"type": "gatt", "n_dialogues": 4, "max_turns": 2, "max_new_tokens": 8,
         "finetune": {"learning_rate": 1e-2, "epochs": 1, "batch_size": 2, "max_length": 160},
         "eval": {"n_dialogues": 2, "max_turns": 3, "max_new_tokens": 8},
         "data": {"sources": [{"path": str(tmp / "gatt.jsonl")}], "test_fraction": 0.0}},
        {"type": "ppo", "iterations": 4, "batch_size": 6, "minibatch_size": 3, "learning_rate": 1e-3,
         "critic_learning_rate": 1e-3, "max_new_tokens": 8, "eval_every": 2, "checkpoint_every": 1,
         "critic_warmup": 1, "whiten_rewards": "group", "reward_models": {"safety_cap": 0.5},
         "gold": gold, "data": prompts},
        {"type": "context_distillation", "n_prompts": 4, "max_new_tokens": 8, "gold": gold,
         "finetune": {"learning_rate": 1e-2, "epochs": 1, "batch_size": 2, "max_length": 96},
         "data": prompts},
        {"type": "evaluation", "gold": gold},
    ]  # fmt: skip
    for stage in stages[1:3]:
        for source in stage["data"]["sources"]:
            source["path"] = str(tmp / source["path"])
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
    return tmp / "recipe.yaml"


def offline_env() -> dict:
    """No network for the run: hub libraries offline and a socket guard (tests/network_guard)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "tests/network_guard"), str(REPO), env.get("PYTHONPATH", "")]
    )
    return env


def test_the_network_guard_blocks_outside_connections():
    code = "import socket; socket.create_connection(('huggingface.co', 443), timeout=5)"
    result = subprocess.run([sys.executable, "-c", code], env=offline_env(), capture_output=True, text=True)
    assert result.returncode != 0 and "blocked by the test guard" in result.stderr


def test_rejection_sampling_writes_the_curve_pool_and_gold(rl_run):
    out = rl_run / "runs/tiny/rejection_sampling"
    summary = json.loads((out / "summary.json").read_text())
    first, second = summary["iterations"]
    assert first["trained_on"] == "this iteration's best" and second["trained_on"] == "pool"
    curve = first["best_vs_median"]
    assert curve["n"] == [1, 2, 3]
    assert curve["best"] == sorted(curve["best"])  # the max over more samples never falls
    assert curve["best"][0] == curve["median"][0]  # one sample: best is the median
    assert first["kept_mean_reward"] >= first["mean_reward"]
    for report in (first, second):  # the greedy answer is a candidate: the kept ones never score below it
        assert (
            report["kept_mean_reward"] >= report["greedy_mean_reward"]
            and 0 <= report["kept_greedy_share"] <= 1
        )
        assert "greedy" in json.loads((out / f"iter-{report['iteration']:02d}/samples.json").read_text())
    assert second["pool_size"] >= first["pool_size"]
    assert {"helpful_correct", "unsafe_compliance", "false_refusal"} <= set(summary["gold_after"])
    assert (out / "plots/best_vs_median.png").is_file() and (out / "COMPLETE").is_file()
    assert (out / "model/adapter_config.json").is_file() and (out / "model/merged/config.json").is_file()


def test_ppo_writes_metrics_plots_and_a_policy_only_adapter(rl_run):
    out = rl_run / "runs/tiny/ppo"
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for key in ("reward", "reward_helpful", "reward_safety", "kl", "entropy", "policy_loss", "value_loss",
                "clip_fraction", "response_length"):  # fmt: skip
        assert key in rows[-1], key
    assert "value_loss" in rows[0] and "policy_loss" not in rows[0]  # critic_warmup: 1
    kinds = [{k for k in r if k.startswith("reward_on_")} for r in rows]
    assert all(kinds) and set().union(*kinds) == {"reward_on_helpfulness", "reward_on_safety"}
    # safety_cap 0.5: a safety prompt's reward logit(min(Rs, 0.5)) is at most 0; random RMs score
    # about half of the answers above that.
    assert all(r["reward_on_safety"] <= 1e-6 for r in rows if "reward_on_safety" in r)
    assert "eval_proxy_reward" in rows[1]
    summary = json.loads((out / "summary.json").read_text())
    assert "fresh" in summary["critic_init"]  # RS output is not the RMs' base
    assert [e["iteration"] for e in summary["evals"]] == [0, 2, 4]
    assert {"helpful_correct", "unsafe_compliance", "false_refusal", "kl"} <= set(summary["eval_after"])
    assert (out / "plots/ppo_training.png").is_file() and (out / "plots/gold_vs_proxy.png").is_file()
    adapter = json.loads((out / "model/adapter_config.json").read_text())
    assert adapter["r"] == 4 and not (out / "model/critic").exists()


def test_ppo_saves_the_policy_of_its_best_held_out_eval(rl_run):
    """keep_best (default on): the saved adapter is the snapshot of the eval with the highest proxy
    reward, which is what best_policy.safetensors holds (names there carry the `policy.` module and
    the `default` adapter)."""
    from safetensors.torch import load_file

    from alignment.stages.ppo import best_eval

    out = rl_run / "runs/tiny/ppo"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept_iteration"] == best_eval(summary["evals"])["iteration"]
    saved = load_file(out / "model/adapter_model.safetensors")
    best = load_file(out / "best_policy.safetensors")
    lora_b = [v for k, v in saved.items() if "lora_B" in k]
    if summary["kept_iteration"] == 0:  # the starting LoRA: B is initialised to zero
        assert all(not v.any() for v in lora_b)
    elif summary["kept_iteration"] < summary["iterations_run"]:
        for name, value in saved.items():
            assert torch.equal(value, best["policy." + name.replace(".weight", ".default.weight")]), name
    else:
        assert any(v.any() for v in lora_b)


def test_best_eval_is_the_highest_proxy_reward_and_the_earliest_of_equals():
    """Proxy rewards 2.0, 2.5, 2.5, 1.0 at iterations 0, 4, 8, 12: the best is 2.5, first at 4."""
    from alignment.stages.ppo import best_eval

    evals = [{"iteration": i, "proxy_reward": r} for i, r in ((0, 2.0), (4, 2.5), (8, 2.5), (12, 1.0))]
    assert best_eval(evals)["iteration"] == 4


def test_killed_ppo_stage_resumes_to_the_uninterrupted_result(rl_run):
    """Run the recipe again into a fresh output dir holding copies of the finished earlier stages,
    SIGKILL it once PPO has written a checkpoint, re-run: PPO's metrics equal the uninterrupted run's."""
    resumed = rl_run / "resumed"
    shutil.copytree(rl_run / "runs", resumed)
    shutil.rmtree(resumed / "tiny/ppo")
    stage = resumed / "tiny/ppo"
    command = [
        sys.executable,
        "-m",
        "alignment.cli",
        "run",
        str(rl_run / "recipe.yaml"),
        f"output_dir={resumed}",
    ]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not list(stage.glob("checkpoints/step-*/state.json")):
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (stage / "COMPLETE").exists(), "the run finished before it could be killed"
    again = paddock("run", str(rl_run / "recipe.yaml"), f"output_dir={resumed}")
    assert again.returncode == 0, again.stderr[-3000:]
    drop = lambda rows: [{k: round(v, 5) for k, v in r.items() if "per_s" not in k} for r in rows]  # noqa: E731
    assert drop(metrics(stage)) == drop(metrics(rl_run / "runs/tiny/ppo"))


def test_collected_pairs_feed_a_later_reward_model_stage(rl_run):
    """The collection stage answers 12 prompts drawn from both sides of the prompt split, writes its
    pairs, and the RM stage after it reads them through `{stage: collect, ...}` sources."""
    run = rl_run / "runs/tiny"
    summary = json.loads((run / "collect/summary.json").read_text())
    n_train, n_test = summary["train"]["prompts"], summary["test"]["prompts"]
    assert n_train + n_test == 12 and n_test > 0
    answers = json.loads((run / "collect/answers-train.json").read_text())
    assert len(answers) == n_train and all(len(texts) == 3 for texts in answers)  # K=2 plus greedy
    collected = (run / "collect/pairs_train.jsonl").read_text().splitlines()
    rm = json.loads((run / "rm_onpolicy/summary.json").read_text())
    assert rm["init"].endswith("rm_helpful/model")
    assert len(collected) == summary["train"]["pairs"]
    assert f"made {len(collected)} records" in rm["data"]["onpolicy"]
    assert rm["train_pairs"] == len(collected) + 32
    assert not (run / "collect/model").exists()


def test_evaluation_scores_every_policy_and_the_report_names_every_stage(rl_run):
    out = rl_run / "runs/tiny/evaluation"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["models"] == ["base", "sft", "rejection_sampling", "gatt", "ppo", "context_distillation"]
    for name in summary["models"]:
        gold = summary["gold"][name]
        assert gold["n_helpful"] == gold["n_safety"] == gold["n_borderline"] == 4
        assert 0 <= gold["unsafe_compliance"] <= 1 and 0 <= summary["rm"][name]["rm_unsafe"] <= 1
        cell = summary["gold_table"][name]["unsafe_compliance"]  # the same rate, counted, with its interval
        assert cell["rate"] == gold["unsafe_compliance"] and cell["n"] == 4
        assert cell["ci95"][0] <= cell["rate"] <= cell["ci95"][1]
        assert ("vs_base" in cell) == (name != "base") and ("vs_sft" in cell) == (name not in ("base", "sft"))
    report = (out / "report.md").read_text()
    assert "the exact paired test against the base and the SFT model" in report
    for stage in (
        "sft",
        "rm_helpful",
        "rm_safety",
        "collect",
        "rm_onpolicy",
        "rejection_sampling",
        "gatt",
        "ppo",
        "context_distillation",
    ):
        assert stage in report
    assert "](../rm_helpful/summary.json)" in report  # numbers link to their source files
    assert "Saved policy: iteration " in report
    assert (out / "report.html").read_text().startswith("<!doctype html>")
    for png in ("rates_by_stage", "rm_scores_by_stage", "helpful_vs_safety"):
        assert (out / f"plots/{png}.png").is_file()
    assert (rl_run / "runs/tiny/REPORT").read_text().strip().endswith("report.md")


def test_a_rerun_evaluation_scores_the_answers_it_made_before(rl_run):
    """The evaluation's answers are kept by model content in the run directory: evaluated again
    from scratch, no model answers again and every rate is the same."""
    again = rl_run / "eval-again"
    shutil.copytree(rl_run / "runs", again)
    shutil.rmtree(again / "tiny/evaluation")
    result = paddock("run", str(rl_run / "recipe.yaml"), f"output_dir={again}", "--stage", "evaluation")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "] evaluating" not in result.stdout and "scoring the earlier answers of ppo" in result.stdout
    first, second = (
        json.loads((d / "tiny/evaluation/summary.json").read_text()) for d in (rl_run / "runs", again)
    )
    assert second["gold_table"] == first["gold_table"]


def test_critic_warmup_must_leave_iterations_that_train_the_policy():
    from alignment.recipes.config import RecipeError
    from alignment.stages.ppo import PPOConfig

    PPOConfig(type="ppo", iterations=4, critic_warmup=3).check_config("stages[0]")
    with pytest.raises(RecipeError, match=r"critic_warmup: 4 is out of range \[0, 3\]"):
        PPOConfig(type="ppo", iterations=4, critic_warmup=4).check_config("stages[0]")


def test_safety_cap_must_lie_between_threshold_and_one():
    from alignment.recipes.config import RecipeError, from_dict
    from alignment.stages.ppo import PPOConfig

    ok = from_dict(PPOConfig, {"type": "ppo", "reward_models": {"safety_cap": 0.999}}, "stages[0]")
    assert ok.reward_models.safety_cap == 0.999
    with pytest.raises(RecipeError, match=r"safety_cap: 0.1 is out of range \[0.15, 1\)"):
        from_dict(PPOConfig, {"type": "ppo", "reward_models": {"safety_cap": 0.1}}, "stages[0]")


def test_sampler_logprobs_need_temperature_one():
    from alignment.recipes.config import RecipeError
    from alignment.stages.ppo import PPOConfig

    PPOConfig(type="ppo", rollout_logprobs="sampler").check_config("stages[0]")
    with pytest.raises(RecipeError, match="rollout_logprobs: 'sampler' needs temperature 1"):
        PPOConfig(type="ppo", rollout_logprobs="sampler", temperature=0.8).check_config("stages[0]")


def test_source_categories_keep_only_the_named_prompt_kinds(tmp_path):
    """A source's `categories: [helpfulness]` drops the gym's safety prompts from it (PPO on
    helpfulness prompts alone), and one file read twice with different categories mixes by ratio:
    helpfulness as the anchor with ratio 0.8, safety 0.2 gives 1 safety prompt per 4 helpfulness."""
    from types import SimpleNamespace

    from alignment.recipes.schema import DataConfig, SourceConfig
    from alignment.stages.common import load_records

    rl = (REPO / "data/gym/rl_prompts_train.jsonl").read_text().splitlines()
    rows = rl[:30] + [line for line in rl if '"safety"' in line][:10]
    (tmp_path / "prompts.jsonl").write_text("\n".join(rows) + "\n")
    helpful = sum(json.loads(line)["category"] == "helpfulness" for line in rows)
    assert 20 <= helpful < 40
    path = str(tmp_path / "prompts.jsonl")
    data = DataConfig(sources=[SourceConfig(path=path)], test_fraction=0.0)
    ctx = SimpleNamespace(
        stage=SimpleNamespace(data=data, name="ppo"),
        seed=0,
        run_dir=tmp_path,
        dir=SimpleNamespace(root=tmp_path),
    )
    kinds = lambda rows: Counter(str(getattr(r.category, "value", r.category)) for r in rows)  # noqa: E731
    train, _, _ = load_records(ctx, kind="rl_prompts")
    assert kinds(train) == {"helpfulness": helpful, "safety": 40 - helpful}
    data.sources = [SourceConfig(path=path, categories=["helpfulness"])]
    train, _, report = load_records(ctx, kind="rl_prompts")
    assert kinds(train) == {"helpfulness": helpful}
    assert report["prompts"].endswith(f"kept {helpful} of categories helpfulness")
    data.sources = [
        SourceConfig(path=path, name="tasks", categories=["helpfulness"]),
        SourceConfig(path=path, name="harmful", categories=["safety"]),
    ]
    data.mixture = {"tasks": {"ratio": 0.8, "anchor": True}, "harmful": {"ratio": 0.2}}
    train, _, _ = load_records(ctx, kind="rl_prompts")
    assert kinds(train) == {"helpfulness": helpful, "safety": helpful // 4}
