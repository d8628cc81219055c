"""Every stage type the pipeline knows, in one table: its recipe config, its runner, what its data
sources are read as, and whether it writes a model.

Adding a stage type is one module in alignment/stages/ (a `StageConfig` subclass and a runner
`run(ctx) -> summary`) and one `register_stage` line at the end of this file. Recipes find the
config here by the stage's `type`; `paddock run` finds the runner, `paddock data check` the data
kind, and `init_from` skips stages that write no model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from alignment.recipes.schema import NAME, StageConfig

DataKind = Literal["dialogues", "preferences", "rl_prompts"]


@dataclass(frozen=True)
class StageType:
    config: type  # the StageConfig subclass a recipe's `type:` selects
    run: Callable  # run(ctx: StageContext) -> summary dict; ends with the stage marked complete
    data_kind: DataKind | None  # how the stage's `data` sources are read; None: it reads none
    writes_model: bool  # False: a later stage's default `init_from` skips this one
    # The engine `generation.engine: auto` picks for this stage where vLLM is installed: vLLM pays
    # a start-up per stage, which only a stage that samples again and again wins back
    # (benchmarks/RESULTS.md, "Rollout engines").
    auto_engine: Literal["paddock", "vllm"] = "paddock"
    # check_data(config, train, test): what the stage would find wrong with its loaded data, raised
    # as a PaddockError by the pre-flight before any stage runs (alignment/plan.py).
    check_data: Callable | None = None


STAGE_TYPES: dict[str, StageType] = {}


def register_stage(
    name: str,
    config: type,
    run: Callable,
    data_kind: DataKind | None,
    writes_model: bool = True,
    auto_engine: Literal["paddock", "vllm"] = "paddock",
    check_data: Callable | None = None,
) -> StageType:
    """Make `type: <name>` in a recipe select `config` and run `run`."""
    if not (isinstance(config, type) and issubclass(config, StageConfig)):
        raise TypeError(f"register_stage({name!r}): {config!r} is not a StageConfig subclass")
    if name in STAGE_TYPES and STAGE_TYPES[name].config is not config:
        raise TypeError(f"stage type {name!r} is already registered by {STAGE_TYPES[name].config!r}")
    if not NAME.fullmatch(name):
        raise TypeError(f"stage type {name!r} must match {NAME.pattern}")
    config.stage_type = name
    STAGE_TYPES[name] = StageType(config, run, data_kind, writes_model, auto_engine, check_data)
    return STAGE_TYPES[name]


def unregister_stage(name: str) -> None:
    STAGE_TYPES.pop(name, None)


def _register_builtin() -> None:
    from alignment.stages import (
        context_distillation,
        evaluation,
        gatt,
        ppo,
        preference_collection,
        rejection_sampling,
        reward_model,
        sft,
    )

    register_stage("sft", sft.SFTConfig, sft.run_sft, "dialogues")
    register_stage(
        "reward_model",
        reward_model.RewardModelConfig,
        reward_model.run_reward_model,
        "preferences",
        check_data=reward_model.check_data,
    )
    register_stage(
        "rejection_sampling",
        rejection_sampling.RejectionSamplingConfig,
        rejection_sampling.run_rejection_sampling,
        "rl_prompts",
    )
    register_stage("ppo", ppo.PPOConfig, ppo.run_ppo, "rl_prompts", auto_engine="vllm")
    register_stage("gatt", gatt.GAttConfig, gatt.run_gatt, "dialogues")
    register_stage(
        "evaluation", evaluation.EvaluationConfig, evaluation.run_evaluation, None, writes_model=False
    )
    register_stage(
        "context_distillation",
        context_distillation.ContextDistillationConfig,
        context_distillation.run_context_distillation,
        "rl_prompts",
        check_data=context_distillation.check_data,
    )
    register_stage(
        "preference_collection",
        preference_collection.PreferenceCollectionConfig,
        preference_collection.run_preference_collection,
        "rl_prompts",
        writes_model=False,
        check_data=preference_collection.check_data,
    )


_register_builtin()
