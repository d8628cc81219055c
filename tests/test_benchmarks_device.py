"""`--device` of benchmarks/ppo.py and benchmarks/reward_model.py without a GPU: both parse it (the
CPU by default), a GPU that is not there stops the script with a one-line usage error before any
model loads, and reward_model.py's CPU path still puts both contenders on the CPU. Their CUDA path
is not yet run on a GPU; nothing here needs CUDA or runs a benchmark."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.test_benchmarks_ppo import tiny_checkpoint  # noqa: F401  (fixture: the random Llama both load)

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
SCRIPTS = ["ppo", "reward_model"]


def load(script: str):
    """A benchmarks/ script as a module, with its directory on sys.path for its `from common import ...`."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        name, path = f"benchmarks_{script}_device", BENCHMARKS / f"{script}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


@pytest.fixture(scope="module")
def scripts():
    return {script: load(script) for script in SCRIPTS}


@pytest.fixture
def one_gpu(monkeypatch):
    """resolve_device as on a one-GPU machine, without touching CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.delenv("WORLD_SIZE", raising=False)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_device_defaults_to_the_cpu_and_cuda_is_accepted(scripts, script, one_gpu):
    bench = scripts[script]
    assert bench.build_parser().parse_args([]).device == "cpu"
    assert bench.build_parser().parse_args(["--device", "cuda"]).device == "cuda"
    assert bench.parse_args([]).device == torch.device("cpu")
    assert bench.parse_args(["--device", "cuda"]).device == torch.device("cuda", 0)
    assert bench.parse_args(["--device", "auto"]).device == torch.device("cuda", 0)


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_missing_gpu_is_a_usage_error(scripts, script, no_gpu, capsys):
    with pytest.raises(SystemExit) as exit_info:
        scripts[script].parse_args(["--device", "cuda"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "no CUDA GPU" in err and "Traceback" not in err
    assert scripts[script].parse_args(["--device", "auto"]).device == torch.device("cpu")


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_device_is_checked_before_anything_loads(scripts, script, no_gpu, monkeypatch):
    bench = scripts[script]

    def refuse(*_args, **_kwargs):
        raise AssertionError("a model or checkpoint was loaded before the device was checked")

    for name in ("prepare", "load_model", "load_tokenizer"):
        monkeypatch.setattr(bench, name, refuse)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", "--device", "cuda"])
    with pytest.raises(SystemExit) as exit_info:
        bench.main()
    assert exit_info.value.code == 2


@pytest.mark.parametrize("script", SCRIPTS)
def test_run_with_a_missing_gpu_the_script_says_so_in_one_line_and_exits_2(script):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU even on a GPU machine
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{script}.py"), "--device", "cuda"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""  # no "machine:" line: nothing ran
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "device 'cuda': this machine has no CUDA GPU" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("usage:") and result.stderr.endswith(errors[0] + "\n")


def test_the_rm_benchmark_refuses_one_gpu_among_several(scripts, one_gpu, monkeypatch, capsys):
    """TRL's Trainer takes the first visible GPU, or all of them: the run must see exactly one."""
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(SystemExit) as exit_info:
        scripts["reward_model"].parse_args(["--device", "cuda"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "CUDA_VISIBLE_DEVICES" in err and "Traceback" not in err
    assert scripts["ppo"].parse_args(["--device", "cuda:1"]).device == torch.device("cuda", 1)


@pytest.mark.parametrize("script", SCRIPTS)
def test_cpu_memory_is_resident_memory(scripts, script):
    import common  # benchmarks/common.py, on the path the scripts were loaded with

    assert isinstance(scripts[script].memory_sampler(torch.device("cpu")), common.RssSampler)


def test_the_rm_benchmark_on_the_cpu_keeps_both_contenders_there(scripts, tiny_checkpoint, tmp_path):  # noqa: F811
    """--device cpu (the default): Paddock's loop step runs on the CPU and TRL is told use_cpu."""
    pytest.importorskip("trl")
    bench = scripts["reward_model"]
    args = bench.parse_args(["--batch", "2"])
    pairs = bench.load_pairs(4)
    paddock = bench.PaddockContender(tiny_checkpoint, pairs, args)
    paddock.step(0)
    paddock.step(1)
    assert len(paddock.losses) == 2 and all(map(math.isfinite, paddock.losses))
    assert {p.device.type for p in paddock.model.parameters()} == {"cpu"}
    trainer = bench.trl_trainer(tiny_checkpoint, pairs, args, 1, [], str(tmp_path))
    assert trainer.args.use_cpu is True and trainer.args.device == torch.device("cpu")
    assert {p.device.type for p in trainer.model.parameters()} == {"cpu"}
