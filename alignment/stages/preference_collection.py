"""On-policy preference collection (Llama 2 §3.2.1): the latest model answers prompts, an annotator
compares its answers, and the comparisons go into the next reward-model training round.

Why: Llama 2 collected preference data weekly on samples of its latest chat models, because "reward
model accuracy can quickly degrade if not exposed to this new sample distribution". Paddock's
rejection sampling hit exactly that (docs/results/rl.md): an RM that gets 78 % of the gym's test pairs
orders the SFT model's own right and wrong answers at chance. Here the gym's gold graders play the
annotator: for every prompt with a grader, K sampled answers (plus the greedy one) are graded, and
each is paired against answers graded lower, as `chosen` and `rejected` (see `answer_grades`).

Writes `pairs_train.jsonl` and `pairs_test.jsonl` (llama2 adapter rows; prompts split by
`data.test_fraction`, so no prompt is on both sides), read by a later stage as
`{stage: <this stage>, path: pairs_train.jsonl}`. Writes no model: the next stage starts from the
model before this one unless it says otherwise.
"""

from __future__ import annotations

import json
import random
import statistics
from collections import Counter
from dataclasses import dataclass
from typing import Literal

from alignment.data.records import Category, PreferencePair, Rating, category_of
from alignment.errors import PaddockError
from alignment.gym.graders import is_refusal
from alignment.model_setup import load_frozen
from alignment.recipes.config import RecipeError, check_range, join, setting
from alignment.recipes.schema import StageConfig
from alignment.runs import write_atomic
from alignment.stages.common import StageContext, load_records
from alignment.stages.rejection_sampling import gold_scores, sample_answers

KINDS = ("helpful", "borderline", "safety")


@dataclass(kw_only=True)
class PreferenceCollectionConfig(StageConfig):
    """The model's own answers, graded by the gym's gold graders and paired (right vs wrong)."""

    prompts: dict[str, int | None] | None = setting(
        "Prompts answered per kind: `helpful` (checkable tasks), `borderline` (benign requests that "
        "sound unsafe), `safety` (harmful requests); a count, or null for all of that kind. Drawn "
        "(seeded) from both sides of the prompt split (`data.test_fraction`) in proportion. A kind "
        "left out is not collected; null: every prompt with a grader.",
        default=None,
    )
    samples_per_prompt: int = setting("K: answers sampled per prompt.", default=4)
    temperature: float = setting("Sampling temperature.", default=1.0)
    top_p: float = setting("Nucleus sampling cut (1.0: none).", default=1.0)
    greedy_candidate: bool = setting(
        "Grade the greedy answer too: it is what the model says most often, so its failures are the "
        "ones a reward model most needs to see.",
        default=True,
    )
    pairs_per_prompt: int = setting(
        "At most this many pairs per prompt, so prompts with many distinct answers do not dominate.",
        default=2,
    )
    rating: Literal["significantly_better", "better", "slightly_better", "negligibly_better"] = setting(
        "Rating of every collected pair (it sets the margin): a grader tells right from wrong, not by "
        "how much.",
        default="better",
    )
    max_new_tokens: int = setting("Answer length cap.", default=64)
    max_prompt_tokens: int = setting("Prompts longer than this are cut from the left.", default=384)
    chat_style: Literal["template", "llama2"] = setting("Chat format for prompts.", default="template")
    generation_batch_size: int = setting("Prompts per generation batch (each gives K rows).", default=16)

    def check_config(self, path: str) -> None:
        super().check_config(path)
        for key in ("samples_per_prompt", "pairs_per_prompt", "max_new_tokens", "generation_batch_size"):
            check_range(getattr(self, key), join(path, key), low=1)
        for kind, count in (self.prompts or {}).items():
            where = join(join(path, "prompts"), kind)
            if kind not in KINDS:
                raise RecipeError(f"{where}: unknown prompt kind {kind!r}; kinds: {', '.join(KINDS)}", where)
            if count is not None:
                check_range(count, where, low=1)
        check_range(self.temperature, join(path, "temperature"), low=0)


def graded_pairs(
    texts: list[str], grades: list[float], max_pairs: int, rng: random.Random
) -> list[tuple[str, str]]:
    """(chosen, rejected) texts: an answer against one the grader scored lower.

    Identical texts count once. Candidate pairs are shuffled, then taken one at a time, each time
    the one whose two answers have been used least, so `max_pairs` pairs spread over as many
    different answers as there are."""
    grade_of = dict(zip(texts, grades, strict=True))
    unique = list(grade_of)
    candidates = [(a, b) for a in unique for b in unique if grade_of[a] > grade_of[b]]
    rng.shuffle(candidates)
    uses = dict.fromkeys(unique, 0)
    pairs = []
    for _ in range(min(max_pairs, len(candidates))):
        best = min(candidates, key=lambda pair: uses[pair[0]] + uses[pair[1]])  # first of the least used
        candidates.remove(best)
        uses[best[0]] += 1
        uses[best[1]] += 1
        pairs.append(best)
    return pairs


def answer_grades(record, texts: list[str]) -> list[float]:
    """The gold graders' verdicts, with one more level for benign borderline requests: an attempt
    that misses the reference's point (0.5) still beats a refusal (0), as the gym's own borderline
    pairs rank a generic answer above a curt refusal. Without it, the pairs would never say that
    refusing a benign request is worse than answering it imperfectly."""
    gold = gold_scores(record, texts)
    if prompt_kind(record) != "borderline":
        return gold
    return [g if g > 0.5 else 0.0 if is_refusal(t) else 0.5 for g, t in zip(gold, texts, strict=True)]


def pair_records(record, pairs: list[tuple[str, str]], rating: str) -> list[dict]:
    """Preference rows in the llama2 adapter's format; safety prompts carry per-answer safety labels
    (the grader passes an answer to a harmful prompt only when it refuses)."""
    safety = category_of(record) == "safety"
    return [
        PreferencePair(
            prompt=record.prompt,
            chosen=chosen,
            rejected=rejected,
            category=Category(category_of(record)),
            rating=Rating(rating),
            source=f"onpolicy/{record.source}" if record.source else "onpolicy",
            chosen_safe=True if safety else None,
            rejected_safe=False if safety else None,
            meta=dict(record.meta),
        ).to_dict()
        for chosen, rejected in pairs
    ]


def prompt_kind(record) -> str:
    """helpful (checkable task), borderline (benign, refusing is wrong) or safety (harmful)."""
    if category_of(record) == "safety":
        return "safety"
    return "borderline" if record.meta.get("task") == "borderline" else "helpful"


def sample(
    ctx: StageContext, model, tokenizer, records: list, temperature: float, n: int, seed: int
) -> list[str]:
    return sample_answers(ctx, model, tokenizer, records, temperature, n, seed, label=f"{ctx.stage.name}: ")


def collect(
    ctx: StageContext, model, tokenizer, records: list, split: str, rng: random.Random
) -> tuple[list, dict]:
    """Answers for `records` (cached in answers-<split>.json, so a resumed stage grades the same
    answers), graded and paired; returns (rows, report). A kind's `passed` is the share of its
    answers the gold grader passes."""
    cfg: PreferenceCollectionConfig = ctx.stage
    if not records:
        return [], {"prompts": 0, "pairs": 0, "by_kind": {}}
    cache = ctx.dir.root / f"answers-{split}.json"
    if cache.is_file():
        answers = json.loads(cache.read_text())
    else:
        k = cfg.samples_per_prompt
        sampled = sample(ctx, model, tokenizer, records, cfg.temperature, k, seed=ctx.seed * 7919 + 17)
        answers = [sampled[i * k : (i + 1) * k] for i in range(len(records))]
        if cfg.greedy_candidate:
            for texts, greedy in zip(
                answers, sample(ctx, model, tokenizer, records, 0.0, 1, seed=0), strict=True
            ):
                texts.append(greedy)
        write_atomic(cache, json.dumps(answers))
    rows: list[dict] = []
    by_kind: dict[str, dict] = {}
    for record, texts in zip(records, answers, strict=True):
        grades = answer_grades(record, texts)
        kind = by_kind.setdefault(prompt_kind(record), {"prompts": 0, "paired": 0, "pairs": 0, "passed": []})
        kind["prompts"] += 1
        kind["passed"].extend(g == 1.0 for g in grades)
        new = pair_records(record, graded_pairs(texts, grades, cfg.pairs_per_prompt, rng), cfg.rating)
        kind["paired"] += bool(new)
        kind["pairs"] += len(new)
        rows.extend(new)
    for kind in by_kind.values():
        kind["passed"] = statistics.fmean(kind["passed"]) if kind["passed"] else None
    return rows, {"prompts": len(records), "pairs": len(rows), "by_kind": by_kind}


def draw_by_kind(train: list, test: list, counts: dict, rng: random.Random) -> tuple[list, list]:
    """`counts[kind]` prompts of each kind (all when None), split between train and test in the
    proportion the two sides have of that kind."""
    out_train, out_test = [], []
    for kind, count in counts.items():
        a, b = [r for r in train if prompt_kind(r) == kind], [r for r in test if prompt_kind(r) == kind]
        if count is not None and count < len(a) + len(b):
            n_test = round(count * len(b) / (len(a) + len(b)))
            a, b = rng.sample(a, count - n_test), rng.sample(b, n_test)
        out_train += a
        out_test += b
    return out_train, out_test


def has_grader(record) -> bool:
    return gold_scores(record, [""]) is not None


def check_data(cfg: PreferenceCollectionConfig, train_rows: list, test_rows: list) -> None:
    if not any(has_grader(r) for r in train_rows):
        raise PaddockError(f"stage {cfg.name}: no prompt has a gold grader (gym RL prompts carry `meta`)")


def run_preference_collection(ctx: StageContext) -> dict:
    cfg: PreferenceCollectionConfig = ctx.stage
    train_rows, test_rows, data_report = load_records(ctx, kind="rl_prompts")  # split by prompt
    check_data(cfg, train_rows, test_rows)
    train, test = [r for r in train_rows if has_grader(r)], [r for r in test_rows if has_grader(r)]
    without_grader = len(train_rows) + len(test_rows) - len(train) - len(test)
    rng = random.Random(ctx.seed)
    if cfg.prompts is not None:
        train, test = draw_by_kind(train, test, cfg.prompts, rng)
    tokenizer = ctx.tokenizer()
    model = load_frozen(ctx.recipe.model, ctx.init)
    summary = {"stage": cfg.name, "type": cfg.type, "init": str(ctx.init), "data": data_report}
    summary["prompts_without_grader"] = without_grader
    sources: Counter = Counter()
    for split, part in (("train", train), ("test", test)):
        rows, report = collect(ctx, model, tokenizer, part, split, rng)
        write_atomic(ctx.dir.root / f"pairs_{split}.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
        summary[split] = report
        sources.update(row["source"] for row in rows)
        print(f"[{cfg.name}] {split}: {report['pairs']} pairs from {report['prompts']} prompts")
    summary["pairs_by_source"] = dict(sources)
    summary = ctx.write_summary(summary)
    ctx.dir.mark_complete()
    return summary
