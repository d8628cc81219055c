"""`make gpu-check`: Paddock's GPU path checked in under 10 minutes on one CUDA GPU.

Paddock is developed on a CPU-only machine, so its GPU path is checked in one go by whoever has a
GPU, once a CUDA torch build is installed in the project's environment. Five steps:

1. kernels     tests/test_kernels_triton.py compiled for the GPU (TRITON_INTERPRET removed), its
               fp32 and bf16 CUDA cases only: the CPU interpreter case checks nothing GPU-specific.
2. pipeline    the tiny random-weight pipeline of tests/test_rl_stages.py (every stage type) run by
               `paddock run ... model.device=cuda`; every stage's summary.json must say it ran on a
               CUDA device (`placement.device`).
3. generation  benchmarks/generation.py --device cuda --repeats 1 --dtypes bfloat16: best-of-K
               tokens/s, Paddock's engine against transformers `generate`.
4. train_step  benchmarks/train_step.py --device cuda --repeats 1: training-step tokens/s.
5. vllm        benchmarks/generation.py --device cuda --repeats 1 --dtypes bfloat16 --vllm: vLLM's
               worker on the GPU beside Paddock's model (colocated, gpu_memory_utilization 0.3),
               tensor-parallel over 2 GPUs where there are 2 or more. Needs a CUDA vLLM in its own
               environment (`make install-vllm VLLM=vllm`); without one the step is skipped, which
               does not fail the check, and says so.

Each step is a child process with its own time limit, so a hang or crash in one still leaves the
others' results, and the steps together stay within TOTAL_SECONDS. Progress lines go to stdout and
each child's whole output to a log file in a work directory (its path is printed). The last stdout
line is one JSON object with everything: versions, the GPU, each step's result and seconds, "ok".

Exit status: 0 every step passed; 1 a step failed or ran out of time; 2 torch cannot be imported;
3 no CUDA GPU here (one line on stderr and nothing else: there is nothing to check).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOTAL_SECONDS = 565  # all steps together: the promised 10 minutes less room to start, print and clean up
# Seconds per step, in run order; estimates (not yet timed on a GPU), and a step's unused time goes
# to the next one.
BUDGETS = {"kernels": 135, "pipeline": 165, "generation": 90, "train_step": 75, "vllm": 100}
OPTIONAL = {"vllm"}  # needs more than `make install` gives: skipped, not failed, where it is missing
MIN_SECONDS = 20  # a step left less time than this is not started: it could not finish
EXIT_OK, EXIT_FAILED, EXIT_NO_TORCH, EXIT_NO_GPU = 0, 1, 2, 3
TAIL_CHARS = 3000  # of a failed step's output, kept in the JSON line
# Unset for every child: an inherited TRITON_INTERPRET=1 would run the kernels in the CPU
# interpreter, and PADDOCK_KERNELS could force the torch fallback; the check is of the default path.
UNSET = ("TRITON_INTERPRET", "PADDOCK_KERNELS")


@dataclass
class Child:
    """A finished (or killed) step process."""

    returncode: int | None  # None: killed at its time limit
    output: str  # stdout and stderr as they interleaved
    seconds: float
    log: str  # the file that holds `output`


def run_child(cmd: list[str], timeout: float, env: dict, log: Path) -> Child:
    """Run `cmd` in the repository with stdout and stderr into `log`; past `timeout` seconds kill
    its whole process group (pytest and the CLI may start processes of their own)."""
    start = time.monotonic()
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            returncode = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            returncode = None
        finally:  # a timeout or a Ctrl-C here: the child's group goes too
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    return Child(returncode, log.read_text(errors="replace"), time.monotonic() - start, str(log))


def child_env(base: dict | None = None) -> dict:
    """The environment of a step: `base` (default: ours) without UNSET, with the repository on
    PYTHONPATH so the benchmarks import `alignment` even without an editable install."""
    env = {k: v for k, v in (os.environ if base is None else base).items() if k not in UNSET}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


# Reading the children's output -----------------------------------------------------------------

PYTEST_COUNT = re.compile(r"\b(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)\b")
PYTEST_TIME = re.compile(r"\bin \d+(\.\d+)?s\b")


def pytest_counts(output: str) -> dict[str, int]:
    """passed / failed / errors / skipped / deselected from pytest's last summary line, as in
    `==== 2 failed, 61 passed, 1 deselected in 41.20s ====`; all zero if there is none."""
    counts = dict.fromkeys(("passed", "failed", "errors", "skipped", "deselected"), 0)
    for line in reversed(output.splitlines()):
        found = PYTEST_COUNT.findall(line)
        if found and PYTEST_TIME.search(line):
            for number, word in found:
                key = "errors" if word.startswith("error") else word
                counts[key] = counts.get(key, 0) + int(number)
            break
    return counts


def last_json(output: str) -> dict | None:
    """The last line of `output` that is a JSON object: every benchmark ends with one (stderr lines,
    such as warnings at exit, may follow it in the merged output)."""
    for line in reversed(output.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(value, dict):
                return value
    return None


def stage_devices(run_dir: Path, stages: list[str]) -> dict[str, str | None]:
    """Each stage's `placement.device` from its summary.json; None where the file or key is missing."""
    devices: dict[str, str | None] = {}
    for stage in stages:
        try:
            summary = json.loads((run_dir / stage / "summary.json").read_text())
            devices[stage] = summary["placement"]["device"]
        except (OSError, ValueError, KeyError, TypeError):
            devices[stage] = None
    return devices


def step_result(child: Child, ok: bool, **fields) -> dict:
    """One step's entry in the JSON line; a failed step carries the end of its output."""
    result = {"ok": ok, "seconds": round(child.seconds, 1), **fields, "returncode": child.returncode}
    if child.returncode is None:
        result["error"] = f"killed at its time limit after {child.seconds:.0f}s"
    if not ok:
        result["output_tail"] = child.output[-TAIL_CHARS:]
    result["log"] = child.log
    return result


def not_run(reason: str, seconds: float = 0.0) -> dict:
    return {"ok": False, "seconds": round(seconds, 1), "error": reason}


def kernels_result(child: Child) -> dict:
    """Passed only if pytest passed and ran at least one case: with no triton, or no CUDA seen by
    the child, the file is skipped or deselected, and that is no check at all."""
    counts = pytest_counts(child.output)
    ok = child.returncode == 0 and counts["passed"] > 0 and counts["failed"] == counts["errors"] == 0
    return step_result(child, ok, **counts)


def pipeline_result(child: Child, devices: dict[str, str | None]) -> dict:
    """Passed if the run succeeded and every stage's summary names a CUDA device."""
    on_gpu = bool(devices) and all(d is not None and d.startswith("cuda") for d in devices.values())
    return step_result(child, child.returncode == 0 and on_gpu, stages=devices)


def benchmark_result(child: Child) -> dict:
    """Passed if the benchmark exited 0 with its JSON summary; its tokens/s and speedup are lifted
    to the top of the entry, and the whole summary is kept under `summary`."""
    summary = last_json(child.output)
    ok = child.returncode == 0 and summary is not None and bool(summary.get("tokens_per_s"))
    top = {k: summary[k] for k in ("tokens_per_s", "speedup") if k in summary} if summary else {}
    return step_result(child, ok, **top, summary=summary)


def overall(info: dict, steps: dict[str, dict], seconds: float) -> dict:
    """The last stdout line: `ok` only when every step ran and passed (an optional step may have
    been skipped instead)."""
    ok = set(steps) == set(BUDGETS) and all(
        step["ok"] or (name in OPTIONAL and "skipped" in step) for name, step in steps.items()
    )
    return {"check": "gpu", "ok": ok, **info, "seconds": round(seconds, 1), "steps": steps}


def step_timeout(left: float, step: str) -> float:
    """Seconds `step` may take: what is left of the run less the budgets of the steps after it, so
    that time an earlier step did not use goes to the next one and later steps keep their own."""
    later = list(BUDGETS)[list(BUDGETS).index(step) + 1 :]
    return left - sum(BUDGETS[name] for name in later)


# The steps --------------------------------------------------------------------------------------


def kernels_command() -> list[str]:
    """The Triton kernel tests' CUDA cases (their ids carry the device), without the test that
    re-runs the file in the CPU interpreter."""
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_kernels_triton.py"]
    return [*cmd, "-k", "cuda and not interpreter"]


def kernels_step(work: Path, timeout: float) -> dict:
    return kernels_result(run_child(kernels_command(), timeout, child_env(), work / "kernels.log"))


@dataclass
class TinyPipeline:
    recipe: Path
    run_dir: Path  # where `paddock run` writes, given output_dir=run_dir.parent
    stages: list[str]
    env: dict


def build_pipeline(work: Path) -> TinyPipeline:
    """The tests' tiny pipeline in `work`: their random 2-layer checkpoint (SmolLM2's tokenizer) and
    their whole-pipeline recipe at toy sizes, built by the tests' own helpers so the two cannot
    drift apart. The run gets the tests' offline environment (hub off, network guard). What the
    build prints (progress bars) goes to build.log, not between the check's progress lines."""
    import yaml

    sys.path.insert(0, str(REPO))  # `tests` is a directory of the repository, not an installed package
    from alignment import load_tokenizer
    from alignment.base_model.default_models import prepare
    from tests.test_pipeline import save_tiny_checkpoint
    from tests.test_rl_stages import offline_env, write_pipeline_recipe

    with (
        (work / "build.log").open("w") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):
        checkpoint = save_tiny_checkpoint(work / "tiny", load_tokenizer(prepare("smollm2-135m")))
    (work / "pipeline").mkdir()
    recipe = write_pipeline_recipe(work / "pipeline", checkpoint)
    body = yaml.safe_load(recipe.read_text())
    stages = [stage.get("name") or stage["type"] for stage in body["stages"]]
    run_dir = work / "pipeline" / "gpu_runs" / body["run_name"]
    return TinyPipeline(recipe, run_dir, stages, child_env(offline_env()))


def pipeline_step(work: Path, timeout: Callable[[], float]) -> dict:
    start = time.monotonic()
    try:
        tiny = build_pipeline(work)
    except Exception as error:  # a broken build is this step's failure, not the whole check's
        return not_run(
            f"building the tiny pipeline failed: {type(error).__name__}: {error}", time.monotonic() - start
        )
    left = timeout()
    if left < MIN_SECONDS:
        return not_run(f"not started: the build left under {MIN_SECONDS}s", time.monotonic() - start)
    cmd = [sys.executable, "-m", "alignment.cli", "run", str(tiny.recipe), "model.device=cuda"]
    cmd.append(f"output_dir={tiny.run_dir.parent}")
    child = run_child(cmd, left, tiny.env, work / "pipeline.log")
    child.seconds = time.monotonic() - start  # the build counts too
    result = pipeline_result(child, stage_devices(tiny.run_dir, tiny.stages))
    if result["ok"]:  # a few hundred MB of tiny runs; a failed one stays to be looked at
        shutil.rmtree(work / "pipeline", ignore_errors=True)
        shutil.rmtree(work / "tiny", ignore_errors=True)
    return result


BENCHMARK_ARGS = {
    "generation": ["--device", "cuda", "--repeats", "1", "--dtypes", "bfloat16"],
    "train_step": ["--device", "cuda", "--repeats", "1"],
}


def benchmark_step(script: str, work: Path, timeout: float) -> dict:
    cmd = [sys.executable, f"benchmarks/{script}.py", *BENCHMARK_ARGS[script]]
    return benchmark_result(run_child(cmd, timeout, child_env(), work / f"{script}.log"))


def vllm_command(gpus: int) -> list[str]:
    cmd = [sys.executable, "benchmarks/generation.py", *BENCHMARK_ARGS["generation"], "--vllm"]
    return [*cmd, "--vllm-tp", "2"] if gpus >= 2 else cmd


def vllm_result(child: Child) -> dict:
    """A generation benchmark result that must include vLLM's figure."""
    result = benchmark_result(child)
    if result["ok"] and not any(k.startswith("vllm") for k in result.get("tokens_per_s", {})):
        result.update(ok=False, error="the benchmark's summary has no vLLM figure")
    return result


def vllm_step(work: Path, timeout: float, gpus: int) -> dict:
    sys.path.insert(0, str(REPO))
    from alignment.engines.vllm_client import find_python

    if find_python() is None:
        return {"ok": False, "seconds": 0.0, "skipped": "vLLM not installed (make install-vllm VLLM=vllm)"}
    return vllm_result(run_child(vllm_command(gpus), timeout, child_env(), work / "vllm.log"))


def detail(result: dict) -> str:
    """A step's result in a few words for its progress line (the JSON line has all of it)."""
    shown = ", ".join(
        f"{k} {result[k]}" for k in ("passed", "failed", "stages", "tokens_per_s") if k in result
    )
    if result["ok"]:
        return shown
    if "skipped" in result:
        return f"skipped: {result['skipped']}"
    lines = [line for line in result.get("output_tail", "").splitlines() if line.strip()]
    why = result.get("error") or (f"exit {result.get('returncode')}: {lines[-1].strip()}" if lines else "")
    return "; ".join(part for part in (why, shown, result.get("log") and f"log {result['log']}") if part)


def gpu_info(torch) -> dict:
    def version(*packages: str) -> str | None:
        for package in packages:  # CUDA torch wheels depend on `triton`; some builds ship `pytorch-triton`
            try:
                return importlib.metadata.version(package)
            except importlib.metadata.PackageNotFoundError:
                pass
        return None

    try:
        gpu = torch.cuda.get_device_name(0)
    except Exception as error:  # CUDA seen but unusable (a driver too old): the steps will say more
        gpu = f"unknown ({type(error).__name__}: {error})"
    return {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "triton": version("triton", "pytorch-triton"),
        "gpu": gpu,
        "gpus": torch.cuda.device_count(),
    }


def cuda_available(torch) -> bool:
    """torch.cuda.is_available(), quietly: without a driver torch warns on stderr, and the no-GPU
    answer must be exactly one line."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.cuda.is_available()


def main() -> int:
    try:
        import torch
    except ImportError as error:
        print(f"gpu-check: torch cannot be imported ({error}); install a CUDA torch build", file=sys.stderr)
        return EXIT_NO_TORCH
    if not cuda_available(torch):
        print(f"gpu-check: no CUDA GPU here (torch {torch.__version__}); nothing to check", file=sys.stderr)
        return EXIT_NO_GPU

    start = time.monotonic()
    deadline = start + TOTAL_SECONDS
    info = gpu_info(torch)
    work = Path(tempfile.mkdtemp(prefix="paddock-gpu-check-"))
    info["work_dir"] = str(work)
    print(
        f"gpu-check: {info['gpu']}, torch {info['torch']} (CUDA {info['cuda']}), triton {info['triton']}",
        flush=True,
    )
    print(f"gpu-check: logs in {work}", flush=True)

    runners: dict[str, Callable[[Callable[[], float]], dict]] = {
        "kernels": lambda timeout: kernels_step(work, timeout()),
        "pipeline": lambda timeout: pipeline_step(work, timeout),
        "generation": lambda timeout: benchmark_step("generation", work, timeout()),
        "train_step": lambda timeout: benchmark_step("train_step", work, timeout()),
        "vllm": lambda timeout: vllm_step(work, timeout(), info["gpus"]),
    }
    steps = {}
    for number, (name, run) in enumerate(runners.items(), 1):
        position = f"[{number}/{len(runners)}]"
        print(f"gpu-check: {position} {name} ...", flush=True)

        def timeout(name=name) -> float:
            return step_timeout(deadline - time.monotonic(), name)

        if timeout() < MIN_SECONDS:
            steps[name] = not_run(f"not started: under {MIN_SECONDS}s of the {TOTAL_SECONDS}s run left")
        else:
            steps[name] = run(timeout)
        result = steps[name]
        verdict = "ok" if result["ok"] else "skipped" if "skipped" in result else "FAILED"
        print(
            f"gpu-check: {position} {name} {verdict} in {result['seconds']:.0f}s: {detail(result)}",
            flush=True,
        )

    summary = overall(info, steps, time.monotonic() - start)
    print(
        f"gpu-check: {'all steps passed' if summary['ok'] else 'FAILED'} in {summary['seconds']:.0f}s",
        flush=True,
    )
    print(json.dumps(summary), flush=True)  # steps in run order
    return EXIT_OK if summary["ok"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
