"""The gym: bundled, verifiable data and the gold graders that score it (docs/design.md, The gym).

Why: no model hub is reachable here, and telling alignment from reward hacking needs ground
truth. `generator` writes seeded datasets to data/gym/ (helpfulness tasks with checkable answers,
safety prompts with safe and placeholder-unsafe answers, borderline prompts, Ghost Attention
instructions and dialogues, SFT dialogues and RL prompts); `graders` scores any response to them.
Everything here is pure Python: no torch, no model.
"""

from alignment.gym.graders import (
    check_instruction,
    extract_number,
    gold_score,
    grade_helpfulness,
    grade_safety,
    is_refusal,
    safety_label,
)

__all__ = [
    "check_instruction",
    "extract_number",
    "generate_gym",
    "gold_score",
    "grade_helpfulness",
    "grade_safety",
    "is_refusal",
    "safety_label",
]


def generate_gym(out_dir="data/gym", seed: int = 0) -> dict[str, int]:
    """Write the gym files and their card into `out_dir` (see `alignment.gym.generator`)."""
    from alignment.gym.generator import generate_gym as _generate

    return _generate(out_dir, seed)
