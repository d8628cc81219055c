"""Resumable training state: trainable weights, optimizer, scheduler, RNG and data position.

A checkpoint is a directory written under a temp name and renamed into place, so a kill mid-write
leaves either the previous checkpoint or the new one, never a torn one. Weights are safetensors;
the optimizer state goes through torch.save and is read back with weights_only=True.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from alignment import distributed

STATE_FILE = "state.json"


def trainable_state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model, path: Path) -> None:
    """Copy saved tensors (a `trainable_state` or any name -> tensor file) into the model's parameters
    of the same names, in place; names the file does not hold keep their values."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in load_file(path).items():
            params[name].copy_(value)


def save_training_checkpoint(
    directory: Path,
    step: int,
    model,
    optimizer,
    scheduler,
    extra: dict,
    keep: int = 2,
    weights=None,
    optimizer_state=None,
) -> Path:
    """`weights` overrides which tensors are saved (default: every parameter with requires_grad),
    `optimizer_state` the optimizer's state dict (default: optimizer.state_dict())."""
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob(".tmp-*"):  # left by a run killed mid-save; one writer per stage
        shutil.rmtree(stale, ignore_errors=True)
    final = directory / f"step-{step:07d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    try:
        save_file(weights if weights is not None else trainable_state(model), tmp / "trainable.safetensors")
        torch.save(
            optimizer.state_dict() if optimizer_state is None else optimizer_state, tmp / "optimizer.pt"
        )
        save_file({"torch": torch.get_rng_state()}, tmp / "rng.safetensors")
        state = {
            "step": step,
            "scheduler": scheduler.state_dict(),
            "python_random": _jsonable(random.getstate()),
            **extra,
        }
        (tmp / STATE_FILE).write_text(json.dumps(state))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(directory.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def save_file_atomic(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """safetensors to a temp name, then renamed: a file whose presence marks work done is never torn."""
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, tmp)
    os.replace(tmp, path)


def latest_checkpoint(directory: Path) -> Path | None:
    done = [p for p in sorted(directory.glob("step-*")) if (p / STATE_FILE).is_file()]
    return done[-1] if done else None


def announce_resume(label: str, step: int, total: int, checkpoint: Path) -> None:
    """Say on the main process that a stage picked up from a checkpoint instead of starting over,
    and where: the run's output otherwise looks the same whether it resumed or not."""
    if distributed.is_main():
        print(f"[{label}] resumed from step {step} of {total} ({checkpoint})", flush=True)


def load_training_checkpoint(path: Path, model, optimizer, scheduler, restore=None) -> dict:
    """`restore(weights, optimizer_state)` replaces the default copy into `model` and `optimizer`
    (sharded models take full tensors through their own API)."""
    weights = load_file(path / "trainable.safetensors")
    optimizer_state = torch.load(path / "optimizer.pt", weights_only=True)
    if restore is not None:
        restore(weights, optimizer_state)
    else:
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        optimizer.load_state_dict(optimizer_state)
    state = json.loads((path / STATE_FILE).read_text())
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(load_file(path / "rng.safetensors")["torch"])
    random.setstate(_tupled(state["python_random"]))
    return state


def _jsonable(value):
    return [_jsonable(v) for v in value] if isinstance(value, tuple | list) else value


def _tupled(value):
    return tuple(_tupled(v) for v in value) if isinstance(value, list) else value
