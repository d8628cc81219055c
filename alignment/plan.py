"""What a `paddock run` will do, decided before it does anything: for each stage run, skip, resume
or rerun, and why; the records each source gives and the steps that follow.

The plan is also the run's pre-flight. It reads every data source of the stages that will run,
every row, through the same code the stages use (writing nothing: skipped rows are only counted),
asks each stage type what it would find wrong with its data, checks that every file a setting
names exists, and compares each stage's fingerprint (alignment/fingerprints.py) with the one stored
in its directory. A stage finished or started under another fingerprint stops the run here, with
one line naming what changed, unless `--rerun` names it. `paddock run --dry-run` prints the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from alignment.base_model.default_models import DEFAULT_MODELS, local_checkpoint
from alignment.base_model.families import read_config
from alignment.data.sources import DataError, check_source, data_path
from alignment.errors import PaddockError
from alignment.fingerprints import (
    differences,
    flatten,
    looks_like_file,
    read_fingerprint,
    recipe_fingerprints,
)
from alignment.recipes.config import closest
from alignment.runs import COMPLETE
from alignment.stages.common import stage_engine
from alignment.stages.registry import STAGE_TYPES
from alignment.stages.stage_data import source_path, stage_records
from alignment.training.loop import total_steps

RUNS = ("run", "rerun", "resume")  # actions that start the stage's code


@dataclass
class StagePlan:
    name: str
    type: str
    action: str  # run | rerun | resume | skip | changed | not selected
    reason: str
    fingerprint: dict = field(repr=False)
    upstream: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)  # per source its load summary; train_rows, test_rows
    steps: str = ""

    @property
    def runs(self) -> bool:
        return self.action in RUNS


def check_names(names: list[str], stages: list[str], flag: str) -> None:
    for name in names:
        if name not in stages:
            raise PaddockError(
                f"{flag} {name}: no such stage{closest(name, stages)}; stages: {', '.join(stages)}"
            )


def engines_of(recipe) -> tuple[dict[str, str], dict[str, PaddockError]]:
    """Each stage's engine, and the error of each stage whose engine cannot start (raised only if
    that stage runs: a finished stage made with vLLM can be skipped where vLLM is gone)."""
    engines, errors = {}, {}
    for stage in recipe.stages:
        try:
            engines[stage.name] = stage_engine(recipe, stage)
        except PaddockError as err:
            engines[stage.name], errors[stage.name] = stage.engine or recipe.generation.engine, err
    return engines, errors


def downstream_of(names: set[str], plans: list[StagePlan]) -> set[str]:
    """`names` and every stage that builds on one of them, directly or not."""
    found = set(names)
    for plan in plans:  # recipe order: a stage's upstream stages come before it
        if any(up in found for up in plan.upstream):
            found.add(plan.name)
    return found


def decide(plan: StagePlan, stage_dir: Path, rerun: set[str], asked: list[str]) -> None:
    stored = read_fingerprint(stage_dir)
    complete = (stage_dir / COMPLETE).is_file()
    started = stage_dir.is_dir() and any(stage_dir.iterdir())
    if plan.name in rerun:
        why = "asked with --rerun" if plan.name in asked else "builds on a stage that reruns"
        plan.action, plan.reason = ("rerun" if started else "run"), why
    elif stored is not None and stored.get("digest") != plan.fingerprint["digest"] and started:
        changes = differences(stored, plan.fingerprint) or ["its fingerprint"]
        plan.action = "changed"
        plan.reason = (
            f"{'finished' if complete else 'started'} with other settings ({'; '.join(changes[:6])})"
        )
    elif complete:
        plan.action = "skip"
        plan.reason = (
            "finished with the same settings and data"
            if stored is not None
            else "finished; made without a fingerprint, so not checked against this recipe"
        )
    elif started:
        plan.action, plan.reason = (
            "resume",
            "unfinished with the same settings: resumes from its last checkpoint",
        )
    else:
        plan.action, plan.reason = "run", "not run yet"


def make_plan(recipe, run_dir: Path, only=None, rerun=()) -> list[StagePlan]:
    """The plan of `paddock run`; raises a one-line PaddockError for anything that would stop it."""
    names = [s.name for s in recipe.stages]
    check_names(list(only or []), names, "--stage")
    check_names(list(rerun), names, "--rerun")
    check_base_model(recipe.model.name_or_path)
    engines, engine_errors = engines_of(recipe)
    prints = recipe_fingerprints(recipe, engines)
    plans = [
        StagePlan(s.name, s.type, "", "", prints[s.name], list(prints[s.name]["upstream"]))
        for s in recipe.stages
    ]
    reruns = downstream_of(set(rerun), plans)
    for plan in plans:
        decide(plan, run_dir / plan.name, reruns, list(rerun))
    check_consistent(plans, run_dir, only)
    for index, plan in enumerate(plans):
        if plan.runs:
            if plan.name in engine_errors:
                raise engine_errors[plan.name]
            check_stage_inputs(recipe, index, plan, run_dir, plans)
    return plans


def check_base_model(name_or_path: str) -> None:
    """A named default model, or a checkpoint directory of a family Paddock runs."""
    if name_or_path in DEFAULT_MODELS:
        return
    try:
        path = local_checkpoint(name_or_path)
    except PaddockError as err:
        raise PaddockError(f"model.name_or_path: {err}") from None
    read_config(path)


def check_recipe_data(recipe) -> list[StagePlan]:
    """`paddock recipes validate --data`: every stage's inputs checked as if it were about to run,
    whatever its run directory holds (a source read from a stage's output is checked when that
    stage has run)."""
    engines, _ = engines_of(recipe)
    prints = recipe_fingerprints(recipe, engines)
    run_dir = Path(recipe.output_dir) / recipe.run_name
    plans = [
        StagePlan(s.name, s.type, "run", "", prints[s.name], list(prints[s.name]["upstream"]))
        for s in recipe.stages
    ]
    for index, plan in enumerate(plans):
        check_stage_inputs(recipe, index, plan, run_dir, plans)
    return plans


def check_consistent(plans: list[StagePlan], run_dir: Path, only) -> None:
    """Stages `--stage` leaves out do not run. A stage that differs from its recipe stops the run
    when it would run or be built on; a stage that runs needs every stage it builds on finished
    with matching settings, or running first."""
    by_name = {p.name: p for p in plans}
    for plan in plans:
        if only and plan.name not in only and plan.action in ("run", "resume"):
            plan.action, plan.reason = "not selected", f"not named by --stage ({plan.reason})"
    needed = {up for p in plans if p.runs for up in p.upstream}
    for plan in plans:
        if plan.action == "changed" and (plan.name in needed or not only or plan.name in only):
            raise PaddockError(
                f"stage {plan.name} {plan.reason}; rerun it and the stages that build on it with "
                f"`--rerun {plan.name}`, or give the run another run_name"
            )
    for plan in plans:
        for up in plan.upstream if plan.runs else []:
            if not (by_name[up].runs or by_name[up].action == "skip"):
                raise PaddockError(
                    f"stage {plan.name} builds on stage {up}, which has not finished in {run_dir}; "
                    f"run it too (add `--stage {up}`)"
                )


def check_stage_inputs(recipe, index: int, plan: StagePlan, run_dir: Path, plans: list[StagePlan]) -> None:
    """Every file the stage's settings name exists; every row of its data loads; the stage type
    accepts the data. Fills in the plan's data report and steps."""
    stage = recipe.stages[index]
    where = f"stages[{index}]"
    for key, value in flatten(plan.fingerprint["config"]).items():
        named = isinstance(value, str) and looks_like_file(value) and value not in plan.upstream
        # data sources are checked below, each with what is wrong with it
        if named and not key.startswith("data.") and not data_path(value).exists():
            raise PaddockError(f"{where}.{key}: {value}: no such file or directory")
    if stage.data is None:
        plan.steps = estimated_steps(stage, None)
        return
    waiting = [
        s for s in stage.data.sources + stage.data.test_sources if s.stage and not ready(s.stage, plans)
    ]
    if waiting:
        plan.data = {s.name: f"written by stage {s.stage} when it runs" for s in waiting}
        plan.steps = estimated_steps(stage, None)
        return
    for group in ("sources", "test_sources"):
        for j, source in enumerate(getattr(stage.data, group)):
            try:
                check_source(source_path(source, run_dir))
            except DataError as err:
                raise PaddockError(f"{where}.data.{group}[{j}].path: {source.path}: {err.reason}") from None
    kind = STAGE_TYPES[stage.type].data_kind
    try:
        train, test, report = stage_records(stage, recipe.seed, run_dir, kind)
    except DataError as err:
        raise PaddockError(f"{where}.data: {err}") from None
    check = STAGE_TYPES[stage.type].check_data
    if check is not None:
        check(stage, train, test)
    plan.data = report
    plan.steps = estimated_steps(stage, len(train))


def ready(stage_name: str, plans: list[StagePlan]) -> bool:
    """Whether a stage's output exists now (it is finished and stays so in this run)."""
    plan = next(p for p in plans if p.name == stage_name)
    return plan.action == "skip" or (plan.action == "not selected" and "finished" in plan.reason)


def estimated_steps(stage, train_rows: int | None) -> str:
    """Roughly how long the stage is: its iterations, or its optimizer steps from its training rows
    (SFT drops examples too long for max_length, so this is an upper bound)."""
    if hasattr(stage, "iterations"):
        return f"{stage.iterations} iteration{'s' if stage.iterations != 1 else ''}"
    if train_rows is None or not hasattr(stage, "batch_size") or not hasattr(stage, "epochs"):
        return ""
    return f"at most {total_steps(train_rows, stage)} optimizer steps"


def format_plan(recipe, run_dir: Path, plans: list[StagePlan]) -> str:
    width = max(len(p.name) for p in plans)
    lines = [f"plan for run {recipe.run_name} ({run_dir}):"]
    for plan in plans:
        lines.append(f"  {plan.name:<{width}}  {plan.action:<6}  {plan.reason}")
        for name, value in plan.data.items():
            if name not in ("train_rows", "test_rows", "mixture"):
                lines.append(f"  {'':<{width}}  {'':<6}  source {name}: {value}")
        if "train_rows" in plan.data:
            rows = f"train {plan.data['train_rows']} rows, test {plan.data['test_rows']}"
            lines.append(f"  {'':<{width}}  {'':<6}  {rows}{'; ' + plan.steps if plan.steps else ''}")
        elif plan.steps and plan.runs:
            lines.append(f"  {'':<{width}}  {'':<6}  {plan.steps}")
    return "\n".join(lines)
