"""`make gpu-check` (benchmarks/gpu_check.py) without a GPU: its no-GPU answer, the make target's
command, how it reads its steps' output and runs its steps (on fake children), and that the
benchmarks it calls accept the options it passes. Nothing here needs CUDA or runs a benchmark."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
GENERATION_SUMMARY = {
    "benchmark": "generation",
    "device": "cuda:0",
    "speedup": 1.52,
    "tokens_per_s": {"paddock bfloat16": 9120.4, "transformers bfloat16": 6001.2},
}


def load(script: str):
    """A benchmarks/ script as a module, registered in sys.modules (its dataclasses look their module
    up there), with its directory on sys.path for its `from common import ...`."""
    name = f"benchmarks_{script}"
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{script}.py")
        module = sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.fixture(scope="module")
def gc():
    return load("gpu_check")


def child(gc, output: str, returncode: int | None = 0, seconds: float = 12.0):
    return gc.Child(returncode, output, seconds, "/tmp/step.log")


def test_without_cuda_it_says_so_in_one_line_and_exits_3():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU even on a GPU machine
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / "gpu_check.py")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 3
    assert result.stdout == ""
    assert re.fullmatch(r"gpu-check: no CUDA GPU here \(torch \S+\); nothing to check\n", result.stderr)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_the_make_target_runs_the_script_with_the_venv_or_python3_and_installs_nothing():
    def recipe(*variables: str) -> list[str]:
        dry = subprocess.run(
            ["make", "--no-print-directory", "-n", "gpu-check", *variables],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        return dry.stdout.splitlines()

    venv = ".venv/bin/python" if (REPO / ".venv/bin/python").exists() else "python3"
    assert recipe() == [f"{venv} benchmarks/gpu_check.py"]
    assert recipe("PY=/no/such/venv/python") == ["python3 benchmarks/gpu_check.py"]


def test_pytest_counts_come_from_the_last_summary_line(gc):
    earlier = "tests/test_kernels_triton.py ....F.\n1 passed in 0.1s\n"  # only the last summary counts
    output = earlier + "==== 2 failed, 61 passed, 1 deselected in 41.20s ===="
    assert gc.pytest_counts(output) == {"passed": 61, "failed": 2, "errors": 0, "skipped": 0, "deselected": 1}
    assert gc.pytest_counts("64 passed, 3 warnings in 12s\n")["passed"] == 64
    assert gc.pytest_counts("1 failed, 1 error in 3.1s")["errors"] == 1
    assert gc.pytest_counts("no tests ran in 0.01s") == dict.fromkeys(
        ("passed", "failed", "errors", "skipped", "deselected"), 0
    )


def test_the_kernel_step_needs_a_clean_run_of_at_least_one_case(gc):
    assert gc.kernels_result(child(gc, "64 passed, 1 deselected in 30.2s"))["ok"]
    failed = gc.kernels_result(child(gc, "2 failed, 62 passed, 1 deselected in 30.2s", returncode=1))
    assert not failed["ok"] and failed["failed"] == 2 and "2 failed" in failed["output_tail"]
    assert not gc.kernels_result(child(gc, "1 skipped in 0.3s"))["ok"]  # no triton: no check
    killed = gc.kernels_result(child(gc, "....", returncode=None, seconds=135))
    assert not killed["ok"] and "time limit" in killed["error"]


def test_without_cuda_the_kernel_command_selects_no_case_and_fails(gc, tmp_path, monkeypatch):
    """The real command with no GPU visible: the file runs, the CUDA selection is empty, and the
    step reports a failure rather than a pass with nothing checked."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    result = gc.kernels_step(tmp_path, timeout=300)
    assert not result["ok"] and result["passed"] == 0 and result["returncode"] == 5, result
    assert (tmp_path / "kernels.log").is_file()


def test_a_benchmark_result_is_its_last_json_line(gc):
    output = f"machine: H100\n| table |\n{json.dumps(GENERATION_SUMMARY)}\nWarning: at exit\n"
    result = gc.benchmark_result(child(gc, output))
    assert result["ok"] and result["speedup"] == 1.52
    assert result["tokens_per_s"] == GENERATION_SUMMARY["tokens_per_s"]
    assert result["summary"] == GENERATION_SUMMARY and "output_tail" not in result

    crashed = gc.benchmark_result(child(gc, "Traceback (most recent call last):\n  ...\nRuntimeError: x", 1))
    assert not crashed["ok"] and crashed["summary"] is None and "RuntimeError" in crashed["output_tail"]
    assert not gc.benchmark_result(child(gc, json.dumps(GENERATION_SUMMARY), returncode=1))["ok"]
    assert gc.last_json('[1, 2]\n{"a": 1}\n{broken\n[3]') == {"a": 1}
    assert gc.last_json("no json here") is None


def test_the_pipeline_passes_only_if_every_stage_ran_on_a_gpu(gc, tmp_path):
    for stage, device in [("sft", "cuda:0"), ("ppo", "cuda:0"), ("evaluation", "cpu")]:
        (tmp_path / stage).mkdir()
        (tmp_path / stage / "summary.json").write_text(json.dumps({"placement": {"device": device}}))
    (tmp_path / "gatt").mkdir()
    (tmp_path / "gatt" / "summary.json").write_text(json.dumps({"final": {}}))  # no placement record
    devices = gc.stage_devices(tmp_path, ["sft", "ppo", "evaluation", "gatt", "rm_safety"])
    assert devices == {"sft": "cuda:0", "ppo": "cuda:0", "evaluation": "cpu", "gatt": None, "rm_safety": None}
    assert not gc.pipeline_result(child(gc, ""), devices)["ok"]
    on_gpu = {"sft": "cuda:0", "ppo": "cuda:1"}
    assert gc.pipeline_result(child(gc, ""), on_gpu)["ok"]
    assert not gc.pipeline_result(child(gc, "", returncode=1), on_gpu)["ok"]
    assert not gc.pipeline_result(child(gc, ""), {})["ok"]


def test_later_steps_keep_their_budget_and_get_what_earlier_ones_left(gc):
    assert sum(gc.BUDGETS.values()) == gc.TOTAL_SECONDS < 10 * 60
    budgets = gc.BUDGETS
    assert gc.step_timeout(gc.TOTAL_SECONDS, "kernels") == budgets["kernels"]
    # kernels took 30 s less than its budget: the pipeline may take that too
    left = gc.TOTAL_SECONDS - (budgets["kernels"] - 30)
    assert gc.step_timeout(left, "pipeline") == budgets["pipeline"] + 30
    assert gc.step_timeout(50, "vllm") == 50  # the last step gets all that is left


def test_the_vllm_step_needs_vllms_figure_and_goes_tensor_parallel_on_two_gpus(gc):
    """Its command is the generation check's plus --vllm (and --vllm-tp 2 with 2+ GPUs); a summary
    without a vLLM figure fails it, one with it passes."""
    assert gc.vllm_command(1)[2:] == [*gc.BENCHMARK_ARGS["generation"], "--vllm"]
    assert gc.vllm_command(4)[-2:] == ["--vllm-tp", "2"]
    assert not gc.vllm_result(child(gc, json.dumps(GENERATION_SUMMARY)))["ok"]
    with_vllm = {**GENERATION_SUMMARY, "tokens_per_s": {"paddock bfloat16": 1.0, "vllm bfloat16": 2.0}}
    assert gc.vllm_result(child(gc, json.dumps(with_vllm)))["ok"]


def test_the_step_environment_drops_the_interpreter_and_forced_kernels(gc):
    env = gc.child_env(
        {"TRITON_INTERPRET": "1", "PADDOCK_KERNELS": "torch", "HOME": "/h", "PYTHONPATH": "/x"}
    )
    assert env == {"HOME": "/h", "PYTHONPATH": f"{REPO}{os.pathsep}/x"}


@pytest.mark.parametrize("failing", [None, "generation"])
def test_main_runs_every_step_and_ends_with_one_json_line(gc, tmp_path, monkeypatch, capsys, failing):
    """The orchestration on fake children: each step gets a positive time limit and an environment
    without TRITON_INTERPRET, the pipeline's stage summaries are read, and the exit status and the
    last line's `ok` follow the steps."""
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(gc, "cuda_available", lambda torch: True)
    monkeypatch.setattr(
        gc,
        "gpu_info",
        lambda torch: {"torch": "2.x", "cuda": "12.x", "gpu": "Fake GPU", "triton": "3.x", "gpus": 1},
    )
    monkeypatch.setattr(gc.tempfile, "mkdtemp", lambda prefix: str(tmp_path))
    stages = ["sft", "ppo"]

    def build(work):
        (work / "pipeline").mkdir()
        return gc.TinyPipeline(work / "recipe.yaml", work / "pipeline/gpu_runs/tiny", stages, gc.child_env())

    def run_child(cmd, timeout, env, log):
        assert 0 < timeout <= gc.TOTAL_SECONDS and "TRITON_INTERPRET" not in env
        if "pytest" in cmd:
            return child(gc, "64 passed, 1 deselected in 30.2s")
        if "alignment.cli" in cmd:
            assert "model.device=cuda" in cmd
            run_dir = Path(next(a for a in cmd if a.startswith("output_dir=")).split("=", 1)[1]) / "tiny"
            for stage in stages:
                (run_dir / stage).mkdir(parents=True)
                (run_dir / stage / "summary.json").write_text('{"placement": {"device": "cuda:0"}}')
            return child(gc, "results: ...")
        script = Path(cmd[1]).stem
        assert cmd[2:] == gc.BENCHMARK_ARGS[script]
        if script == failing:
            return child(gc, "Traceback ...\ntorch.OutOfMemoryError: CUDA out of memory", 1)
        return child(gc, json.dumps({**GENERATION_SUMMARY, "benchmark": script}))

    monkeypatch.setattr(gc, "build_pipeline", build)
    monkeypatch.setattr(gc, "run_child", run_child)
    status = gc.main()
    out = capsys.readouterr().out.splitlines()
    summary = json.loads(out[-1])
    assert list(summary["steps"]) == ["kernels", "pipeline", "generation", "train_step", "vllm"]
    # The suite runs without vLLM (PADDOCK_VLLM_PYTHON=none): that step is skipped, not failed.
    assert summary["steps"]["vllm"]["skipped"].startswith("vLLM not installed")
    assert summary["steps"]["kernels"]["passed"] == 64
    assert summary["steps"]["pipeline"]["stages"] == {"sft": "cuda:0", "ppo": "cuda:0"}
    assert summary["gpu"] == "Fake GPU" and summary["work_dir"] == str(tmp_path)
    if failing:
        assert status == 1 and not summary["ok"] and not summary["steps"][failing]["ok"]
        assert "out of memory" in summary["steps"][failing]["output_tail"]
    else:
        assert status == 0 and summary["ok"] and summary["steps"]["train_step"]["speedup"] == 1.52
        assert not (tmp_path / "pipeline").exists()  # a passed pipeline's runs are removed


@pytest.fixture(scope="module")
def generation():
    return load("generation")


@pytest.fixture(scope="module")
def train_step():
    return load("train_step")


@pytest.fixture
def one_gpu(monkeypatch):
    """resolve_device as on a one-GPU machine, without touching CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.mark.parametrize("script", ["generation", "train_step"])
def test_the_benchmarks_default_to_the_cpu_and_accept_the_checks_options(script, request, one_gpu, gc):
    bench = request.getfixturevalue(script)
    assert bench.build_parser().parse_args([]).device == "cpu"
    assert bench.parse_args([]).device == torch.device("cpu")
    args = bench.parse_args(gc.BENCHMARK_ARGS[script])
    assert args.device == torch.device("cuda", 0) and args.repeats == 1


def test_generation_parses_the_checks_dtype_and_keeps_llama_cpp_on_the_cpu(generation, one_gpu, capsys):
    assert generation.parse_args(["--device", "cuda", "--dtypes", "bfloat16"]).dtypes == "bfloat16"
    with pytest.raises(SystemExit) as exit_info:
        generation.parse_args(["--device", "cuda", "--llama-cpp"])
    assert exit_info.value.code == 2 and "--llama-cpp times a CPU build" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["generation", "train_step"])
def test_a_benchmark_asked_for_a_missing_gpu_stops_with_a_usage_error(script, request, monkeypatch, capsys):
    bench = request.getfixturevalue(script)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(SystemExit) as exit_info:
        bench.parse_args(["--device", "cuda"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no CUDA GPU" in err and "Traceback" not in err
