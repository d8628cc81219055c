"""Rating -> margin tables and data mixtures / prompt-disjoint splits."""

from __future__ import annotations

import pytest

from alignment.data.margins import COLUMN, margin_table, pair_margin
from alignment.data.mixtures import PAPER_MIXTURES, build_mixture, preset_sources, prompt_key, split_by_prompt
from alignment.data.records import PreferencePair, Rating
from alignment.errors import PaddockError


def pair(rating=None, margin=None, prompt="q"):
    return PreferencePair(
        prompt=[{"role": "user", "content": prompt}],
        chosen="a",
        rejected="b",
        rating=Rating(rating) if rating else None,
        margin=margin,
    )


def test_paper_margins():
    """Llama 2 Table 28: small = 1, 2/3, 1/3, 0 and large = 3, 2, 1, 0 from significantly better
    down to negligibly better / unsure; a pair without a rating counts as unsure."""
    small, large = margin_table("small"), margin_table("large")
    ratings = ["significantly_better", "better", "slightly_better", "negligibly_better"]
    assert [pair_margin(pair(r), small) for r in ratings] == pytest.approx([1, 2 / 3, 1 / 3, 0])
    assert [pair_margin(pair(r), large) for r in ratings] == [3, 2, 1, 0]
    assert pair_margin(pair(None), large) == 0
    assert pair_margin(pair("better"), margin_table("none")) == 0


def test_custom_table_and_column():
    table = margin_table({"Significantly Better": 5, "better": 4, "slightly": 2, "unsure": 0.5})
    assert pair_margin(pair("slightly_better"), table) == 2
    assert pair_margin(pair("negligibly_better"), table) == 0.5
    assert pair_margin(pair("better", margin=1.7), margin_table(COLUMN)) == 1.7
    with pytest.raises(ValueError, match="numeric margin on every pair"):
        pair_margin(pair("better"), margin_table(COLUMN))
    with pytest.raises(ValueError, match="lacks"):
        margin_table({"better": 1})
    with pytest.raises(ValueError, match="unknown margin setting 'huge'"):
        margin_table("huge")


def category(row) -> str:
    return {"h": "helpfulness", "s": "safety", "o": "other"}[row[0]]


def rows(**counts) -> list:
    return [(kind, i) for kind, n in counts.items() for i in range(n)]


def test_paper_helpfulness_mixture_draws_the_rest_uniformly():
    """Helpfulness anchored at ratio 0.5 with 100 rows -> total 200: all 100 helpfulness rows, and
    0.5 * 200 = 100 rows drawn uniformly from the 300 safety + 500 other rows, so about
    100 * 300 / 800 = 37.5 safety rows (hypergeometric sd ~4.6; 20..55 is > 3.5 sd)."""
    sources = preset_sources(rows(h=100, s=300, o=500), PAPER_MIXTURES["llama2_helpfulness_rm"], category)
    assert [len(sources[k]) for k in ("helpfulness", "rest")] == [100, 800]
    mixed, report = build_mixture(sources, PAPER_MIXTURES["llama2_helpfulness_rm"], seed=1)
    assert report.used == {"helpfulness": 100, "rest": 100}
    assert len(mixed) == 200 and len(set(mixed)) == 200
    assert {row for row in mixed if row[0] == "h"} == set(rows(h=100))
    assert 20 <= sum(row[0] == "s" for row in mixed) <= 55


def test_paper_helpfulness_mixture_caps_a_small_rest():
    """With only 60 safety rows as the rest, the rest's 100-row share is capped: all 60 are used."""
    sources = preset_sources(rows(h=100, s=60), PAPER_MIXTURES["llama2_helpfulness_rm"], category)
    mixed, report = build_mixture(sources, PAPER_MIXTURES["llama2_helpfulness_rm"], seed=1)
    assert report.requested == {"helpfulness": 100, "rest": 100}
    assert report.used == {"helpfulness": 100, "rest": 60} and len(mixed) == 160


def test_paper_safety_mixture_is_90_10_and_seeded():
    """Safety anchored at 0.9 with 90 rows -> total 100 -> 10 rows from helpfulness and other."""
    sources = preset_sources(rows(s=90, h=500, o=500), PAPER_MIXTURES["llama2_safety_rm"], category)
    assert len(sources["rest"]) == 1000
    first, report = build_mixture(sources, PAPER_MIXTURES["llama2_safety_rm"], seed=3)
    again, _ = build_mixture(sources, PAPER_MIXTURES["llama2_safety_rm"], seed=3)
    other, _ = build_mixture(sources, PAPER_MIXTURES["llama2_safety_rm"], seed=4)
    assert report.used == {"safety": 90, "rest": 10}
    assert first == again and first != other


def test_counts_fractions_and_errors():
    sources = {"a": list(range(10)), "b": list(range(100, 104))}
    mixed, report = build_mixture(sources, {"a": {"fraction": 0.5}, "b": {"count": 6, "replace": True}})
    assert report.used == {"a": 5, "b": 6} and len(mixed) == 11
    with pytest.raises(PaddockError, match="'b': 6 rows wanted, 4 available"):
        build_mixture(sources, {"b": {"count": 6}})
    with pytest.raises(PaddockError, match="ratios need a `total`"):
        build_mixture(sources, {"a": {"ratio": 0.5}})
    with pytest.raises(PaddockError, match="unknown key"):
        build_mixture(sources, {"a": {"cnt": 1}})
    assert build_mixture(sources, {"a": {"ratio": 0.5}}, total=8)[1].used == {"a": 4}


def test_split_never_shares_a_prompt():
    rows = [pair(prompt=f"question {i % 40}") for i in range(400)]  # 10 pairs per prompt
    train, test = split_by_prompt(rows, 0.25, seed=0)
    train_keys = {prompt_key(r.prompt) for r in train}
    test_keys = {prompt_key(r.prompt) for r in test}
    assert not train_keys & test_keys
    assert len(train) + len(test) == 400 and 3 <= len(test_keys) <= 20
    assert split_by_prompt(rows, 0.25, seed=0) == (train, test)
    # Whitespace differences do not make a different prompt.
    assert prompt_key("two  words") == prompt_key([{"role": "user", "content": "two words "}])
