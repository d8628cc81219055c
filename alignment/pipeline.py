"""`paddock run RECIPE`: run the recipe's stages in order into runs/<run-name>/<stage>/.

A stage with its completion marker is skipped; an unfinished one resumes from its last
checkpoint. Each stage starts from `init_from` (an earlier stage's name or a path), by default
the previous stage's model, and the first from the recipe's model.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
import yaml

from alignment.errors import PaddockError
from alignment.preflight import check_free_space
from alignment.recipes import load_recipe
from alignment.runs import StageDir, write_atomic
from alignment.stages import runners
from alignment.stages.common import StageContext


def stage_init(recipe, index: int, run_dir: Path) -> str:
    stage = recipe.stages[index]
    names = [s.name for s in recipe.stages]
    if stage.init_from is None:
        return str(run_dir / names[index - 1] / "model") if index else recipe.model.name_or_path
    if stage.init_from in names:
        return str(run_dir / stage.init_from / "model")
    return stage.init_from


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PaddockError(f"{run_dir}: cannot write run outputs ({err.strerror})") from None


def record_timing(run_dir: Path, stage: str, seconds: float) -> None:
    """Wall time of each stage's last (finishing) run, for the report."""
    path = run_dir / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[stage] = round(seconds, 1)
    write_atomic(path, json.dumps(timings, indent=2) + "\n")


def run_recipe(path: str | Path, overrides=(), only: list[str] | None = None) -> Path:
    recipe = load_recipe(path, overrides)
    run_dir = Path(recipe.output_dir) / recipe.run_name
    check_writable(run_dir)
    check_free_space(recipe, run_dir)
    raw = yaml.safe_load(Path(path).read_text())
    write_atomic(run_dir / "recipe.yaml", yaml.safe_dump({"recipe": raw, "overrides": list(overrides)}))
    registry = runners()
    for index, stage in enumerate(recipe.stages):
        if only and stage.name not in only:
            continue
        report_to = recipe.logging.report_to
        stage_dir = StageDir(
            run_dir / stage.name,
            tensorboard="tensorboard" in report_to,
            wandb_name=f"{recipe.run_name}/{stage.name}" if "wandb" in report_to else None,
        )
        if stage_dir.complete:
            print(f"[{stage.name}] complete, skipping ({stage_dir.root})")
            continue
        if stage.type not in registry:
            raise PaddockError(f"stage {stage.name}: no runner for stage type {stage.type!r} yet")
        # Every stage starts from the recipe seed, so a resumed stage sees the same randomness.
        random.seed(recipe.seed)
        torch.manual_seed(recipe.seed)
        ctx = StageContext(recipe, stage, run_dir, stage_dir, stage_init(recipe, index, run_dir))
        began = time.perf_counter()
        print(f"[{stage.name}] starting from {ctx.init}")
        registry[stage.type](ctx)
        seconds = time.perf_counter() - began
        record_timing(run_dir, stage.name, seconds)
        print(f"[{stage.name}] done in {seconds:.0f}s -> {stage_dir.root}")
    return run_dir
