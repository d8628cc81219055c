"""Peak host memory per process of a short SmolLM2 PPO stage under `accelerate launch`.

The recipe is the PPO stage's LoRA setup at bf16 autocast on SmolLM2-135M, 2 iterations of 8
prompts, with SmolLM2 itself (a fresh score head) as both reward models and the critic's start
(a path, so older checkouts read it too):
only memory matters here, not what is learnt. Each process reports its peak resident memory
(`ru_maxrss`) as it exits; the figure covers loading every model, rollouts, scoring and updates.

    python benchmarks/ppo_memory.py [--processes 2] [--repo DIR] [--out benchmarks/ppo_memory.json]

`--repo` runs another checkout of Paddock (e.g. a git worktree of an older commit) with this
machine's environment, so two versions can be measured the same way. `runtime_rss_gb` is the peak
of a process that only imports what the stage imports: the part of the peak that is no model. The
last line is JSON: `{"peak_rss_gb": [per process], "runtime_rss_gb": ..., "processes": N, "repo":
..., "commit": ...}`; `--out` also writes it to a file (tests/test_memory.py reads
benchmarks/ppo_memory.json).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
MARK = "PADDOCK_PEAK_RSS_KB"

# Run as each launched process: the CLI, then the process's peak resident memory on stdout.
WRAPPER = f"""
import atexit, resource, runpy, sys
atexit.register(lambda: print("{MARK}", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True))
sys.argv = ["paddock", *sys.argv[1:]]
runpy.run_module("alignment.cli", run_name="__main__")
"""


def recipe(out: Path, repo: Path) -> dict:
    from alignment.base_model import default_models

    smollm2 = str(default_models.prepare("smollm2-135m"))  # a path: RMs and critic start from it
    lora = {"r": 16, "alpha": 32}
    return {
        "run_name": "ppo_memory",
        "output_dir": str(out),
        "seed": 0,
        "model": {"name_or_path": smollm2, "precision": "bf16-autocast", "lora": lora},
        "stages": [
            {
                "type": "ppo",
                "reward_models": {"helpful": smollm2, "safety": smollm2, "max_length": 256},
                "iterations": 2,
                "batch_size": 8,
                "minibatch_size": 4,
                "max_new_tokens": 16,
                "learning_rate": 1e-5,
                "eval_every": 0,
                "eval_prompts": 4,
                "checkpoint_every": 10,
                "data": {
                    "sources": [{"path": str(repo / "data/gym/rl_prompts_train.jsonl")}],
                    "max_rows": 64,
                    "test_fraction": 0.1,
                },
            }
        ],
        "logging": {"report_to": ["none"], "progress": False},
    }


def measure(repo: Path, processes: int) -> list[float]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "recipe.yaml").write_text(yaml.safe_dump(recipe(tmp / "runs", repo)))
        (tmp / "measure.py").write_text(WRAPPER)
        command = [
            sys.executable,
            "-m",
            "accelerate.commands.launch",
            "--config_file",
            str(repo / "recipes/accelerate/ddp.yaml"),
            "--num_processes",
            str(processes),
            str(tmp / "measure.py"),
            "run",
            str(tmp / "recipe.yaml"),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(repo), "TMPDIR": str(tmp)}
        result = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True, timeout=1800)
        if result.returncode != 0:
            raise SystemExit(f"ppo_memory: the run failed:\n{result.stderr[-3000:]}")
        peaks = [int(kb) / 1e6 for kb in re.findall(rf"{MARK} (\d+)", result.stdout)]
        if len(peaks) != processes:
            raise SystemExit(f"ppo_memory: expected {processes} peak lines, got {len(peaks)}")
        return sorted(round(p, 3) for p in peaks)


def runtime_rss_gb(repo: Path) -> float:
    """Peak resident memory of a process that imports the PPO stage and loads nothing."""
    code = (
        "import resource, alignment.cli, alignment.stages.registry, alignment.rl.ppo, peft, accelerate; "
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"
    )
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, env=env, capture_output=True, text=True)
    return round(int(out.stdout.split()[-1]) / 1e6, 3)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--repo", type=Path, default=HERE.parent, help="the Paddock checkout to run")
    parser.add_argument("--out", type=Path, help="also write the JSON result here")
    args = parser.parse_args(argv)
    repo = args.repo.resolve()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True
    ).stdout.strip()
    peaks = measure(repo, args.processes)
    result = {
        "peak_rss_gb": peaks,
        "runtime_rss_gb": runtime_rss_gb(repo),
        "processes": args.processes,
        "commit": commit,
    }
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({**result, "repo": str(repo)}))


if __name__ == "__main__":
    main()
