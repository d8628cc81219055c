"""Placement (alignment/placement.py): `model.device` is turned into a device in one place, and
every model a stage builds, every batch it feeds them and its summary follow it.

This machine has no GPU, so what a CUDA device would do is checked by `make gpu-check`
(benchmarks/gpu_check.py). Here: the resolution rules (with CUDA's presence faked where only the
rule is under test), the one-line errors, and that a stage run with an explicit device sends every
model build there and feeds every forward pass tensors on its model's device.
"""

from __future__ import annotations

import json

import pytest
import torch

from alignment import placement
from alignment.errors import PaddockError
from alignment.recipes import RecipeError, load_recipe
from tests.test_pipeline import REPO, tiny_checkpoint  # noqa: F401  (fixture)


def fake_gpus(monkeypatch, count: int) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)


@pytest.mark.parametrize(
    "spec, gpus, env, expected",
    [
        ("auto", 0, {}, "cpu"),
        ("auto", 2, {}, "cuda:0"),
        ("auto", 2, {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cuda:1"),
        ("cuda", 2, {"WORLD_SIZE": "2", "LOCAL_RANK": "1"}, "cuda:1"),
        ("cuda", 1, {}, "cuda:0"),
        ("cuda:1", 2, {}, "cuda:1"),
        ("cpu", 2, {}, "cpu"),
    ],
)
def test_device_resolution(monkeypatch, spec, gpus, env, expected):
    """auto: the process's GPU under a launcher, cuda:0 for one process on a GPU machine, else the
    CPU; cpu stays on the CPU even with GPUs."""
    fake_gpus(monkeypatch, gpus)
    for key in ("WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert str(placement.resolve_device(spec)) == expected


@pytest.mark.parametrize(
    "spec, gpus, env, message",
    [
        ("cuda", 0, {}, "no CUDA GPU"),
        ("cuda:2", 2, {}, "this machine has 2 GPU"),
        ("cuda:1", 2, {"WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "each process takes its own GPU"),
        ("gpu", 2, {}, "expected auto, cpu, cuda or cuda:N"),
    ],
)
def test_impossible_devices_are_one_line_errors(monkeypatch, spec, gpus, env, message):
    fake_gpus(monkeypatch, gpus)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(PaddockError, match=message) as raised:
        placement.resolve_device(spec)
    assert "\n" not in str(raised.value)


def test_a_recipe_with_a_bad_device_is_refused(tmp_path):
    recipe = (REPO / "recipes/sft.yaml").read_text()
    (tmp_path / "r.yaml").write_text(recipe)
    with pytest.raises(RecipeError, match=r"model\.device: 'gpu0' is not auto, cpu, cuda or cuda:N"):
        load_recipe(tmp_path / "r.yaml", ["model.device=gpu0"])
    assert load_recipe(tmp_path / "r.yaml", ["model.device=cuda:1"]).model.device == "cuda:1"


def test_the_summary_records_device_processes_and_kernels():
    record = placement.placement_record(torch.device("cpu"))
    assert record == {"device": "cpu", "world_size": 1, "backend": None, "kernels": "torch"}
    assert placement.kernel_backend(torch.device("cuda", 0)) in ("triton", "torch")  # triton if installed


def test_a_stage_sends_every_model_and_batch_to_the_recipe_device(tmp_path, monkeypatch, tiny_checkpoint):  # noqa: F811
    """SFT then a reward model with `model.device: cpu`, run in-process: every model build asks
    for the device the recipe names (resolve_device is called with it and its answer reaches the
    loader), every forward pass gets its tensors on its module's device, and both summaries say
    where they ran."""
    from alignment import model_setup
    from alignment.base_model import checkpoint
    from alignment.pipeline import run_recipe
    from tests.test_distributed import recipe

    specs, loads, mismatches = [], [], []
    real_resolve, real_load = placement.resolve_device, checkpoint.load_checkpoint

    def resolve(spec="auto"):
        specs.append(spec)
        return real_resolve(spec)

    def load(path, *args, device="cpu", **kwargs):
        loads.append(str(device))
        return real_load(path, *args, device=device, **kwargs)

    def check_inputs(module, args, kwargs):
        weights = next(module.parameters(recurse=False), None)
        if weights is None:
            return
        for value in [*args, *kwargs.values()]:
            if isinstance(value, torch.Tensor) and value.device != weights.device:
                mismatches.append(f"{type(module).__name__}: {value.device} vs {weights.device}")

    monkeypatch.setattr(model_setup, "resolve_device", resolve)
    monkeypatch.setattr(checkpoint, "load_checkpoint", load)
    monkeypatch.setattr("alignment.base_model.loading.load_checkpoint", load)
    path = recipe(tmp_path, tiny_checkpoint, "placed")
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: check_inputs(module, args, {})
    )
    try:
        run_recipe(path, ["model.device=cpu", "logging.progress=false"], only=["sft", "rm"])
    finally:
        hook.remove()
    assert specs and set(specs) == {"cpu"}
    assert len(loads) >= 2 and set(loads) == {"cpu"}  # the SFT model and the RM
    assert not mismatches, mismatches[:5]
    for stage in ("sft", "rm"):
        summary = json.loads((tmp_path / "runs/placed" / stage / "summary.json").read_text())
        assert summary["placement"]["device"] == "cpu" and summary["placement"]["world_size"] == 1
