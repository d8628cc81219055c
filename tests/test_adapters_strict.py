"""An adapter refuses rows carrying meaningful fields it would not read, and its options are declared.

A TRL file whose rows carry `rating` and `category` would train a reward model without margins
and put safety pairs in the helpfulness mixture, with nothing said; the row must be refused with
one line naming the fields and the adapter that reads them, unless `ignore_extra_fields` is set.
"""

from __future__ import annotations

import json

import pytest

from alignment.data.adapters import ADAPTERS, get_adapter
from alignment.data.adapters_base import MEANINGFUL_FIELDS, Adapter
from alignment.data.loading import load_preferences
from alignment.data.records import Category, PreferencePair, Rating
from alignment.data.sources import DataError
from alignment.errors import PaddockError

TRL_ROW = {"prompt": "q", "chosen": "yes", "rejected": "no"}


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_trl_refuses_rows_with_a_rating_and_a_category(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{**TRL_ROW, "rating": "better", "category": "safety"}])
    with pytest.raises(DataError) as info:
        load_preferences(path, "trl")
    assert str(info.value) == (
        f"{path} line 1: row carries rating, category, which adapter 'trl' ignores; "
        "use adapter 'llama2' to keep them, or set option ignore_extra_fields: true"
    )
    assert info.value.kind == "ignored_field"
    # the suggested adapter does keep them
    (pair,) = load_preferences(path, "llama2").pairs
    assert (pair.rating, pair.category) == (Rating.BETTER, Category.SAFETY)


def test_ignore_extra_fields_loads_and_keeps_them_in_meta(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{**TRL_ROW, "rating": "better", "chosen_safe": True}])
    (pair,) = load_preferences(path, "trl", ignore_extra_fields=True).pairs
    assert pair == PreferencePair(
        [{"role": "user", "content": "q"}],
        "yes",
        "no",
        source="trl",
        meta={"rating": "better", "chosen_safe": True},
    )


def test_skip_mode_counts_refused_rows(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [TRL_ROW, {**TRL_ROW, "margin": 1.0, "category": "safety"}])
    report = load_preferences(path, "trl", on_error="skip").report
    assert (report.produced, dict(report.rejected)) == (1, {"ignored_field": 1})


def test_null_columns_are_not_fields(tmp_path):
    """Parquet fills a column missing from some rows with null; an empty column carries nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**TRL_ROW, "rating": None, "category": None}, {**TRL_ROW, "chosen": "ok", "rating": None}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    assert len(load_preferences(tmp_path / "d.parquet", "trl").pairs) == 2


@pytest.mark.parametrize(
    "adapter, extra, message",
    [
        (
            "hh-rlhf",
            {"margin": 2.0},
            "row carries margin, which adapter 'hh-rlhf' ignores; use adapter 'llama2' to keep it",
        ),
        (
            "llama2",
            {"score_chosen": 9, "score_rejected": 3},
            "row carries score_chosen, score_rejected, which adapter 'llama2' ignores; "
            "use adapter 'ultrafeedback' to keep them",
        ),
        (
            "trl",
            {"rating": "better", "score_chosen": 9},
            "row carries rating, score_chosen, which adapter 'trl' ignores; adapter 'llama2' reads rating; "
            "adapter 'ultrafeedback' reads score_chosen, or set",
        ),
        (
            "llama2",
            {"is_safe": False},
            r"row carries is_safe, which adapter 'llama2' ignores; no adapter reads is_safe "
            r"\(see `paddock data adapters`\), or set",
        ),
        (
            "shp",
            {"category": "safety"},
            "row carries category, which adapter 'shp' ignores; use adapter 'llama2'",
        ),
    ],
)
def test_each_adapter_names_what_it_ignores(tmp_path, adapter, extra, message):
    base_rows = {
        "hh-rlhf": {"chosen": "\n\nHuman: q\n\nAssistant: a", "rejected": "\n\nHuman: q\n\nAssistant: b"},
        "llama2": TRL_ROW,
        "trl": TRL_ROW,
        "shp": {
            "history": "q",
            "human_ref_A": "a",
            "human_ref_B": "b",
            "labels": 1,
            "score_A": 9,
            "score_B": 1,
        },
    }
    path = write_jsonl(tmp_path / "d.jsonl", [base_rows[adapter], {**base_rows[adapter], **extra}])
    with pytest.raises(DataError, match=r"d\.jsonl line 2: " + message):
        load_preferences(path, adapter)
    assert len(load_preferences(path, adapter, ignore_extra_fields=True).pairs) == 2


# Rows as the public datasets publish them, every column included: their own extra columns are
# provenance (ids, dates, models, harm categories) and must not trip the check.
PUBLIC_ROWS = {
    "hh-rlhf": {
        "chosen": "\n\nHuman: hi\n\nAssistant: hello",
        "rejected": "\n\nHuman: hi\n\nAssistant: go away",
    },
    "pku-saferlhf": {
        "prompt": "q",
        "response_0": "a",
        "response_1": "b",
        "prompt_source": "Alpaca",
        "response_0_source": "Alpaca-7B",
        "response_1_source": "Alpaca-7B",
        "is_response_0_safe": True,
        "is_response_1_safe": False,
        "response_0_harm_category": {"Privacy Violation": False},
        "response_1_harm_category": {"Privacy Violation": True},
        "response_0_severity_level": 0,
        "response_1_severity_level": 2,
        "better_response_id": 1,
        "safer_response_id": 0,
        "response_0_sha256": "ab",
        "response_1_sha256": "cd",
    },
    "ultrafeedback": {
        "prompt": "q",
        "prompt_id": "x1",
        "chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "b"}],
        "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}],
        "score_chosen": 8.0,
        "score_rejected": 4.0,
        "source": "evol_instruct",
    },
    "shp": {
        "post_id": "p",
        "domain": "askscience_train",
        "upvote_ratio": 0.9,
        "history": "q",
        "c_root_id_A": "a",
        "c_root_id_B": "b",
        "created_at_utc_A": 1,
        "created_at_utc_B": 2,
        "score_A": 30,
        "score_B": 3,
        "human_ref_A": "a",
        "human_ref_B": "b",
        "labels": 1,
        "seconds_difference": 1.0,
        "score_ratio": 10.0,
    },
}


@pytest.mark.parametrize("adapter", sorted(PUBLIC_ROWS))
def test_public_schemas_load_with_all_their_columns(adapter):
    assert get_adapter(adapter)(PUBLIC_ROWS[adapter])


def test_every_adapter_declares_the_fields_it_reads():
    """A meaningful field an adapter really reads must be in its FIELDS, or its own rows would be
    refused; and each row kind above keeps no meaningful column outside its adapter's FIELDS."""
    for name, cls in ADAPTERS.items():
        assert cls.FIELDS, name
        for field in MEANINGFUL_FIELDS:
            row = PUBLIC_ROWS.get(name, {})
            assert field not in row or field in cls.FIELDS, (name, field)
    assert {"rating", "category", "margin", "chosen_safe", "rejected_safe"} <= set(ADAPTERS["llama2"].FIELDS)


# --- options -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ADAPTERS))
def test_declared_defaults_are_the_defaults(name):
    """Passing every option at its declared default builds the same adapter as passing none."""
    cls = ADAPTERS[name]
    explicit = get_adapter(name, **{k: o.default for k, o in cls.OPTIONS.items()})
    implicit = get_adapter(name)
    assert vars(explicit) == vars(implicit)
    assert all(o.help for o in cls.OPTIONS.values())
    assert {"source", "ignore_extra_fields"} <= set(cls.OPTIONS)


def test_unknown_and_mistyped_options_are_one_line_errors():
    with pytest.raises(PaddockError) as info:
        get_adapter("pku-saferlhf", rating_from_severty=True)
    assert str(info.value) == (
        "adapter 'pku-saferlhf' has no option 'rating_from_severty' (did you mean 'rating_from_severity'?); "
        "options: categories, rating_from_severity, source, ignore_extra_fields"
    )
    with pytest.raises(PaddockError, match="ignore_extra_fields must be true or false, got 'yes'"):
        get_adapter("trl", ignore_extra_fields="yes")
    with pytest.raises(PaddockError, match="source must be a string"):
        get_adapter("shp", source=3)


def test_a_custom_adapter_gets_the_common_options():
    class QA(Adapter):
        name = "qa"
        FIELDS = ("q", "good", "bad")

        def convert(self, row):
            return [PreferencePair([{"role": "user", "content": row["q"]}], row["good"], row["bad"])]

    row = {"q": "q", "good": "a", "bad": "b", "rating": "better"}
    with pytest.raises(DataError, match="row carries rating, which adapter 'qa' ignores"):
        QA()(row)
    assert QA(ignore_extra_fields=True)(row)[0].chosen == "a"
    with pytest.raises(PaddockError, match="adapter 'qa' has no option 'category'"):
        QA(category="safety")
