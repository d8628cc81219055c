"""Two processes over gloo, started by `accelerate launch` with the shipped configs, against one.

With the same global batch the two runs take the same optimizer steps: each process gets half of
every micro-batch, the loss is divided by the global item count and the averaged gradient is
scaled back to the sum. What may differ is float summation order, hence the tolerances. The run
directory must be written by the main process alone: same files as the one-process run, and no
leftover mirror of the second process.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from alignment import distributed
from alignment.errors import PaddockError
from tests.conftest import discard_once_passed
from tests.test_pipeline import REPO, metrics, tiny_checkpoint  # noqa: F401  (fixture)

pytestmark = pytest.mark.distributed

LOSS_RTOL = 1e-4  # float32 sums in another order; a wrong split or scale is off by >= 1e-2
# Adam divides by sqrt(v): near-zero gradients amplify rounding. Seen on the 2-core CPU: an FSDP run
# killed and resumed differs from the one-process run by up to 1.35e-4 in 2 of 3.1M weights (a rare
# token's embedding row); a wrong resume or split moves weights by about a step, ~1e-3 or more.
WEIGHT_ATOL = 3e-4


def recipe(tmp_path: Path, model: Path, name: str) -> Path:
    dialogues = (REPO / "data/gym/sft_train.jsonl").read_text().splitlines()[:32]
    pairs = (REPO / "data/gym/helpfulness_pairs_train.jsonl").read_text().splitlines()[:32]
    (tmp_path / "dialogues.jsonl").write_text("\n".join(dialogues) + "\n")
    (tmp_path / "pairs.jsonl").write_text("\n".join(pairs) + "\n")
    common = {"epochs": 1, "batch_size": 4, "grad_accum": 2, "max_length": 96, "log_every": 1}
    stages = [
        {
            "type": "sft",
            "learning_rate": 1e-2,
            "checkpoint_every": 2,
            "warmup_ratio": 0.0,
            "data": {"sources": [{"path": str(tmp_path / "dialogues.jsonl")}], "test_fraction": 0.25},
            **common,
        },
        {
            "type": "reward_model",
            "name": "rm",
            "learning_rate": 3e-3,
            "min_warmup_steps": 1,
            "data": {
                "sources": [{"path": str(tmp_path / "pairs.jsonl")}],
                "test_sources": [{"path": str(tmp_path / "pairs.jsonl"), "name": "train_pairs"}],
            },
            **common,
        },
    ]
    rl = (REPO / "data/gym/rl_prompts_train.jsonl").read_text().splitlines()
    (tmp_path / "prompts.jsonl").write_text("\n".join(rl[:12] + rl[-4:]) + "\n")
    stages.append(
        {  # greedy rollouts, so both runs answer alike; minibatches of 2 leave a process empty-handed
            "type": "ppo",
            "init_from": "sft",
            "reward_models": {"helpful": "rm", "safety": "rm", "max_length": 96},
            "iterations": 2,
            "batch_size": 4,
            "minibatch_size": 2,
            "temperature": 0.0,
            "max_new_tokens": 6,
            "learning_rate": 1e-3,
            "critic_learning_rate": 1e-3,
            "eval_prompts": 2,
            "checkpoint_every": 1,
            "data": {"sources": [{"path": str(tmp_path / "prompts.jsonl")}], "test_fraction": 0.25},
        }
    )
    body = {
        "run_name": name,
        "output_dir": str(tmp_path / "runs"),
        "seed": 5,
        "model": {"name_or_path": str(model), "precision": "fp32"},
        "stages": stages,
        "logging": {"report_to": ["none"], "progress": False},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(recipe_path: Path, processes: int, config: str = "ddp") -> list[str]:
    """`paddock run` alone, or under `accelerate launch` with a shipped config: on a machine
    without GPUs accelerate starts the processes with torchrun and they meet over gloo."""
    if processes == 1:
        return [sys.executable, "-m", "alignment.cli", "run", str(recipe_path)]
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(REPO / "recipes/accelerate" / f"{config}.yaml"),
        "--num_processes",
        str(processes),
        "--main_process_port",
        str(free_port()),
        "-m",
        "alignment.cli",
        "run",
        str(recipe_path),
    ]


def launch(
    recipe_path: Path, processes: int, tmp: Path, config: str = "ddp", **env_vars
) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp), **env_vars}
    return subprocess.run(
        command(recipe_path, processes, config),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and "tensorboard" not in p.parts}


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory, tiny_checkpoint):  # noqa: F811
    """1: one process; 2: two processes, recipes/accelerate/ddp.yaml; "fsdp": two processes,
    recipes/accelerate/fsdp.yaml (PPO is DDP-style there)."""
    out = {}
    for key, processes, config in ((1, 1, "ddp"), (2, 2, "ddp"), ("fsdp", 2, "fsdp")):
        tmp = discard_once_passed(request, tmp_path_factory.mktemp(f"p{key}"))
        scratch = tmp / "scratch"
        scratch.mkdir()
        # The mirrors are kept so the test can see that the second process wrote there.
        result = launch(
            recipe(tmp, tiny_checkpoint, "run"), processes, scratch, config, PADDOCK_KEEP_MIRRORS="1"
        )
        assert result.returncode == 0, result.stderr[-3000:]
        out[key] = (tmp / "runs/run", scratch, result)
    return out


def test_ppo_iterations_match_with_rollouts_split_across_processes(runs):
    one, two = (metrics(runs[p][0] / "ppo") for p in (1, 2))
    assert [r["step"] for r in one] == [r["step"] for r in two] == [1, 2]
    for a, b in zip(one, two, strict=True):
        for key in ("reward", "kl", "response_length", "policy_loss", "value_loss", "policy_grad_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-3, abs=1e-6), key
    assert one[0]["policy_grad_norm"] > 0 and one[0]["value_loss"] > 0
    w1 = load_file(next((runs[1][0] / "ppo" / "model").glob("*.safetensors")))
    w2 = load_file(next((runs[2][0] / "ppo" / "model").glob("*.safetensors")))
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("strategy", [2, "fsdp"], ids=["ddp", "fsdp"])
@pytest.mark.parametrize("stage", ["sft", "rm"])
def test_two_processes_follow_the_one_process_trajectory(runs, stage, strategy):
    """FSDP also writes a checkpoint mid-stage (gathered from both shards) on the way."""
    one, two = (metrics(runs[p][0] / stage) for p in (1, strategy))
    assert [r["step"] for r in one] == [r["step"] for r in two]
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-3)
    # It trained (the loss moved every step), so agreeing is not agreeing on nothing.
    assert (
        all(a["loss"] != b["loss"] for a, b in zip(one, one[1:], strict=False)) and one[-1]["grad_norm"] > 0
    )
    w1 = load_file(next((runs[1][0] / stage / "model").glob("*.safetensors")))
    w2 = load_file(next((runs[strategy][0] / stage / "model").glob("*.safetensors")))
    assert w1.keys() == w2.keys()
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=WEIGHT_ATOL, rtol=1e-4)


def test_only_the_main_process_writes(runs):
    one_dir, _, _ = runs[1]
    two_dir, scratch, result = runs[2]
    assert files(two_dir) == files(one_dir)
    # The second process finished each stage too, but into its private mirror.
    (mirror,) = scratch.glob("paddock-rank1-*")
    for stage in ("sft", "rm", "ppo"):
        assert (mirror / stage / "summary.json").is_file() and (mirror / stage / "COMPLETE").is_file()
        assert not (mirror / stage / "model").exists()  # weights are saved once, by the main process
    assert result.stdout.count("[sft] starting") == 1  # and it printed nothing of its own


def test_mirror_copies_small_files_links_large_ones_and_is_removed(tmp_path, monkeypatch):
    """A mirror may be written freely: a small file is a copy (appending to it leaves the original
    alone); a large one is a symlink, read-only in practice because every large write in Paddock
    goes to a fresh temp name. cleanup() removes the whole mirror root."""
    real = tmp_path / "run" / "sft"
    (real / "checkpoints/step-1").mkdir(parents=True)
    (real / "metrics.jsonl").write_text('{"step": 1}\n')
    (real / "checkpoints/step-1/optimizer.pt").write_bytes(b"x" * (distributed.MIRROR_COPY_LIMIT + 1))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("TMPDIR", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    distributed._mirror_root.cache_clear()
    mirror = distributed.stage_root(real)
    assert mirror != real and mirror.name == "sft"
    with open(mirror / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 2}\n')
    assert (real / "metrics.jsonl").read_text() == '{"step": 1}\n'
    big = mirror / "checkpoints/step-1/optimizer.pt"
    assert big.is_symlink() and big.resolve() == (real / "checkpoints/step-1/optimizer.pt").resolve()
    distributed.cleanup()
    assert not mirror.exists() and (real / "checkpoints/step-1/optimizer.pt").is_file()
    distributed._mirror_root.cache_clear()


def test_a_batch_smaller_than_the_world_is_refused(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "4")
    with pytest.raises(PaddockError, match="batch_size 2 is smaller than the 4 processes"):
        distributed.check_batch(2, "sft")
    distributed.check_batch(4, "sft")


@pytest.mark.parametrize("path", sorted((REPO / "recipes/accelerate").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_accelerate_config_loads(path):
    """accelerate reads each config into its dataclass (an unknown key is a TypeError there); FSDP
    wraps a class that exists in our model. No DeepSpeed config ships (FSDP2 is the sharded engine)."""
    from accelerate.commands.config.config_args import load_config_from_file

    from alignment.base_model import modeling

    config = load_config_from_file(str(path))
    kind = config.distributed_type.value
    assert kind in {"MULTI_GPU", "FSDP"}
    if kind == "FSDP":
        assert config.fsdp_config["fsdp_version"] == 2
        assert hasattr(modeling, config.fsdp_config["fsdp_transformer_layer_cls_to_wrap"])


@pytest.mark.slow  # 25 s, and a very fast machine could finish before the kill
@pytest.mark.faults
def test_a_killed_fsdp_run_resumes_from_its_gathered_checkpoint(tmp_path, tiny_checkpoint):  # noqa: F811
    """SIGKILL both FSDP processes once a mid-run checkpoint exists, re-launch, and land where one
    uninterrupted process lands: the checkpoint's full tensors go back into the shards."""
    dialogues = (REPO / "data/gym/sft_train.jsonl").read_text().splitlines()[:64]
    (tmp_path / "d.jsonl").write_text("\n".join(dialogues) + "\n")
    paths = {}
    for name in ("one", "fsdp"):
        body = {
            "run_name": name,
            "output_dir": str(tmp_path / "runs"),
            "seed": 2,
            "model": {"name_or_path": str(tiny_checkpoint), "precision": "fp32"},
            "stages": [
                {
                    "type": "sft",
                    "learning_rate": 1e-2,
                    "epochs": 1,
                    "batch_size": 4,
                    "max_length": 96,
                    "checkpoint_every": 2,
                    "warmup_ratio": 0.0,
                    "data": {"sources": [{"path": str(tmp_path / "d.jsonl")}], "test_fraction": 0.25},
                }
            ],
            "logging": {"report_to": ["none"], "progress": False},
        }
        paths[name] = tmp_path / f"{name}.yaml"
        paths[name].write_text(yaml.safe_dump(body))
    assert launch(paths["one"], 1, tmp_path).returncode == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        command(paths["fsdp"], 2, "fsdp"),
        cwd=REPO,
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    marker = tmp_path / "runs/fsdp/sft/checkpoints/step-0000004/state.json"
    deadline = time.time() + 300
    while not marker.is_file() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "runs/fsdp/sft/COMPLETE").is_file(), "finished before the kill"
    result = launch(paths["fsdp"], 2, tmp_path, "fsdp")
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = metrics(tmp_path / "runs/one/sft"), metrics(tmp_path / "runs/fsdp/sft")
    assert [r["step"] for r in two] == [r["step"] for r in one]
    for a, b in zip(one, two, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=LOSS_RTOL)
    w1 = load_file(next((tmp_path / "runs/one/sft/model").glob("*.safetensors")))
    w2 = load_file(next((tmp_path / "runs/fsdp/sft/model").glob("*.safetensors")))
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=WEIGHT_ATOL, rtol=1e-4)


def test_every_stage_of_the_pipeline_runs_under_two_processes(tmp_path, tiny_checkpoint):  # noqa: F811
    """The toy pipeline of test_rl_stages (SFT, both RMs, preference collection and an RM on its
    pairs, rejection sampling, GAtt, PPO, context distillation, evaluation) under two processes:
    every stage finishes. The sampling stages run
    alike on both processes, so the second one's summaries (in its kept mirror) match the main
    one's: same samples, same kept answers, same fine-tune. (Against one process the close calls
    of a random tiny model, such as which distilled answers to keep, can flip on float noise.)"""
    from tests.test_rl_stages import offline_env, write_pipeline_recipe

    runs = {}
    for processes in (1, 2):
        tmp = tmp_path / f"p{processes}"
        (tmp / "scratch").mkdir(parents=True)
        recipe_path = write_pipeline_recipe(tmp, tiny_checkpoint)
        env = {
            **offline_env(),
            "OMP_NUM_THREADS": "1",
            "TMPDIR": str(tmp / "scratch"),
            "PADDOCK_KEEP_MIRRORS": "1",
        }
        result = subprocess.run(
            command(recipe_path, processes), cwd=REPO, env=env, capture_output=True, text=True, timeout=900
        )
        assert result.returncode == 0, result.stderr[-3000:]
        runs[processes] = tmp
    stages = sorted(p.parent.name for p in (runs[1] / "runs/tiny").glob("*/COMPLETE"))
    assert len(stages) == 10
    assert sorted(p.parent.name for p in (runs[2] / "runs/tiny").glob("*/COMPLETE")) == stages
    (mirror,) = (runs[2] / "scratch").glob("paddock-rank1-*")
    for stage in ("collect", "rejection_sampling", "gatt", "context_distillation"):
        main, other = (
            json.loads((d / stage / "summary.json").read_text()) for d in (runs[2] / "runs/tiny", mirror)
        )
        for key in (
            "iterations",
            "kept",
            "kept_by_category",
            "gatt_data",
            "train_examples",
            "adherence_after",
            "train",
            "test",
        ):
            if key in main:
                assert other[key] == main[key], (stage, key)


def sampling_recipe(tmp: Path, model: Path) -> Path:
    """Two small RMs, then the stages that sample a whole list, each starting from the same tiny
    checkpoint so that one and two processes answer with the same weights: the evaluation of the
    base model, one round of rejection sampling and context distillation."""
    from tests.test_rl_stages import lines, rm_stage

    (tmp / "helpful.jsonl").write_text(lines("data/gym/helpfulness_pairs_train.jsonl", 32))
    (tmp / "safety.jsonl").write_text(lines("data/gym/safety_pairs_train.jsonl", 32))
    rl = (REPO / "data/gym/rl_prompts_train.jsonl").read_text().splitlines()
    (tmp / "prompts.jsonl").write_text("\n".join(rl[:24] + rl[-8:]) + "\n")
    prompts = {"sources": [{"path": str(tmp / "prompts.jsonl")}], "test_fraction": 0.25}
    gold = {"n_helpful": 5, "n_safety": 5, "n_borderline": 3, "max_new_tokens": 6}
    rms = [
        {**rm_stage(name, mix), "init_from": str(model)}
        for name, mix in (("rm_helpful", "llama2_helpfulness_rm"), ("rm_safety", "llama2_safety_rm"))
    ]
    for stage in rms:
        for source in stage["data"]["sources"]:
            source["path"] = str(tmp / source["path"])
    finetune = {"learning_rate": 1e-2, "epochs": 1, "batch_size": 2, "max_length": 96}
    stages = [
        *rms,
        {"type": "evaluation", "gold": gold},  # before any policy stage: the base model only
        {"type": "rejection_sampling", "init_from": str(model), "iterations": 1, "prompts_per_iteration": 7,
         "samples_per_prompt": 3, "max_new_tokens": 6, "generation_batch_size": 2, "gold": gold,
         "finetune": finetune, "data": prompts},
        {"type": "context_distillation", "init_from": str(model), "n_prompts": 5, "max_new_tokens": 6,
         "generation_batch_size": 2, "temperature": 1.0,
         "finetune": finetune, "data": prompts},
    ]  # fmt: skip
    body = {
        "run_name": "sampled",
        "output_dir": str(tmp / "runs"),
        "seed": 3,
        "model": {"name_or_path": str(model), "precision": "fp32"},
        "stages": stages,
        "logging": {"report_to": ["none"], "progress": False},
    }
    (tmp / "sampled.yaml").write_text(yaml.safe_dump(body))
    return tmp / "sampled.yaml"


def test_sampling_stages_split_their_prompts_and_match_one_process(tmp_path, tiny_checkpoint):  # noqa: F811
    """Every sampling and scoring stage shares its generation (and RM scoring) batches among the
    processes and gathers them, so two processes write exactly the answers and scores of one, and
    each process generated only its share. The RMs are trained once and copied to both runs."""
    import shutil

    from tests.test_rl_stages import offline_env

    path = sampling_recipe(tmp_path, tiny_checkpoint)
    env = {**offline_env(), "OMP_NUM_THREADS": "1"}
    run = lambda processes, out, *extra: subprocess.run(  # noqa: E731
        [*command(path, processes), f"output_dir={out}", *extra],
        cwd=REPO, env={**env, "TMPDIR": str(tmp_path)}, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    first = run(1, tmp_path / "one", "--stage", "rm_helpful", "--stage", "rm_safety")
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    for processes, out in ((1, "one"), (2, "two")):
        result = run(processes, tmp_path / out)
        assert result.returncode == 0, result.stderr[-3000:]
    one, two = tmp_path / "one/sampled", tmp_path / "two/sampled"
    same = [
        "evaluation/eval-base.json",  # gold-suite answers, their gold grades and both RMs' scores
        "rejection_sampling/gold_before.json",
        "rejection_sampling/iter-01/samples.json",  # K samples per prompt and their rewards
        "context_distillation/answers_plain.json",
        "context_distillation/answers_distilled.json",
        "context_distillation/distilled.jsonl",  # the safety RM's scores of both answers
    ]
    for name in same:
        assert (two / name).read_text() == (one / name).read_text(), name
    samples = json.loads((one / "rejection_sampling/iter-01/samples.json").read_text())
    assert len(set(samples["texts"])) > 1  # sampled, not all alike
    for stage in ("evaluation", "rejection_sampling", "context_distillation"):
        alone = json.loads((one / stage / "summary.json").read_text())["placement"]
        shared = json.loads((two / stage / "summary.json").read_text())["placement"]
        assert alone["world_size"] == 1 and shared["world_size"] == 2 and shared["backend"] == "gloo"
        (total,) = alone["prompts_generated_this_run"]
        assert sum(shared["prompts_generated_this_run"]) == total and all(
            0 < n < total for n in shared["prompts_generated_this_run"]
        ), (stage, shared)
