"""`paddock run RECIPE`: run the recipe's stages in order into runs/<run-name>/<stage>/.

A stage with its completion marker is skipped; an unfinished one resumes from its last
checkpoint. Each stage starts from `init_from` (an earlier stage's name or a path), by default
the previous stage's model, and the first from the recipe's model.

Under a launcher (accelerate launch, torchrun) every process runs this same loop; only the main
process writes the run directory, and all of them meet at each stage's start and end, so no
process starts a stage before the main one has marked the previous one complete.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch
import yaml

from alignment import distributed
from alignment.answers import reset_prompts_generated
from alignment.errors import PaddockError
from alignment.preflight import check_free_space
from alignment.recipes import load_recipe
from alignment.runs import COMPLETE, StageDir, write_atomic
from alignment.stages.common import StageContext, stage_engine
from alignment.stages.registry import STAGE_TYPES


def stage_init(recipe, index: int, run_dir: Path) -> str:
    stage = recipe.stages[index]
    names = [s.name for s in recipe.stages]
    if stage.init_from is None:
        earlier = [s for s in recipe.stages[:index] if STAGE_TYPES[s.type].writes_model]
        return str(run_dir / earlier[-1].name / "model") if earlier else recipe.model.name_or_path
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


def check_engines(recipe, run_dir: Path) -> None:
    """A stage that asks for vLLM where it is not installed fails here, before any compute."""
    for stage in recipe.stages:
        if not (run_dir / stage.name / COMPLETE).is_file():
            stage_engine(recipe, stage)


def record_timing(run_dir: Path, stage: str, seconds: float) -> None:
    """Wall time of each stage's last (finishing) run, for the report."""
    path = run_dir / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[stage] = round(seconds, 1)
    write_atomic(path, json.dumps(timings, indent=2) + "\n")


def run_recipe(path: str | Path, overrides=(), only: list[str] | None = None) -> Path:
    recipe = load_recipe(path, overrides)
    run_dir = Path(recipe.output_dir) / recipe.run_name
    main = distributed.is_main()
    if main:
        check_writable(run_dir)
        check_free_space(recipe, run_dir)
    check_engines(recipe, run_dir)
    if main:
        raw = yaml.safe_load(Path(path).read_text())
        write_atomic(run_dir / "recipe.yaml", yaml.safe_dump({"recipe": raw, "overrides": list(overrides)}))
    try:
        for index in range(len(recipe.stages)):
            if not only or recipe.stages[index].name in only:
                run_stage(recipe, index, run_dir, main)
    finally:
        distributed.cleanup()
    return run_dir


def run_stage(recipe, index: int, run_dir: Path, main: bool) -> None:
    stage = recipe.stages[index]
    distributed.barrier()  # the previous stage is complete on disk for every process
    report_to = recipe.logging.report_to
    if (run_dir / stage.name / COMPLETE).is_file():
        if main:
            print(f"[{stage.name}] complete, skipping ({run_dir / stage.name})")
        return
    stage_dir = StageDir(
        distributed.stage_root(run_dir / stage.name),
        tensorboard="tensorboard" in report_to,
        wandb_name=f"{recipe.run_name}/{stage.name}" if "wandb" in report_to and main else None,
    )
    # Every stage starts from the recipe seed, so a resumed stage sees the same randomness.
    random.seed(recipe.seed)
    torch.manual_seed(recipe.seed)
    ctx = StageContext(recipe, stage, run_dir, stage_dir, stage_init(recipe, index, run_dir))
    reset_prompts_generated()  # the summary's per-process share counts this stage only
    began = time.perf_counter()
    if main:
        print(f"[{stage.name}] starting from {ctx.init}")
    try:
        STAGE_TYPES[stage.type].run(ctx)
    finally:
        ctx.close()
    distributed.barrier()
    seconds = time.perf_counter() - began
    if main:
        record_timing(run_dir, stage.name, seconds)
        print(f"[{stage.name}] done in {seconds:.0f}s -> {stage_dir.root}")
