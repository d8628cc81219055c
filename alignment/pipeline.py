"""`paddock run RECIPE`: run the recipe's stages in order into runs/<run-name>/<stage>/.

The plan comes first (alignment/plan.py): a finished stage whose fingerprint matches the recipe is
skipped, an unfinished one resumes from its last checkpoint, one made otherwise stops the run
before anything is written unless `--rerun` names it. Each stage starts from `init_from` (an
earlier stage's name or a path), by default the previous stage's model, and the first from the
recipe's model.

Under a launcher (accelerate launch, torchrun) every process runs this same loop; only the main
process writes the run directory, and all of them meet at each stage's start and end, so no
process starts a stage before the main one has marked the previous one complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
from pathlib import Path

import torch
import yaml

from alignment import distributed
from alignment.answers import reset_prompts_generated
from alignment.errors import PaddockError
from alignment.fingerprints import FINGERPRINT
from alignment.plan import format_plan, make_plan
from alignment.preflight import check_free_space
from alignment.recipes import load_recipe
from alignment.runs import StageDir, write_atomic, write_json
from alignment.stages.common import StageContext
from alignment.stages.registry import STAGE_TYPES


def stage_init_stage(recipe, index: int) -> str | None:
    """The earlier stage whose model stage `index` starts from, or None (a path or the base model)."""
    stage = recipe.stages[index]
    names = [s.name for s in recipe.stages[:index]]
    if stage.init_from is None:
        earlier = [s for s in recipe.stages[:index] if STAGE_TYPES[s.type].writes_model]
        return earlier[-1].name if earlier else None
    return stage.init_from if stage.init_from in names else None


def stage_init(recipe, index: int, run_dir: Path) -> str:
    init_stage = stage_init_stage(recipe, index)
    if init_stage is not None:
        return str(run_dir / init_stage / "model")
    return recipe.stages[index].init_from or recipe.model.name_or_path


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise PaddockError(f"{run_dir}: cannot write run outputs ({err.strerror})") from None


def check_writable_later(run_dir: Path) -> None:
    """What check_writable finds, without writing: the nearest existing folder must be writable."""
    existing = run_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PaddockError(f"{run_dir}: cannot write run outputs ({existing} is not writable)")


def record_timing(run_dir: Path, stage: str, seconds: float) -> None:
    """Wall time of each stage's last (finishing) run, for the report."""
    path = run_dir / "timings.json"
    timings = json.loads(path.read_text()) if path.is_file() else {}
    timings[stage] = round(seconds, 1)
    write_atomic(path, json.dumps(timings, indent=2) + "\n")


def run_recipe(
    path: str | Path, overrides=(), only: list[str] | None = None, rerun=(), dry_run: bool = False
) -> Path:
    """Plan the run (alignment/plan.py: every check before any compute), then run it; `dry_run`
    prints the plan and writes nothing."""
    recipe = load_recipe(path, overrides)
    run_dir = Path(recipe.output_dir) / recipe.run_name
    main = distributed.is_main()
    plans = make_plan(recipe, run_dir, only, rerun)
    if dry_run:
        check_writable_later(run_dir)
        print(format_plan(recipe, run_dir, plans))
        print("dry run: nothing was written")
        return run_dir
    if main:
        check_writable(run_dir)
        check_free_space(recipe, run_dir)
    try:
        for index, plan in enumerate(plans):
            if plan.action == "skip" and main:
                print(f"[{plan.name}] complete, skipping: {plan.reason} ({run_dir / plan.name})")
            if plan.runs:
                if main:
                    prepare_stage_dir(recipe, index, plan, run_dir, path, overrides)
                run_stage(recipe, index, run_dir, main)
    finally:
        distributed.cleanup()
    return run_dir


def prepare_stage_dir(recipe, index: int, plan, run_dir: Path, recipe_path, overrides) -> None:
    """A rerun starts from an empty stage directory; a stage starting afresh records what makes it
    (fingerprint.json) and its resolved config as it runs (config.yaml). A resumed stage keeps the
    records it started with: they match, or the plan would have stopped."""
    stage_dir = run_dir / plan.name
    if plan.action == "rerun":
        shutil.rmtree(stage_dir)
        print(f"[{plan.name}] rerunning: {plan.reason}")
    if (stage_dir / FINGERPRINT).is_file():
        return
    stage = recipe.stages[index]
    config = {
        "recipe_file": str(recipe_path),
        "overrides": list(overrides),
        "seed": recipe.seed,
        "model": dataclasses.asdict(recipe.model),
        "engine": plan.fingerprint["engine"],
        "stage": dataclasses.asdict(stage),
    }
    write_atomic(stage_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_json(stage_dir / FINGERPRINT, plan.fingerprint)


def run_stage(recipe, index: int, run_dir: Path, main: bool) -> None:
    stage = recipe.stages[index]
    distributed.barrier()  # the previous stage is complete on disk for every process
    report_to = recipe.logging.report_to
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
