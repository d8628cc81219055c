# ruff: noqa: F811  (pytest fixtures imported from other test modules, used as arguments)
"""Fault tolerance and guards, on the tiny pipeline of test_rl_stages.

- Each training stage is SIGKILLed at a seed-chosen moment through the real CLI, re-run, and its
  metrics, summary and saved weights must equal the uninterrupted run's (rl_run, the reference).
  The killed runs checkpoint every step (the reference only where its recipe says), so this also
  shows that checkpointing does not change the result.
- Writes a kill can tear (metrics lines, checkpoint dirs, done-marker weights) never look complete.
- A full disk is reported before compute starts, in one line.
- NaN/inf in a loss, gradient, reward or advantage stops the stage naming the step, the tensor and
  the batch ids, keeps the last good checkpoint, and the stage resumes from it once the cause is gone.
- Collapsed or exploded reward-model scores give a warning line and a flag in summary.json.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_pipeline import REPO, metrics, paddock, tiny_checkpoint  # noqa: F401  (fixture)
from tests.test_rl_stages import rl_run  # noqa: F401  (fixture: the whole tiny pipeline, uninterrupted)

pytestmark = pytest.mark.faults

TRAINING_STAGES = ["sft", "rm_helpful", "rejection_sampling", "gatt", "ppo", "context_distillation"]
# Checkpoint every step in the killed runs, so a kill usually lands between checkpoints.
EVERY_STEP = {
    "sft": ["stages.sft.checkpoint_every=1"],
    "rm_helpful": ["stages.rm_helpful.checkpoint_every=1"],
    "rejection_sampling": ["stages.rejection_sampling.finetune.checkpoint_every=1"],
    "gatt": ["stages.gatt.finetune.checkpoint_every=1"],
    "ppo": [],  # already every iteration
    "context_distillation": ["stages.context_distillation.finetune.checkpoint_every=1"],
}


def comparable(value, root: str):
    """Rounded numbers, without timings or what this run alone did (a resumed run generates only what
    was left), and with this run's directory replaced, for equality."""
    if isinstance(value, dict):
        run_only = ("per_s", "seconds", "this_run")
        return {k: comparable(v, root) for k, v in value.items() if not any(s in k for s in run_only)}
    if isinstance(value, list):
        return [comparable(v, root) for v in value]
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, str):
        return value.replace(root, "<run>")
    return value


def stage_artifacts(stage: Path) -> dict:
    """Every metrics.jsonl (rejection sampling keeps one per iteration), the summary and the weights."""
    root = str(stage.parents[1])
    out = {"summary": comparable(json.loads((stage / "summary.json").read_text()), root)}
    for path in sorted(stage.rglob("metrics.jsonl")):
        out[str(path.relative_to(stage))] = comparable(metrics(path.parent), root)
    out["weights"] = {
        str(path.relative_to(stage)): load_file(path)
        for path in sorted((stage / "model").rglob("*.safetensors"))
    }
    return out


def assert_same_weights(got: dict, want: dict) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert sorted(got[name]) == sorted(want[name]), name
        for key, tensor in want[name].items():
            # Resume is exact by design (RNG, data order and optimizer state restored); a small
            # tolerance only covers float summation order.
            torch.testing.assert_close(got[name][key], tensor, rtol=1e-5, atol=1e-6, msg=f"{name}:{key}")


def kill_and_resume(rl_run: Path, stage_name: str, seed: int, out: Path) -> None:
    """Copy the finished run without `stage_name`, run only that stage, SIGKILL it at a moment drawn
    from `seed` (a share of the stage's reference wall time), run it again to the end."""
    shutil.copytree(rl_run / "runs", out)
    stage = out / "tiny" / stage_name
    shutil.rmtree(stage)
    command = [sys.executable, "-m", "alignment.cli", "run", str(rl_run / "recipe.yaml"), f"output_dir={out}"]
    command += [*EVERY_STEP[stage_name], "--stage", stage_name]
    reference_seconds = json.loads((rl_run / "runs/tiny/timings.json").read_text())[stage_name]
    delay = random.Random(seed).uniform(0.05, 0.9) * reference_seconds
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for _ in range(4):  # a quieter machine may finish before the kill: retry sooner
        proc = subprocess.Popen(
            command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True
        )
        for line in proc.stdout:  # the clock starts when the stage does, not at interpreter start-up
            if line.startswith(f"[{stage_name}] starting"):
                break
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if not (stage / "COMPLETE").exists():
            break
        shutil.rmtree(stage)
        delay /= 3
    assert not (stage / "COMPLETE").exists(), "the stage always finished before it could be killed"
    again = paddock(*command[3:])
    assert again.returncode == 0, again.stderr[-3000:]
    assert (stage / "COMPLETE").is_file() and not (stage / "checkpoints").exists()


def check_kill(rl_run: Path, stage_name: str, seed: int, out: Path) -> None:
    kill_and_resume(rl_run, stage_name, seed, out)
    got = stage_artifacts(out / "tiny" / stage_name)
    want = stage_artifacts(rl_run / "runs/tiny" / stage_name)
    assert_same_weights(got.pop("weights"), want.pop("weights"))
    assert got == want


@pytest.mark.parametrize("stage_name", TRAINING_STAGES)
def test_a_killed_stage_resumes_to_the_uninterrupted_result(rl_run, stage_name, tmp_path):
    # One seed per stage in the default tier; the seed differs per stage so the kill points spread.
    check_kill(rl_run, stage_name, seed=TRAINING_STAGES.index(stage_name), out=tmp_path / "runs")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11, 12, 13])
@pytest.mark.parametrize("stage_name", TRAINING_STAGES)
def test_a_stage_killed_at_more_points_resumes_to_the_same_result(rl_run, stage_name, seed, tmp_path):
    check_kill(rl_run, stage_name, seed=seed, out=tmp_path / "runs")


def test_rejection_sampling_resumed_after_a_finished_iteration_matches(rl_run, tmp_path):
    """The window a timed kill hits only now and then: iteration 1 finished (samples, fine-tune and
    done marker on disk), nothing after it. The re-run skips iteration 1's fine-tune, whose LoRA
    dropout drew from torch's RNG in the uninterrupted run; without the RNG state saved with the
    iteration, iteration 2's fine-tune draws other dropout masks and ends on other weights."""
    out = tmp_path / "runs"
    shutil.copytree(rl_run / "runs", out)
    stage = out / "tiny" / "rejection_sampling"
    for path in stage.iterdir():
        if path.name != "iter-01":
            shutil.rmtree(path) if path.is_dir() else path.unlink()
    assert (stage / "iter-01" / "trainable.safetensors").is_file()
    command = ["run", str(rl_run / "recipe.yaml"), f"output_dir={out}", "--stage", "rejection_sampling"]
    again = paddock(*command)
    assert again.returncode == 0, again.stderr[-3000:]
    got, want = stage_artifacts(stage), stage_artifacts(rl_run / "runs/tiny/rejection_sampling")
    assert_same_weights(got.pop("weights"), want.pop("weights"))
    assert got == want


# --- writes a kill can tear -------------------------------------------------------------------


def test_a_torn_metrics_line_is_dropped_and_rewritten_on_resume(tmp_path):
    from alignment.runs import Metrics

    log = Metrics(tmp_path / "metrics.jsonl")
    log.log({"step": 1, "loss": 2.0})
    log.log({"step": 2, "loss": 1.5})
    with open(log.path, "a") as handle:
        handle.write('{"step": 3, "lo')  # what a SIGKILL in the middle of an append leaves
    assert [r["step"] for r in log.rows()] == [1, 2]
    log.truncate_after(2)  # what a resumed loop does first
    log.log({"step": 3, "loss": 1.0})
    assert [r["step"] for r in log.rows()] == [1, 2, 3]


def test_a_checkpoint_torn_by_a_kill_is_never_taken_for_the_latest(tmp_path):
    from alignment.training.checkpoint import latest_checkpoint, save_training_checkpoint

    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    good = save_training_checkpoint(tmp_path, 1, model, optimizer, scheduler, {})
    # A kill mid-save leaves the temp dir with some files but never a step-* name.
    torn = tmp_path / ".tmp-killed"
    torn.mkdir()
    (torn / "trainable.safetensors").write_bytes(b"\x00" * 10)
    assert latest_checkpoint(tmp_path) == good
    save_training_checkpoint(tmp_path, 2, model, optimizer, scheduler, {})
    assert latest_checkpoint(tmp_path).name == "step-0000002" and not torn.exists()  # swept up


def test_a_done_marker_file_is_all_or_nothing(tmp_path, monkeypatch):
    """Rejection sampling and GAtt treat trainable.safetensors as 'this fine-tune is done': a torn
    one would be loaded as finished weights. A kill inside the write must leave no such file."""
    import alignment.training.checkpoint as checkpoint

    def dies_halfway(tensors, path):
        Path(path).write_bytes(b"partial")
        raise KeyboardInterrupt  # stands in for the kill: nothing after this line runs

    monkeypatch.setattr(checkpoint, "save_file", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save_file_atomic({"w": torch.ones(2)}, tmp_path / "trainable.safetensors")
    assert not (tmp_path / "trainable.safetensors").exists()


# --- the output directory, before compute -----------------------------------------------------


def small_recipe(tmp_path: Path, model: Path, output_dir: Path, max_steps: int = 2) -> Path:
    """test_pipeline's SFT recipe (batch 4, checkpoint every 2 steps), writing to `output_dir`."""
    from tests.test_pipeline import write_recipe

    tmp_path.mkdir(parents=True, exist_ok=True)
    recipe = write_recipe(tmp_path, model, max_steps=max_steps)
    recipe.write_text(recipe.read_text().replace(str(tmp_path / "runs"), str(output_dir)))
    return recipe


def test_a_full_disk_is_one_line_before_any_stage_starts(tmp_path, tiny_checkpoint, monkeypatch, capsys):
    import shutil as shutil_module

    from alignment import cli

    real = shutil_module.disk_usage
    # 1 MB free: the tiny model alone is larger, and a full fine-tune keeps it twice over.
    monkeypatch.setattr(shutil_module, "disk_usage", lambda p: real(p)._replace(free=1_000_000))
    recipe = small_recipe(tmp_path, tiny_checkpoint, tmp_path / "out")
    assert cli.main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "GB free but the recipe will write about" in err
    assert not (tmp_path / "out/tiny/sft").exists()  # nothing computed, nothing written


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes through chmod 0o555")
def test_a_read_only_output_dir_is_one_line_before_any_stage_starts(tmp_path, tiny_checkpoint, capsys):
    from alignment import cli

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        recipe = small_recipe(tmp_path, tiny_checkpoint, locked)
        assert cli.main(["run", str(recipe)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "cannot write run outputs" in err
    finally:
        locked.chmod(0o755)


# --- NaN / inf guards -------------------------------------------------------------------------


def poison_on_call(function, call: int, poison):
    """`function`, except that its `call`-th call returns poison(result)."""
    calls = []

    def wrapped(*args, **kwargs):
        result = function(*args, **kwargs)
        calls.append(1)
        return poison(result) if len(calls) == call else result

    return wrapped


def test_nan_loss_stops_sft_at_its_step_and_the_last_checkpoint_resumes(
    tmp_path, tiny_checkpoint, monkeypatch
):
    from alignment.errors import PaddockError
    from alignment.pipeline import run_recipe
    from alignment.stages import sft

    recipe = small_recipe(tmp_path, tiny_checkpoint, tmp_path / "runs", max_steps=4)
    reference = small_recipe(tmp_path / "ref", tiny_checkpoint, tmp_path / "ref/runs", max_steps=4)
    with monkeypatch.context() as patch:
        patch.setattr(sft, "lm_loss", poison_on_call(sft.lm_loss, 3, lambda out: (out[0] * math.nan, out[1])))
        with pytest.raises(PaddockError, match=r"loss is nan at step 3 \(examples \[\d+"):
            run_recipe(recipe)
    stage = tmp_path / "runs/tiny/sft"
    assert [p.name for p in sorted(stage.glob("checkpoints/step-*"))] == [
        "step-0000002"
    ]  # checkpoint_every 2
    assert not (stage / "COMPLETE").exists() and [r["step"] for r in metrics(stage)] == [1, 2]
    run_recipe(recipe)  # the cause is gone: resume from step 2
    run_recipe(reference)
    want = metrics(tmp_path / "ref/runs/tiny/sft")
    drop = lambda rows: comparable(rows, "")  # noqa: E731
    assert drop(metrics(stage)) == drop(want)
    assert want[-1]["loss"] < want[0]["loss"]  # it trained: a guard that froze the loss would not pass


def test_an_infinite_gradient_norm_stops_the_loop_naming_every_example_of_the_step(
    tmp_path, tiny_checkpoint, monkeypatch
):
    from alignment.errors import PaddockError
    from alignment.pipeline import run_recipe

    recipe = small_recipe(tmp_path, tiny_checkpoint, tmp_path / "runs")
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", poison_on_call(clip, 2, lambda n: n * math.inf))
    with pytest.raises(PaddockError, match=r"gradient norm is inf at step 2") as err:
        run_recipe(recipe)
    ids = re.search(r"examples \[([\d, ]+)\]", str(err.value)).group(1).split(", ")
    assert len(ids) == 4  # batch_size 4: all of the step's examples
    assert [r["step"] for r in metrics(tmp_path / "runs/tiny/sft")] == [1]


def ppo_copy(rl_run: Path, out: Path) -> Path:
    shutil.copytree(rl_run / "runs", out)
    shutil.rmtree(out / "tiny/ppo")
    return out / "tiny/ppo"


@pytest.mark.parametrize(
    "target, pattern",
    [
        ("reward", r"PPO: reward is not finite \(NaN or inf\) in rows \[1\] at step 2 \(batch ids \[\d+"),
        (
            "advantage",
            r"PPO: advantage is not finite \(NaN or inf\) in rows \[0, .* at step 2 \(batch ids \[\d+",
        ),
    ],
)
def test_nan_in_ppo_stops_at_the_iteration_with_rows_and_prompts(
    rl_run, tmp_path, monkeypatch, target, pattern
):
    from alignment.errors import PaddockError
    from alignment.pipeline import run_recipe
    from alignment.rl import ppo

    stage = ppo_copy(rl_run, tmp_path / "runs")
    if target == "reward":
        original_init = ppo.PPOTrainer.__init__

        def poison(scores):
            scores = dict(scores, reward=scores["reward"].clone())
            scores["reward"][1] = math.nan
            return scores

        def init(self, policy, reference, critic, reward_fn, *args, **kwargs):
            original_init(
                self, policy, reference, critic, poison_on_call(reward_fn, 2, poison), *args, **kwargs
            )

        monkeypatch.setattr(ppo.PPOTrainer, "__init__", init)
    else:

        def poison(result):
            advantages, returns = result
            advantages = advantages.clone()
            advantages[0, 0] = math.inf
            return advantages, returns

        # Whitening spreads one inf over every row, so the message lists them all.
        monkeypatch.setattr(ppo, "gae", poison_on_call(ppo.gae, 2, poison))
    with pytest.raises(PaddockError, match=pattern):
        run_recipe(rl_run / "recipe.yaml", [f"output_dir={tmp_path / 'runs'}"], only=["ppo"])
    # Iteration 1 was checkpointed (checkpoint_every 1); iteration 2 wrote nothing.
    assert [p.name for p in sorted(stage.glob("checkpoints/step-*"))] == ["step-0000001"]
    assert [r["step"] for r in metrics(stage)] == [1]
    if target == "reward":  # once is enough for the resume: the same path either way
        monkeypatch.undo()
        run_recipe(rl_run / "recipe.yaml", [f"output_dir={tmp_path / 'runs'}"], only=["ppo"])
        drop = lambda rows: comparable(rows, "")  # noqa: E731
        assert drop(metrics(stage)) == drop(metrics(rl_run / "runs/tiny/ppo"))


# --- reward-model score health ----------------------------------------------------------------


def test_score_health_flags_collapse_over_distinct_answers_and_explosion(capsys):
    from reward_models.health import ScoreHealth, score_problems

    assert score_problems(torch.full((4,), 0.3), ["a", "b", "c", "d"]).keys() == {"collapsed"}
    assert score_problems(torch.full((4,), 0.3), ["same"] * 4) == {}  # equal answers may score equally
    assert score_problems(torch.tensor([0.1, -2.0, 3.0])) == {}
    assert score_problems(torch.tensor([0.1, -500.0])).keys() == {"exploded"}
    health = ScoreHealth()
    for _ in range(3):
        health.check("safety", torch.zeros(3), ["x", "y", "z"])
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [
        "warning: reward model safety: scores collapsed: std 0.00e+00 over 3 distinct answers"
    ]
    assert health.summary() == {
        "ok": False,
        "problems": {"safety": {"collapsed": {"detail": warnings[0].split("collapsed: ")[1], "batches": 3}}},
    }


def test_rm_evaluation_reports_collapsed_scores(tmp_path, monkeypatch, capsys):
    import numpy as np

    from alignment.data.records import PreferencePair
    from reward_models import evaluation

    pairs = [
        PreferencePair(prompt=[{"role": "user", "content": f"q{i}"}], chosen=f"good {i}", rejected=f"bad {i}")
        for i in range(6)
    ]
    # The scorer is replaced by a collapsed RM: every answer gets 0.7.
    monkeypatch.setattr(
        evaluation, "score_test_sets", lambda *a, **k: {"t": (pairs, np.full(6, 0.7), np.full(6, 0.7))}
    )
    summary = evaluation.evaluate_rm(None, None, {"t": pairs}, tmp_path, name="rm_safety")
    assert summary["score_health"]["problems"]["rm_safety"].keys() == {"collapsed"}
    assert "warning: reward model rm_safety: scores collapsed" in capsys.readouterr().err


def test_rl_scorer_flags_exploding_scores_in_the_stage_summary(rl_run, tmp_path, monkeypatch, capsys):
    """Rejection sampling scores its samples with both RMs; the safety RM is made to explode."""
    from alignment.pipeline import run_recipe
    from safety import rewards

    shutil.copytree(rl_run / "runs", tmp_path / "runs")
    shutil.rmtree(tmp_path / "runs/tiny/rejection_sampling")
    real = rewards.rm_scores
    monkeypatch.setattr(
        rewards,
        "rm_scores",
        lambda model, *a, **k: real(model, *a, **k) * (1e4 if model is calls["safety"] else 1.0),
    )
    calls = {}
    original = rewards.RewardScorer.__init__

    def remember(self, helpful, safety, *args, **kwargs):
        calls["safety"] = safety
        original(self, helpful, safety, *args, **kwargs)

    monkeypatch.setattr(rewards.RewardScorer, "__init__", remember)
    run_recipe(rl_run / "recipe.yaml", [f"output_dir={tmp_path / 'runs'}"], only=["rejection_sampling"])
    summary = json.loads((tmp_path / "runs/tiny/rejection_sampling/summary.json").read_text())
    assert summary["rm_health"]["ok"] is False
    assert set(summary["rm_health"]["problems"]) == {"safety"}  # the helpfulness RM is healthy
    assert "warning: reward model safety: scores exploded" in capsys.readouterr().err
    reference = json.loads((rl_run / "runs/tiny/rejection_sampling/summary.json").read_text())
    assert reference["rm_health"] == {"ok": True, "problems": {}}


def test_a_read_only_output_dir_is_one_line_even_for_root(tmp_path, tiny_checkpoint, capsys, monkeypatch):
    """Root writes through chmod, so the read-only file system is simulated where the probe write
    happens: the same OSError a read-only mount raises (EROFS)."""
    import errno
    import pathlib

    from alignment import cli

    locked = tmp_path / "locked"
    real_write = pathlib.Path.write_text

    def write_text(self, *args, **kwargs):
        if locked in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "write_text", write_text)
    recipe = small_recipe(tmp_path, tiny_checkpoint, locked)
    assert cli.main(["run", str(recipe)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot write run outputs (Read-only file system)" in err
    assert not list(locked.rglob("*.json"))  # no stage started


def test_a_figure_is_saved_whole_or_not_at_all(tmp_path, monkeypatch):
    """save_figure writes to a hidden temp name and renames; a kill during savefig leaves the old
    plot (or none) and a temp that no *.png listing picks up."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alignment.plotting import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [1, 0])
    target = tmp_path / "loss.png"
    save_figure(fig, target)
    first = target.read_bytes()
    assert first.startswith(b"\x89PNG")

    def killed(self, fname, **kwargs):
        Path(fname).write_bytes(b"\x89PNG torn")
        raise KeyboardInterrupt  # stands for the kill: nothing after this line runs

    monkeypatch.setattr(type(fig), "savefig", killed)
    with pytest.raises(KeyboardInterrupt):
        save_figure(fig, target)
    assert target.read_bytes() == first
    assert [p.name for p in tmp_path.glob("*.png")] == ["loss.png"]
    plt.close(fig)
