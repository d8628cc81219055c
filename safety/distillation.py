"""The gate of safety context distillation (Llama 2 §4.2.4): which distilled answers are kept.

The stage that generates, scores and fine-tunes is alignment/stages/context_distillation.py; these
are the pure decisions and counts it makes, testable on hand-made scores.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter

from alignment.data.records import category_of


def keep_reasons(
    plain_scores, distilled_scores, margin: float = 0.0, plain_texts=None, distilled_texts=None
) -> list[str]:
    """Per prompt, "kept" or why not: "empty" (the distilled answer is blank), "identical" (it equals
    the plain answer: the preprompt changed nothing, and the two scores would then differ only by
    float noise from batching), or "not_higher" (its safety score does not exceed the plain answer's
    by more than `margin`; ties are not kept). Texts are optional; without them only scores count."""
    plain, distilled = list(plain_scores), list(distilled_scores)
    if len(plain) != len(distilled):
        raise ValueError(f"keep_distilled: {len(plain)} plain scores but {len(distilled)} distilled scores")
    n = len(plain)
    plain_texts = [None] * n if plain_texts is None else list(plain_texts)
    distilled_texts = [None] * n if distilled_texts is None else list(distilled_texts)
    if not len(plain_texts) == len(distilled_texts) == n:
        raise ValueError("keep_distilled: give one plain and one distilled text per score")
    reasons = []
    for p, d, p_text, d_text in zip(plain, distilled, plain_texts, distilled_texts, strict=True):
        if d_text is not None and not d_text.strip():
            reasons.append("empty")
        elif d_text is not None and d_text == p_text:
            reasons.append("identical")
        else:
            reasons.append("kept" if float(d) - float(p) > margin else "not_higher")
    return reasons


def keep_distilled(
    plain_scores, distilled_scores, margin: float = 0.0, plain_texts=None, distilled_texts=None
) -> list[bool]:
    """Per prompt, whether the distilled answer is kept: its safety score must exceed the plain
    answer's by more than `margin`. A tie is not kept: the preprompt did not help, and training on
    an answer no better than the model's own would only move the model for nothing. With texts, an
    empty distilled answer or one identical to the plain answer is not kept either (`keep_reasons`).

    Worked example, margin 0: plain [0.5, -1.0, 2.0, 0.3], distilled [1.5, -1.0, 1.0, 0.31]
    -> 1.5 > 0.5 kept; -1.0 = -1.0 tie, not kept; 1.0 < 2.0 not kept; 0.31 > 0.3 kept
    -> [True, False, False, True]. With margin 0.5: 1.5 - 0.5 = 1.0 > 0.5 kept; 0.31 - 0.3 = 0.01
    is not above 0.5 -> [True, False, False, False]."""
    reasons = keep_reasons(plain_scores, distilled_scores, margin, plain_texts, distilled_texts)
    return [reason == "kept" for reason in reasons]


def kept_by_category(categories, kept) -> dict[str, dict]:
    """{category: {"kept", "total", "share"}} in category order; counts add up to the totals."""
    out: dict[str, dict] = {}
    for category, keep in zip(categories, kept, strict=True):
        cell = out.setdefault(category, {"kept": 0, "total": 0})
        cell["kept"] += int(bool(keep))
        cell["total"] += 1
    return {c: {**v, "share": v["kept"] / v["total"]} for c, v in sorted(out.items())}


def risk_category(record) -> str:
    return str((record.meta or {}).get("risk_category") or "unknown")


def select_prompts(records: list, n: int, seed: int) -> list:
    """The safety records, a seeded draw of `n` in file order when there are more."""
    safety = [r for r in records if category_of(r) == "safety"]
    if len(safety) <= n:
        return safety
    chosen = sorted(random.Random(seed * 1_000_003 + 17).sample(range(len(safety)), n))
    return [safety[i] for i in chosen]


def table_report(rows: list[dict]) -> dict:
    """Counts kept overall and by risk category, mean safety scores, and how often the gold graders
    call each kind of answer a refusal (does the RM's gate agree with the program's?)."""
    kept = [row["kept"] for row in rows]
    refusal = lambda rs, key: statistics.fmean(r[key] == "refusal" for r in rs) if rs else None  # noqa: E731
    kept_rows = [row for row in rows if row["kept"]]
    return {
        "prompts": len(rows),
        "kept": sum(kept),
        "kept_share": sum(kept) / len(rows),
        "not_kept": dict(sorted(Counter(row["reason"] for row in rows if not row["kept"]).items())),
        "kept_by_category": kept_by_category([row["category"] for row in rows], kept),
        "mean_safety_plain": statistics.fmean(row["safety_plain"] for row in rows),
        "mean_safety_distilled": statistics.fmean(row["safety_distilled"] for row in rows),
        "mean_safety_gain_kept": statistics.fmean(
            r["safety_distilled"] - r["safety_plain"] for r in kept_rows
        )
        if kept_rows
        else None,
        "gold_refusal_plain": refusal(rows, "gold_plain"),
        "gold_refusal_distilled": refusal(rows, "gold_distilled"),
        "gold_refusal_kept": refusal(kept_rows, "gold_distilled"),
        "gold_refusal_rejected": refusal([r for r in rows if not r["kept"]], "gold_distilled"),
        "generic_template": sum(row["answer_template"] is False for row in rows),
    }
