"""benchmarks/llama_cpp_bench.py's accounting, with llama-batched-bench's output faked: the binary takes
minutes to build, so the tests never run it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.fixture
def llama_cpp():
    spec = importlib.util.spec_from_file_location("benchmarks_llama_cpp", BENCHMARKS / "llama_cpp_bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_bench(monkeypatch, stdout: str) -> list[list[str]]:
    calls = []

    def run(command, **kwargs):
        calls.append(command)
        return subprocess.CompletedProcess(command, 0, stdout=stdout, stderr="oops")

    monkeypatch.setattr(subprocess, "run", run)
    return calls


def test_the_job_counts_one_prefill_per_distinct_prompt(llama_cpp, monkeypatch):
    """16 prompts x 8 samples: batched-bench runs 128 rows sharing one 72-token prompt, which it
    prefills in t_pp = 0.1 s; the job has 16 distinct prompts, so its prefill is 16 x 0.1 = 1.6 s,
    plus t_tg = 12.0 s of decode: 13.6 s for 128 x 64 = 8192 tokens."""
    record = {"pp": 72, "tg": 64, "pl": 128, "t_pp": 0.1, "t_tg": 12.0, "speed_tg": 682.7}
    calls = fake_bench(monkeypatch, "main: loading\n" + json.dumps(record) + "\n")

    job = llama_cpp.best_of_k_job(Path("bench"), Path("m.gguf"), 16, 72, 8, 64, threads=2)

    assert job["tokens"] == 8192
    assert job["seconds"] == pytest.approx(13.6)
    assert job["prefill_seconds"] == pytest.approx(1.6)
    command = calls[0]
    flag = lambda name: command[command.index(name) + 1]  # noqa: E731
    assert (flag("-npp"), flag("-ntg"), flag("-npl"), flag("-np"), flag("-t")) == (
        "72",
        "64",
        "128",
        "128",
        "2",
    )
    # Each of the 128 rows keeps its own stream of prompt + answer positions.
    assert flag("-c") == str(128 * (72 + 64))
    assert "-pps" in command


def test_no_record_is_an_error_that_shows_the_tool_output(llama_cpp, monkeypatch):
    fake_bench(monkeypatch, "nothing useful\n")
    with pytest.raises(RuntimeError, match="oops"):
        llama_cpp.batched_bench(Path("bench"), Path("m.gguf"), 72, 128, 64, 2)
