"""Random rows never crash an adapter: each one loads into valid PreferencePairs or raises DataError.

Real preference dumps hold every kind of junk (nulls from Parquet, numbers as strings, truncated
transcripts); a TypeError deep inside an adapter would tell the user nothing, and `skip` mode
could not set the row aside.
"""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from alignment.data.adapters import ADAPTERS, LLAMA2_FIELDS, get_adapter
from alignment.data.loading import load_preferences
from alignment.data.records import Category, PreferencePair, Rating
from alignment.data.sources import DataError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KEYS = {
    "llama2": [*LLAMA2_FIELDS, "ratng"],  # plus a misspelt field, which must be refused
    "trl": ["prompt", "chosen", "rejected", "margin"],
    "hh-rlhf": ["chosen", "rejected"],
    "pku-saferlhf": [
        "prompt",
        "response_0",
        "response_1",
        "better_response_id",
        "safer_response_id",
        "is_response_0_safe",
        "is_response_1_safe",
        "response_0_severity_level",
    ],
    "ultrafeedback": ["prompt", "chosen", "rejected", "score_chosen", "score_rejected"],
    "shp": ["history", "human_ref_A", "human_ref_B", "labels", "score_A", "score_B"],
}

roles = st.sampled_from(["system", "user", "assistant", "bot"])
message = st.fixed_dictionaries(
    {"role": roles, "content": st.text(max_size=8)}, optional={"x": st.integers()}
)
conversation = st.lists(message, max_size=4)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.text(max_size=12),
    st.sampled_from(["better", "Significantly Better", "unsure", "safety", "helpfulness", "", " "]),
    st.sampled_from(
        ["\n\nHuman: hi\n\nAssistant: yo", "\n\nHuman: hi\n\nAssistant: ", "Human: a\n\nAssistant: b"]
    ),
)
values = st.one_of(
    st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner)
    ),
    conversation,
)


def random_rows(adapter: str):
    keys = KEYS[adapter] + ["extra"]
    return st.fixed_dictionaries({}, optional={k: values for k in keys})


# single-spaced words: answers that differ only in whitespace would rightly count as identical
words = st.lists(st.text(alphabet="abcdefgh", min_size=1, max_size=4), min_size=1, max_size=3).map(" ".join)


@st.composite
def well_formed_rows(draw, adapter: str) -> tuple[dict, str, str]:
    """A row of the right shape with answers `a` and `b`, which may still coincide."""
    q, a, b = draw(words), draw(words), draw(words)
    score = st.floats(min_value=0, max_value=10)
    s1, s2 = sorted([draw(score), draw(score)], reverse=True)
    if adapter == "llama2":
        rating = draw(st.sampled_from([None, *[r.value for r in Rating], "Slightly Better"]))
        category = draw(st.sampled_from(["helpfulness", "safety"]))
        row = {"prompt": q, "chosen": a, "rejected": b, "rating": rating, "category": category}
    elif adapter == "trl":
        row = draw(
            st.sampled_from(
                [
                    {"prompt": q, "chosen": a, "rejected": b, "margin": s1},
                    {"prompt": [_u(q)], "chosen": [_a(a)], "rejected": [_a(b)]},
                    {"chosen": f"{q} {a}", "rejected": f"{q} {b}"},
                    {"chosen": [_u(q), _a(a)], "rejected": [_u(q), _a(b)]},
                    {"prompt": q, "chosen": [_u(q), _a(a)], "rejected": [_u(q), _a(b)]},  # whole dialogues
                ]
            )
        )
    elif adapter == "hh-rlhf":
        row = {"chosen": f"\n\nHuman: {q}\n\nAssistant: {a}", "rejected": f"\n\nHuman: {q}\n\nAssistant: {b}"}
    elif adapter == "pku-saferlhf":
        ids = st.sampled_from([0, 1])
        row = {"prompt": q, "response_0": a, "response_1": b, "is_response_0_safe": True}
        row |= {"better_response_id": draw(ids), "safer_response_id": draw(ids)}
    elif adapter == "ultrafeedback":
        row = {"prompt": q, "chosen": [_u(q), _a(a)], "rejected": [_u(q), _a(b)]}
        row |= {"score_chosen": s1, "score_rejected": s2}
    else:
        row = {"history": q, "human_ref_A": a, "human_ref_B": b, "labels": 1, "score_A": s1, "score_B": s2}
    return row, a, b


def _u(text):
    return {"role": "user", "content": text}


def _a(text):
    return {"role": "assistant", "content": text}


def assert_valid(pairs) -> None:
    for p in pairs:
        assert isinstance(p, PreferencePair)
        assert isinstance(p.chosen, str) and isinstance(p.rejected, str)
        assert p.chosen.strip() and p.rejected.strip() and p.chosen.strip() != p.rejected.strip()
        assert p.prompt and p.prompt[-1]["role"] == "user" and p.prompt[-1]["content"].strip()
        for m in p.prompt:
            assert set(m) == {"role", "content"} and m["role"] in ("system", "user", "assistant")
            assert isinstance(m["content"], str)
        assert isinstance(p.category, Category)
        assert p.rating is None or isinstance(p.rating, Rating)
        assert p.margin is None or (isinstance(p.margin, float) and math.isfinite(p.margin))


def loads_or_data_error(adapter, row) -> list | None:
    try:
        pairs = adapter(row)
    except DataError:
        return None
    assert_valid(pairs)
    return pairs


def make_test(name):
    adapter = get_adapter(name)

    @SETTINGS
    @given(row=random_rows(name))
    def random_row(row):
        loads_or_data_error(adapter, row)

    @SETTINGS
    @given(case=well_formed_rows(name))
    def well_formed_row(case):
        row, a, b = case
        pairs = loads_or_data_error(adapter, row)
        if a != b:
            assert pairs, f"a well-formed row with distinct answers was rejected: {row}"
        else:
            assert pairs is None

    return random_row, well_formed_row


for _name in ADAPTERS:
    _random, _well_formed = make_test(_name)
    globals()[f"test_{_name.replace('-', '_')}_random_rows"] = _random
    globals()[f"test_{_name.replace('-', '_')}_well_formed_rows"] = _well_formed


@settings(max_examples=40, deadline=None)
@given(
    pair=st.builds(
        PreferencePair,
        prompt=st.lists(st.builds(_u, words), min_size=1, max_size=3),
        chosen=words,
        rejected=words,
        category=st.sampled_from(Category),
        rating=st.none() | st.sampled_from(Rating),
        margin=st.none() | st.floats(allow_nan=False, allow_infinity=False),
        source=st.text(max_size=5),
        chosen_safe=st.none() | st.booleans(),
        rejected_safe=st.none() | st.booleans(),
        meta=st.dictionaries(st.text(max_size=4), st.integers() | st.text(max_size=4), max_size=3),
    )
)
def test_llama2_round_trip(pair):
    """What `to_dict` writes, the llama2 adapter reads back unchanged."""
    if pair.chosen.strip() == pair.rejected.strip():
        return
    assert get_adapter("llama2")(json.loads(json.dumps(pair.to_dict()))) == [pair]


lines = st.one_of(
    st.binary(max_size=20),
    st.builds(json.dumps, random_rows("llama2")).map(str.encode),
    well_formed_rows("llama2").map(lambda case: json.dumps(case[0]).encode()),
)


@settings(max_examples=40, deadline=None)
@given(file_lines=st.lists(lines, max_size=8))
def test_skip_mode_accounts_for_every_row(file_lines):
    """Whatever the file holds, each non-blank line ends up a record or a reject, and the counts agree."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.jsonl"
        path.write_bytes(b"\n".join(file_lines))
        result = load_preferences(path, on_error="skip", rejects_path=Path(tmp) / "run" / "rejects.jsonl")
        report = result.report
        rows = [line for line in b"\n".join(file_lines).split(b"\n") if line.strip()]
        assert report.rows_read == len(rows)
        assert report.rows_rejected + report.produced == report.rows_read  # llama2: one pair per good row
        rejects = Path(report.rejects_path).read_text(encoding="utf-8").splitlines()
        assert len(rejects) == len(report.rejects) == report.rows_rejected
        assert_valid(result.pairs)
