"""A whole rejection-sampling stage timed with each rollout engine: Paddock's and vLLM.

The quickstart recipe's first three stages (SFT, helpfulness and safety RMs on SmolLM2-135M) run
once; then its rejection-sampling stage runs again and again from them, alternating engines
(`generation.engine=paddock` / `vllm`), and each run's stage wall time is read from the run's
timings.json. Everything the stage does is in the time: gold suite before and after, sampling
(prompts x K answers), RM scoring, the LoRA fine-tune and saving, and for vLLM its worker's start-up
and the weight syncs. So the figure says which engine a researcher should pick for this job, not
only which decodes faster.

    python benchmarks/rs_engines.py [--repeats 2] [--prompts 64] [--samples 8] [--new-tokens 64]

The last line is a JSON object with each engine's median stage seconds and `vllm_speedup`
(Paddock seconds / vLLM seconds). Needs vLLM (`make install-vllm`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from alignment.engines.vllm_client import require_python

from common import alternate, machine, median, print_summary, print_table

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes/quickstart.yaml"
PREFIX = ["sft", "rm_helpful", "rm_safety"]


def paddock_run(recipe_args: list[str], stages: list[str]) -> None:
    command = [sys.executable, "-m", "alignment.cli", "run", str(RECIPE), *recipe_args]
    for stage in stages:
        command += ["--stage", stage]
    subprocess.run(command, check=True, cwd=REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--prompts", type=int, default=64, help="prompts per iteration")
    parser.add_argument("--samples", type=int, default=8, help="answers per prompt (K)")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", default=str(REPO / "runs"), help="output_dir for the benchmark's run")
    args = parser.parse_args()
    try:
        require_python()
    except Exception as err:
        parser.error(str(err))

    run_name = "bench_rs_engines"
    run_dir = Path(args.out) / run_name
    common = [f"run_name={run_name}", f"output_dir={args.out}", "logging.progress=false"]
    print(f"machine: {machine()}")
    print(f"prefix stages {PREFIX} (once) -> {run_dir}")
    paddock_run(common, PREFIX)
    stage = "rejection_sampling"
    sizes = [
        f"stages.{stage}.prompts_per_iteration={args.prompts}",
        f"stages.{stage}.samples_per_prompt={args.samples}",
        f"stages.{stage}.max_new_tokens={args.new_tokens}",
    ]

    def run_with(engine: str):
        def run() -> dict:
            shutil.rmtree(run_dir / stage, ignore_errors=True)
            start = time.perf_counter()
            paddock_run([*common, *sizes, f"generation.engine={engine}"], [stage])
            wall = time.perf_counter() - start
            seconds = json.loads((run_dir / "timings.json").read_text())[stage]
            summary = json.loads((run_dir / stage / "summary.json").read_text())
            return {
                "seconds": seconds,
                "process_seconds": round(wall, 1),
                "mean_reward": round(summary["iterations"][0]["mean_reward"], 3),
                "engine": summary["generation"]["engine"],
            }

        return run

    results = alternate({"paddock": run_with("paddock"), "vllm": run_with("vllm")}, args.repeats)
    for name, runs in results.items():
        assert all(r["engine"] == name for r in runs), runs
    seconds = {name: median(runs, "seconds") for name, runs in results.items()}
    rows = [
        [name, f"{seconds[name]:.1f}", f"{median(runs, 'process_seconds'):.1f}"]
        for name, runs in results.items()
    ]
    print()
    print(
        f"rejection sampling: {args.prompts} prompts x {args.samples} samples x {args.new_tokens} new tokens"
    )
    print_table(["engine", "stage seconds (median)", "process seconds (median)"], rows)
    print_summary(
        {
            "benchmark": "rs_engines",
            "job": {"prompts": args.prompts, "samples": args.samples, "new_tokens": args.new_tokens},
            "stage_seconds": {k: round(v, 1) for k, v in seconds.items()},
            "vllm_speedup": round(seconds["paddock"] / seconds["vllm"], 2),
            "rounds": {name: [r["seconds"] for r in runs] for name, runs in results.items()},
        }
    )


if __name__ == "__main__":
    main()
