"""Adapters for the public preference datasets researchers already hold.

Anthropic HH-RLHF, PKU-SafeRLHF, UltraFeedback (binarized) and Stanford SHP each encode the
prompt, the two answers and the strength of preference differently; these map them onto the
canonical PreferencePair, keeping whatever they do not interpret in `meta`.

Category defaults follow Llama 2's reward-model mixtures, which keep the open-source preference
sets (Anthropic Helpful, SHP, ...) apart from Meta's own helpfulness data, except Anthropic
Harmless, which the safety RM takes with Meta Safety (docs/data.md, "Categories").
"""

from __future__ import annotations

import math
import re

from alignment.data import adapters_base as base
from alignment.data.adapters_base import COMMON_OPTIONS, Adapter, Option
from alignment.data.records import Category, Message, PreferencePair, Rating
from alignment.data.sources import DataError
from alignment.errors import PaddockError

_TURN = re.compile(r"\n\n(Human|Assistant):")


def parse_transcript(value, field: str) -> list[Message]:
    """An HH-RLHF transcript ("\\n\\nHuman: ...\\n\\nAssistant: ...") as messages ending in an answer."""
    if not isinstance(value, str):
        raise base.wrong_type(field, "a transcript string", value)
    if value.startswith(("Human:", "Assistant:")):
        value = "\n\n" + value
    parts = _TURN.split(value)
    if parts[0].strip():
        raise DataError("text before the first '\\n\\nHuman:' turn", field=field)
    turns = [
        {"role": "user" if role == "Human" else "assistant", "content": content.strip()}
        for role, content in zip(parts[1::2], parts[2::2], strict=False)
    ]
    if not turns or turns[-1]["role"] != "assistant":
        raise DataError("transcript does not end with an '\\n\\nAssistant:' turn", field=field)
    return turns


HH_SUBSETS = {
    "harmless-base": Category.SAFETY,
    "helpful-base": Category.OTHER,
    "helpful-online": Category.OTHER,
    "helpful-rejection-sampled": Category.OTHER,
}


class HHRLHFAdapter(Adapter):
    """Anthropic HH-RLHF: `chosen` and `rejected` transcripts sharing every turn but the last answer.

    The rows do not say which subset they come from, so the option `subset` does: `harmless-base`
    gives safety pairs (the paper's safety RM takes Anthropic Harmless with Meta Safety), the
    helpful subsets `other` (open-source data, apart from Meta Helpfulness). Without it, `other`.
    """

    name = "hh-rlhf"
    FIELDS = ("chosen", "rejected")
    OPTIONS = {
        "subset": Option(
            None,
            "the file's subset: harmless-base (category safety), helpful-base, helpful-online or "
            "helpful-rejection-sampled (category other); 'harmless' and 'helpful' also work",
        ),
        "category": Option(None, "category of every pair; null takes it from subset, else other"),
        **COMMON_OPTIONS,
    }

    def __init__(self, **options):
        super().__init__(**options)
        subset, category = self.options["subset"], self.options["category"]
        from_subset = None if subset is None else self._subset_category(subset)
        if category is None:
            self.category = from_subset or Category.OTHER
        else:
            self.category = base.category_option(category, self.name)
            if from_subset is not None and self.category != from_subset:
                raise PaddockError(
                    f"adapter {self.name!r}: subset {subset!r} holds {from_subset.value} pairs, "
                    f"but category is {self.category.value!r}; drop one of the two options"
                )
        self.options["category"] = self.category.value  # `data inspect` shows what was used

    def _subset_category(self, subset) -> Category:
        key = subset.strip().lower().replace("_", "-") if isinstance(subset, str) else subset
        for name, category in HH_SUBSETS.items():
            if key in (name, name.split("-")[0]):
                return category
        raise PaddockError(
            f"adapter {self.name!r}: unknown subset {subset!r}; use one of {', '.join(HH_SUBSETS)}"
        )

    def convert(self, row: dict) -> list[PreferencePair]:
        chosen = parse_transcript(base.required(row, "chosen"), "chosen")
        rejected = parse_transcript(base.required(row, "rejected"), "rejected")
        if chosen[:-1] != rejected[:-1]:
            raise DataError("turns before the final Assistant turn differ from 'chosen'", field="rejected")
        prompt = base.check_prompt(chosen[:-1], "chosen")
        base.check_responses(chosen[-1]["content"], rejected[-1]["content"], "chosen", "rejected")
        return [
            PreferencePair(
                prompt=prompt,
                chosen=chosen[-1]["content"],
                rejected=rejected[-1]["content"],
                category=self.category,
                source=self.source,
                meta=base.extras(row, self.FIELDS),
            )
        ]


_PER_RESPONSE = re.compile(r"response_([01])_(.+)")


# severity levels 0 (safe) to 3 (severe): how much less harm the safer answer does
SEVERITY_GAP_RATINGS = {
    3: Rating.SIGNIFICANTLY_BETTER,
    2: Rating.BETTER,
    1: Rating.SLIGHTLY_BETTER,
    0: Rating.NEGLIGIBLY_BETTER,
}


class PKUSafeRLHFAdapter(Adapter):
    """PKU-SafeRLHF: two answers per prompt, ranked twice (more helpful, safer), each labelled safe or not.

    One row gives a helpfulness pair (from `better_response_id`) and a safety pair (from
    `safer_response_id`); `categories` picks which. Both pairs carry the safety labels, since
    they are facts about the answers. Per-response columns (severity level, harm categories,
    generating model, ...) are renamed `chosen_*`/`rejected_*` in `meta`.

    With `rating_from_severity`, a safety pair's rating is the gap between the answers' severity
    levels (0 safe, 1 minor, 2 moderate, 3 severe), rejected minus chosen: 3 significantly better,
    2 better, 1 slightly better, 0 negligibly better / unsure. Helpfulness pairs stay unrated: how
    much harm an answer does says nothing about how much more helpful the other one is.
    """

    name = "pku-saferlhf"
    IDS = {"helpfulness": "better_response_id", "safety": "safer_response_id"}
    USED = ("prompt", "response_0", "response_1", "is_response_0_safe", "is_response_1_safe")
    FIELDS = (
        *USED,
        "better_response_id",
        "safer_response_id",
        "response_0_severity_level",
        "response_1_severity_level",
    )
    OPTIONS = {
        "categories": Option(
            ["helpfulness", "safety"], "which pairs each row gives: helpfulness, safety or both"
        ),
        "rating_from_severity": Option(
            False,
            "rate each safety pair by the gap between the answers' severity levels "
            "(3: significantly better ... 0: negligibly better / unsure); helpfulness pairs stay unrated",
        ),
        **COMMON_OPTIONS,
    }

    def __init__(self, **options):
        super().__init__(**options)
        categories = self.options["categories"]
        if isinstance(categories, str):
            categories = (categories,)
        if not isinstance(categories, (list, tuple)):
            raise PaddockError(f"adapter {self.name!r}: categories must be a list, got {categories!r}")
        self.categories = tuple(dict.fromkeys(base.category_option(c, self.name) for c in categories))
        if not self.categories or Category.OTHER in self.categories:
            raise PaddockError(f"adapter {self.name!r}: categories must name helpfulness and/or safety")
        self.rating_from_severity = base.flag_option(
            self.options["rating_from_severity"], "rating_from_severity", self.name
        )

    def convert(self, row: dict) -> list[PreferencePair]:
        prompt = base.prompt_messages(base.required(row, "prompt"), "prompt")
        answers = [base.text(row, "response_0"), base.text(row, "response_1")]
        base.check_responses(answers[0], answers[1], "response_0", "response_1")
        safe = [base.boolean(row, "is_response_0_safe"), base.boolean(row, "is_response_1_safe")]
        pairs = []
        for category in self.categories:
            best = base.choice(row, self.IDS[category.value])
            rating = None
            if self.rating_from_severity and category == Category.SAFETY:
                rating = _severity_rating(row, best, safe)
            pairs.append(
                PreferencePair(
                    prompt=prompt,
                    chosen=answers[best],
                    rejected=answers[1 - best],
                    category=category,
                    rating=rating,
                    source=self.source,
                    chosen_safe=safe[best],
                    rejected_safe=safe[1 - best],
                    meta=self._meta(row, best),
                )
            )
        return pairs

    @staticmethod
    def _meta(row: dict, best: int) -> dict:
        meta = {}
        for key, value in row.items():
            m = _PER_RESPONSE.fullmatch(str(key))
            if m:
                meta[f"{'chosen' if int(m.group(1)) == best else 'rejected'}_{m.group(2)}"] = value
            elif key not in PKUSafeRLHFAdapter.USED:
                meta[key] = value
        return meta


def _severity_rating(row: dict, safer: int, safe: list[bool | None]) -> Rating:
    levels = []
    for i in (0, 1):
        field = f"response_{i}_severity_level"
        if row.get(field) is None and safe[i] is True:
            levels.append(0)  # a safe answer has no harm to grade; PKU leaves some of these empty
        else:
            levels.append(base.choice(row, field, (0, 1, 2, 3)))
    gap = levels[1 - safer] - levels[safer]
    if gap < 0:
        raise DataError(
            f"response_{safer} is the safer one, yet its severity level is higher "
            f"({levels[safer]} > {levels[1 - safer]})",
            field="safer_response_id",
        )
    return SEVERITY_GAP_RATINGS[gap]


class ScoredAdapter(Adapter):
    """Sources whose pairs carry scores: the score difference maps to a rating bucket through
    three descending thresholds (subclasses set DEFAULT_THRESHOLDS and document them)."""

    DEFAULT_THRESHOLDS: tuple[float, float, float] = (3.0, 2.0, 1.0)

    def __init__(self, **options):
        super().__init__(**options)
        thresholds = self.options["thresholds"]
        self.thresholds = base.check_thresholds(
            self.DEFAULT_THRESHOLDS if thresholds is None else thresholds, self.name
        )
        self.category = base.category_option(self.options["category"], self.name)

    @staticmethod
    def options_for(thresholds: tuple[float, float, float], meaning: str) -> dict[str, Option]:
        return {
            "thresholds": Option(
                list(thresholds),
                f"{meaning} at or above which a pair is significantly better, better, slightly better",
            ),
            # open-source preference data, kept apart from helpfulness data as in Llama 2's mixtures
            "category": Option("other", "category of every pair: helpfulness, safety or other"),
            **COMMON_OPTIONS,
        }


class UltraFeedbackAdapter(ScoredAdapter):
    """UltraFeedback binarized: `chosen`/`rejected` conversations (or strings) with GPT-4 scores.

    The score gap sets the rating: by default gap >= 3 is significantly better, >= 2 better,
    >= 1 slightly better, smaller (ties included) negligibly better / unsure. Scores are on a
    1-10 scale, so a 3-point gap is a clear preference and ties are the "unsure" bucket.
    Pairs are `other` by default: open-source data, like the paper's open-source sets.
    """

    name = "ultrafeedback"
    DEFAULT_THRESHOLDS = (3.0, 2.0, 1.0)
    USED = ("prompt", "chosen", "rejected", "messages")  # `messages` repeats `chosen`
    FIELDS = (*USED, "score_chosen", "score_rejected")
    OPTIONS = ScoredAdapter.options_for(DEFAULT_THRESHOLDS, "score gaps (chosen - rejected)")

    def convert(self, row: dict) -> list[PreferencePair]:
        before_c, chosen = base.split_reply(row.get("chosen"), "chosen")
        before_r, rejected = base.split_reply(row.get("rejected"), "rejected")
        if before_c and before_r and before_c != before_r:
            raise DataError("conversation before the reply differs from 'chosen'", field="rejected")
        if before_c or before_r:
            prompt = base.check_prompt(before_c or before_r, "chosen" if before_c else "rejected")
        else:
            prompt = base.prompt_messages(row.get("prompt"), "prompt")
        base.check_responses(chosen, rejected, "chosen", "rejected")
        score_chosen, score_rejected = base.number(row, "score_chosen"), base.number(row, "score_rejected")
        if score_chosen < score_rejected:
            raise DataError(
                f"lower than score_rejected ({score_chosen:g} < {score_rejected:g})", field="score_chosen"
            )
        return [
            PreferencePair(
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                category=self.category,
                rating=base.rating_bucket(score_chosen - score_rejected, self.thresholds),
                source=self.source,
                meta=base.extras(row, self.USED),
            )
        ]


class SHPAdapter(ScoredAdapter):
    """Stanford SHP: a Reddit post (`history`) and two top-level comments, A and B.

    `labels` is 1 when A is preferred. The rating comes from the score ratio (preferred / other):
    by default >= 8 significantly better, >= 4 better, >= 2 slightly better, below 2 negligibly
    better / unsure -- SHP's authors recommend trusting only pairs with ratio >= 2.
    Pairs are `other` by default: Llama 2 counts SHP among its open-source sets.
    """

    name = "shp"
    DEFAULT_THRESHOLDS = (8.0, 4.0, 2.0)
    USED = ("history", "human_ref_A", "human_ref_B")
    FIELDS = (*USED, "labels", "score_A", "score_B")
    OPTIONS = ScoredAdapter.options_for(DEFAULT_THRESHOLDS, "score ratios (preferred / other)")

    def convert(self, row: dict) -> list[PreferencePair]:
        prompt = base.prompt_messages(base.text(row, "history"), "history")
        a, b = base.text(row, "human_ref_A"), base.text(row, "human_ref_B")
        base.check_responses(a, b, "human_ref_A", "human_ref_B")
        a_preferred = base.choice(row, "labels") == 1
        score_a, score_b = base.number(row, "score_A"), base.number(row, "score_B")
        chosen, rejected, preferred, other = (
            (a, b, score_a, score_b) if a_preferred else (b, a, score_b, score_a)
        )
        if preferred < other:
            raise DataError(
                f"prefers {'A' if a_preferred else 'B'}, whose score is lower ({preferred:g} < {other:g})",
                field="labels",
            )
        # a non-positive score for the other comment (SHP itself has none) makes the ratio unbounded
        ratio = 1.0 if preferred == other else preferred / other if other > 0 else math.inf
        return [
            PreferencePair(
                prompt=prompt,
                chosen=chosen,
                rejected=rejected,
                category=self.category,
                rating=base.rating_bucket(ratio, self.thresholds),
                source=self.source,
                meta=base.extras(row, self.USED),
            )
        ]
