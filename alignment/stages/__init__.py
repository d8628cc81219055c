"""Pipeline stages. Each module registers its recipe config (`@register_stage`) and a runner here."""

from __future__ import annotations

from collections.abc import Callable

RUNNERS: dict[str, Callable] = {}


def runners() -> dict[str, Callable]:
    from alignment.stages import ppo, rejection_sampling, sft
    from reward_models import stage as reward_model

    RUNNERS.setdefault("sft", sft.run_sft)
    RUNNERS.setdefault("reward_model", reward_model.run_reward_model)
    RUNNERS.setdefault("rejection_sampling", rejection_sampling.run_rejection_sampling)
    RUNNERS.setdefault("ppo", ppo.run_ppo)
    return RUNNERS
