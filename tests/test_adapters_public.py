"""Categories of the public sets, and PKU-SafeRLHF ratings from severity levels.

Llama 2's helpfulness RM takes all Meta Helpfulness data plus an equal part drawn from the rest
(Meta Safety and the open-source sets); its safety RM takes Meta Safety and Anthropic Harmless
90/10 with helpfulness data. So HH-RLHF's helpful subsets and SHP are `other` (never the anchor
of the helpfulness mixture), and HH-RLHF's harmless-base is `safety`.
"""

from __future__ import annotations

import pytest

from alignment.data.adapters import get_adapter
from alignment.data.mixtures import PAPER_MIXTURES, preset_sources
from alignment.data.records import Category, PreferencePair, Rating, category_of
from alignment.data.sources import DataError
from alignment.errors import PaddockError

HELP, SAFE, OTHER = Category.HELPFULNESS, Category.SAFETY, Category.OTHER
HH_ROW = {"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go away"}
SHP_ROW = {"history": "q", "human_ref_A": "a", "human_ref_B": "b", "labels": 1, "score_A": 9, "score_B": 1}
UF_ROW = {"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": 9, "score_rejected": 1}


def category(adapter: str, row: dict, **options) -> Category:
    (pair,) = get_adapter(adapter, **options)(row)
    return pair.category


@pytest.mark.parametrize(
    "options, expected",
    [
        ({}, OTHER),
        ({"subset": "harmless-base"}, SAFE),
        ({"subset": "harmless"}, SAFE),
        ({"subset": "Helpful_Online"}, OTHER),
        ({"subset": "helpful-rejection-sampled"}, OTHER),
        ({"category": "helpfulness"}, HELP),  # a recipe source's `category:` still decides
        ({"subset": "harmless", "category": "safety"}, SAFE),
    ],
)
def test_hh_rlhf_category(options, expected):
    assert category("hh-rlhf", HH_ROW, **options) == expected


def test_hh_rlhf_subset_errors():
    with pytest.raises(
        PaddockError, match="subset 'harmless' holds safety pairs, but category is 'helpfulness'"
    ):
        get_adapter("hh-rlhf", subset="harmless", category="helpfulness")
    with pytest.raises(
        PaddockError, match="unknown subset 'red-team'; use one of harmless-base, helpful-base"
    ):
        get_adapter("hh-rlhf", subset="red-team")


@pytest.mark.parametrize("adapter, row", [("shp", SHP_ROW), ("ultrafeedback", UF_ROW)])
def test_open_source_sets_are_other_unless_told(adapter, row):
    assert category(adapter, row) == OTHER
    assert category(adapter, row, category="helpfulness") == HELP


def test_open_source_pairs_are_not_the_helpfulness_anchor():
    """In the paper's helpfulness mixture, HH helpful and SHP pairs are drawn from the rest, and
    HH harmless pairs sit with the safety data in the safety mixture."""
    hh_helpful = get_adapter("hh-rlhf", subset="helpful-base")(HH_ROW)
    hh_harmless = get_adapter("hh-rlhf", subset="harmless-base")(HH_ROW)
    shp = get_adapter("shp")(SHP_ROW)
    meta = [PreferencePair([{"role": "user", "content": "q"}], "a", "b", HELP)]
    rows = meta + hh_helpful + hh_harmless + shp
    helpful = preset_sources(rows, PAPER_MIXTURES["llama2_helpfulness_rm"], category_of)
    assert helpful["helpfulness"] == meta and helpful["rest"] == hh_helpful + hh_harmless + shp
    safety = preset_sources(rows, PAPER_MIXTURES["llama2_safety_rm"], category_of)
    assert safety["safety"] == hh_harmless


# --- PKU-SafeRLHF severity -----------------------------------------------------------------------


def pku(severity_0, severity_1, safer, safe=(None, None)):
    row = {"prompt": "q", "response_0": "answer zero", "response_1": "answer one"}
    row |= {"better_response_id": 0, "safer_response_id": safer}
    row |= {"response_0_severity_level": severity_0, "response_1_severity_level": severity_1}
    row |= {"is_response_0_safe": safe[0], "is_response_1_safe": safe[1]}
    return row


@pytest.mark.parametrize(
    "row, expected",
    [
        (pku(3, 0, safer=1), Rating.SIGNIFICANTLY_BETTER),
        (pku(3, 1, safer=1), Rating.BETTER),
        (pku(1, 2, safer=0), Rating.SLIGHTLY_BETTER),
        (pku(0, 0, safer=0), Rating.NEGLIGIBLY_BETTER),
        (pku(2, 2, safer=1), Rating.NEGLIGIBLY_BETTER),
        (pku(None, 2, safer=0, safe=(True, False)), Rating.BETTER),
    ],
)
def test_pku_rating_from_severity(row, expected):
    """The safety pair's rating is the rejected answer's severity minus the chosen one's
    (0 safe, 1 minor, 2 moderate, 3 severe), worked by hand:

    - severities 3 and 0, safer is response 1: 3 - 0 = 3, significantly better;
    - 3 and 1, safer 1: 3 - 1 = 2, better;
    - 1 and 2, safer 0: 2 - 1 = 1, slightly better;
    - 0 and 0: both safe, 0, negligibly better / unsure;
    - 2 and 2: equally harmful, 0, negligibly better / unsure;
    - no level on an answer labelled safe counts as 0: 2 - 0 = 2, better.

    The helpfulness pair of the same row stays unrated: harm does not measure helpfulness.
    """
    helpful, safety = get_adapter("pku-saferlhf", rating_from_severity=True)(row)
    assert (helpful.category, helpful.rating) == (HELP, None)
    assert (safety.category, safety.rating) == (SAFE, expected)
    assert [p.rating for p in get_adapter("pku-saferlhf")(row)] == [None, None]  # off by default


@pytest.mark.parametrize(
    "row, message",
    [
        (
            pku(1, 2, safer=1),
            r"'safer_response_id': response_1 is the safer one, yet its severity level is higher \(2 > 1\)",
        ),
        (pku(4, 0, safer=1), r"'response_0_severity_level': must be one of \[0, 1, 2, 3\], got 4"),
        (pku(None, 0, safer=1, safe=(False, True)), "'response_0_severity_level': missing"),
        (pku("2", 0, safer=1), "'response_0_severity_level': expected an integer, got string"),
    ],
)
def test_pku_severity_errors(row, message):
    with pytest.raises(DataError, match=message):
        get_adapter("pku-saferlhf", rating_from_severity=True)(row)
    get_adapter("pku-saferlhf")(row)  # without the option, the levels are only kept in meta


def test_pku_options():
    (pair,) = get_adapter("pku-saferlhf", categories=["safety"], rating_from_severity=True)(
        pku(3, 0, safer=1)
    )
    assert pair.rating == Rating.SIGNIFICANTLY_BETTER
    with pytest.raises(PaddockError, match="rating_from_severity must be true or false"):
        get_adapter("pku-saferlhf", rating_from_severity="yes")
    with pytest.raises(PaddockError, match="categories must name helpfulness and/or safety"):
        get_adapter("pku-saferlhf", categories=["other"])
