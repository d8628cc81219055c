"""Pipeline stages. Each module registers its recipe config (`@register_stage`) and a runner here."""

from __future__ import annotations

from collections.abc import Callable

RUNNERS: dict[str, Callable] = {}


def runners() -> dict[str, Callable]:
    from alignment.stages import evaluation, gatt, ppo, preference_collection, rejection_sampling, sft
    from reward_models import stage as reward_model
    from safety import context_distillation

    RUNNERS.setdefault("sft", sft.run_sft)
    RUNNERS.setdefault("reward_model", reward_model.run_reward_model)
    RUNNERS.setdefault("rejection_sampling", rejection_sampling.run_rejection_sampling)
    RUNNERS.setdefault("ppo", ppo.run_ppo)
    RUNNERS.setdefault("gatt", gatt.run_gatt)
    RUNNERS.setdefault("evaluation", evaluation.run_evaluation)
    RUNNERS.setdefault("preference_collection", preference_collection.run_preference_collection)
    RUNNERS.setdefault("context_distillation", context_distillation.run_context_distillation)
    return RUNNERS
