"""Preference adapters on their fixtures, every source format, every bad-input kind, and skip mode."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pytest

from alignment.data.adapters import ADAPTERS, Adapter, get_adapter
from alignment.data.loading import load_dialogues, load_preferences, load_rl_prompts
from alignment.data.records import Category, Dialogue, PreferencePair, Rating, RLPrompt
from alignment.data.sources import DataError
from alignment.errors import PaddockError

FIXTURES = Path(__file__).parent / "fixtures"
HELP, SAFE, OTHER = Category.HELPFULNESS, Category.SAFETY, Category.OTHER


def U(text):
    return {"role": "user", "content": text}


def A(text):
    return {"role": "assistant", "content": text}


def S(text):
    return {"role": "system", "content": text}


def load(name, adapter, **options):
    return load_preferences(FIXTURES / name, adapter, **options).pairs


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


# --- adapters on their fixtures ------------------------------------------------------------------


def test_llama2():
    assert load("llama2.jsonl", "llama2") == [
        PreferencePair(
            prompt=[U("How many legs does a spider have?")],
            chosen="A spider has eight legs.",
            rejected="Spiders have six legs.",
            category=HELP,
            rating=Rating.SIGNIFICANTLY_BETTER,
        ),
        PreferencePair(
            prompt=[
                S("You are a careful assistant."),
                U("How do I get into my neighbour's shed?"),
                A("Is it your shed, or theirs?"),
                U("Theirs, they are away."),
            ],
            chosen="I can't help with entering someone else's property. "
            "You could ask them for a key when they are back.",
            rejected="[placeholder: compliance with the request]",
            category=SAFE,
            rating=Rating.NEGLIGIBLY_BETTER,
            source="fixture-safety",
            chosen_safe=True,
            rejected_safe=False,
            meta={"risk": "property"},
        ),
        PreferencePair(
            prompt=[U("Sort 3, 1, 2.")],
            chosen="1, 2, 3",
            rejected="3, 2, 1",
            margin=0.5,
            source="fixture-gym",
            meta={"id": "ex-3"},  # an extra column is kept, not dropped
        ),
    ]


def test_llama2_reads_back_what_to_dict_writes(tmp_path):
    pairs = load("llama2.jsonl", "llama2")
    path = write_jsonl(tmp_path / "out.jsonl", [p.to_dict() for p in pairs])
    assert load_preferences(path).pairs == pairs


def test_llama2_options_fill_missing_fields(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b"}])
    (pair,) = load_preferences(path, category="safety", source="mine").pairs
    assert (pair.category, pair.source) == (SAFE, "mine")


def test_trl_standard():
    assert load("trl_standard.jsonl", "trl") == [
        PreferencePair([U("The capital of France is")], " Paris.", " Lyon.", source="trl"),
        PreferencePair([U("2 + 2 =")], " 4", " 5", margin=1.5, source="trl"),
    ]


def test_trl_conversational():
    assert load("trl_conversational.jsonl", "trl", category="safety", source="x") == [
        PreferencePair([U("What colour is the sky on a clear day?")], "Blue.", "Green.", SAFE, source="x"),
        PreferencePair(
            [S("Answer in French."), U("Say hello.")], "Bonjour.", "Hello.", SAFE, margin=0.25, source="x"
        ),
    ]


def test_trl_implicit_prompt():
    assert load("trl_implicit.jsonl", "trl") == [
        # the shared text is cut back to a word boundary: "... at 50" must not become "... at " + "50"
        PreferencePair(
            [U("Water boils at sea level at")], "100 degrees Celsius.", "50 degrees Celsius.", source="trl"
        ),
        PreferencePair([U("Name a prime number.")], "Seven.", "Nine.", source="trl"),
    ]


def test_hh_rlhf():
    bread = [U("I want to bake bread."), A("Great! Do you have yeast?"), U("Yes, dried yeast.")]
    assert load("hh_rlhf.jsonl", "hh-rlhf") == [
        PreferencePair(
            [U("What is a good name for a goldfish?")],
            "How about Bubbles?",
            "Fish don't need names.",
            OTHER,  # open-source data, apart from helpfulness data as in Llama 2's mixtures
            source="hh-rlhf",
        ),
        PreferencePair(
            bread,
            "Then mix 500 g flour, 7 g yeast, 10 g salt and 300 ml warm water.",
            "Buy bread instead.",
            OTHER,
            source="hh-rlhf",
        ),
    ]
    assert {p.category for p in load("hh_rlhf.jsonl", "hh_rlhf", category="safety")} == {SAFE}


def test_pku_saferlhf():
    pairs = load("pku_saferlhf.jsonl", "pku-saferlhf")
    harmful = "[placeholder: instructions for covert access]"
    careful = "Reading someone's messages without consent is a breach of trust; consider talking to them."
    meta_0 = {"chosen_severity_level": 2, "rejected_severity_level": 0, "prompt_source": "fixture"}
    meta_0.update(better_response_id=0, safer_response_id=1)
    meta_1 = {"chosen_severity_level": 0, "rejected_severity_level": 2, "prompt_source": "fixture"}
    meta_1.update(better_response_id=0, safer_response_id=1)
    prompt = [U("How can I read my partner's messages without them knowing?")]
    assert pairs[:2] == [
        PreferencePair(prompt, harmful, careful, HELP, None, None, "pku-saferlhf", False, True, meta_0),
        PreferencePair(prompt, careful, harmful, SAFE, None, None, "pku-saferlhf", True, False, meta_1),
    ]
    assert [(p.category, p.chosen, p.chosen_safe, p.rejected_safe) for p in pairs[2:]] == [
        (HELP, "Oats with fruit and yoghurt.", True, True),
        (SAFE, "Oats with fruit and yoghurt.", True, True),
    ]
    safety_only = load("pku_saferlhf.jsonl", "pku-saferlhf", categories=["safety"])
    assert [p.category for p in safety_only] == [SAFE, SAFE]


def test_ultrafeedback():
    pairs = load("ultrafeedback.jsonl", "ultrafeedback")
    assert pairs[0] == PreferencePair(
        [U("Explain photosynthesis in one sentence.")],
        "Plants turn light, water and CO2 into sugar and oxygen.",
        "It is a plant thing.",
        OTHER,
        rating=Rating.SIGNIFICANTLY_BETTER,
        source="ultrafeedback",
        meta={"prompt_id": "uf-1", "score_chosen": 9.0, "score_rejected": 5.0},
    )
    # gaps 4, 1.5, 0 under the default thresholds (3, 2, 1), then under (5, 4, 1.5)
    assert [p.rating for p in pairs] == [
        Rating.SIGNIFICANTLY_BETTER,
        Rating.SLIGHTLY_BETTER,
        Rating.NEGLIGIBLY_BETTER,
    ]
    pairs = load("ultrafeedback.jsonl", "ultrafeedback", thresholds=(5, 4, 1.5))
    assert [p.rating for p in pairs] == [Rating.BETTER, Rating.SLIGHTLY_BETTER, Rating.NEGLIGIBLY_BETTER]


def test_shp():
    pairs = load("shp.jsonl", "shp")
    assert pairs[1] == PreferencePair(
        [U("Can I freeze cooked pasta?")],
        "Yes, toss it in a little oil first so it doesn't clump.",
        "No.",
        OTHER,
        rating=Rating.SLIGHTLY_BETTER,  # 12 / 4 = 3
        source="shp",
        meta={
            "post_id": "p2",
            "domain": "askcooking_train",
            "c_root_id_A": "a2",
            "c_root_id_B": "b2",
            "labels": 0,
            "score_A": 4,
            "score_B": 12,
        },
    )
    # ratios 12, 3, 1.5 under the default thresholds (8, 4, 2), then under (10, 3, 1.2)
    assert [p.rating for p in pairs] == [
        Rating.SIGNIFICANTLY_BETTER,
        Rating.SLIGHTLY_BETTER,
        Rating.NEGLIGIBLY_BETTER,
    ]
    assert pairs[0].chosen.startswith("Rinse")
    pairs = load("shp.jsonl", "shp", thresholds=[10, 3, 1.2])
    assert [p.rating for p in pairs] == [Rating.SIGNIFICANTLY_BETTER, Rating.BETTER, Rating.SLIGHTLY_BETTER]


def test_dialogues_and_rl_prompts():
    assert load_dialogues(FIXTURES / "dialogues.jsonl").records == [
        Dialogue([U("Hi!"), A("Hello! How can I help?")], HELP, "fixture"),
        Dialogue(
            [
                S("Always answer as a pirate."),
                U("What time is it?"),
                A("Arr, time to check yer clock, matey."),
                U("Thanks."),
                A("Ye be welcome!"),
            ],
            HELP,
            "fixture-gatt",
            {"instruction": "pirate"},
        ),
    ]
    assert load_rl_prompts(FIXTURES / "rl_prompts.jsonl").records == [
        RLPrompt([U("Write a haiku about rain.")], HELP, "fixture"),
        RLPrompt([U("How do I make a fake ID?")], SAFE, "fixture", {"risk": "fraud"}),
    ]


def test_an_adapter_instance_for_a_custom_schema(tmp_path):
    class QA(Adapter):
        name = "qa"

        def convert(self, row):
            return [PreferencePair([U(row["q"])], row["good"], row["bad"], source=self.source)]

    path = write_jsonl(tmp_path / "qa.jsonl", [{"q": "q", "good": "a", "bad": "b"}])
    assert load_preferences(path, QA()).pairs == [PreferencePair([U("q")], "a", "b", source="qa")]
    with pytest.raises(PaddockError, match=r"adapter options \['category'\] given with an adapter instance"):
        load_preferences(path, QA(), category="safety")


def test_every_adapter_has_a_fixture_test():
    assert set(ADAPTERS) == {"llama2", "trl", "hh-rlhf", "pku-saferlhf", "ultrafeedback", "shp"}


# --- sources -------------------------------------------------------------------------------------

ROWS = [
    {"prompt": "q1", "chosen": "good", "rejected": "bad", "rating": "better", "category": "helpfulness"},
    {
        "prompt": "q2",
        "chosen": "safe",
        "rejected": "unsafe",
        "rating": "slightly_better",
        "category": "safety",
    },
]


def expected_pairs():
    return [
        PreferencePair([U("q1")], "good", "bad", HELP, Rating.BETTER),
        PreferencePair([U("q2")], "safe", "unsafe", SAFE, Rating.SLIGHTLY_BETTER),
    ]


@pytest.mark.parametrize("layout", ["list", "data", "jsonl-named-json"])
def test_json_file(tmp_path, layout):
    path = tmp_path / "d.json"
    if layout == "list":
        path.write_text(json.dumps(ROWS))
    elif layout == "data":
        path.write_text(json.dumps({"data": ROWS}))
    else:
        write_jsonl(path, ROWS)
    assert load_preferences(path).pairs == expected_pairs()


def test_gzipped_jsonl(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    with gzip.open(path, "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in ROWS)
    assert load_preferences(path).pairs == expected_pairs()


def test_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(ROWS), tmp_path / "d.parquet")
    assert load_preferences(tmp_path / "d.parquet").pairs == expected_pairs()


def test_saved_dataset_and_dataset_dict(tmp_path):
    from datasets import Dataset, DatasetDict

    Dataset.from_list(ROWS).save_to_disk(str(tmp_path / "ds"))
    assert load_preferences(tmp_path / "ds").pairs == expected_pairs()
    DatasetDict(train=Dataset.from_list(ROWS), test=Dataset.from_list(ROWS[:1])).save_to_disk(
        str(tmp_path / "dd")
    )
    assert load_preferences(tmp_path / "dd", split="test").pairs == expected_pairs()[:1]
    with pytest.raises(DataError, match="holds splits train, test; choose one \\(a recipe source.s `split`"):
        load_preferences(tmp_path / "dd")
    with pytest.raises(DataError, match="no split 'dev'; splits: train, test"):
        load_preferences(tmp_path / "dd", split="dev")


def test_missing_path_does_not_touch_the_hub(tmp_path, monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kw: calls.append((name, kw)) or ROWS)
    with pytest.raises(DataError, match=r"nowhere\.jsonl: no such file \(pass allow_hub=True"):
        load_preferences(tmp_path / "nowhere.jsonl")
    assert calls == []
    result = load_preferences("someone/prefs", allow_hub=True, split="test", hub_options={"data_dir": "x"})
    assert result.pairs == expected_pairs()
    assert calls == [("someone/prefs", {"split": "test", "data_dir": "x"})]


def test_hub_failure_is_a_data_error(monkeypatch):
    import datasets

    def offline(name, **kw):
        raise ConnectionError("offline")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(
        DataError, match=r"someone/prefs: no such file, and loading it from the hub failed \(offline"
    ):
        load_preferences("someone/prefs", allow_hub=True)


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("d.csv", "a,b\n", "unsupported file type"),
        ("d.json", '{"rows": []}', r'expected a JSON list of rows or \{"data": \[...\]\}'),
        ("d.json", "[1, 2", "malformed JSON"),
        ("d.parquet", "not parquet", r"d\.parquet: corrupt or truncated Parquet file"),
    ],
)
def test_bad_files(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=message):
        load_preferences(tmp_path / name, on_error="skip")  # a bad file is not a row to skip


def test_directory_that_is_not_a_dataset(tmp_path):
    with pytest.raises(DataError, match="not a saved datasets directory"):
        load_preferences(tmp_path)


# --- bad rows ------------------------------------------------------------------------------------

GOOD = {"prompt": "q", "chosen": "yes", "rejected": "no"}


@pytest.mark.parametrize(
    "bad, kind, message",
    [
        ('{"prompt": "q", "chosen": ', "malformed_json", r"line 2: malformed JSON \(Expecting value"),
        ({"prompt": "q", "rejected": "no"}, "missing_field", r"line 2, field 'chosen': missing"),
        ({**GOOD, "chosen": None}, "missing_field", r"line 2, field 'chosen': missing"),
        ({**GOOD, "chosen": 7}, "wrong_type", r"line 2, field 'chosen': expected a string, got integer"),
        (
            {**GOOD, "prompt": [{"role": "user"}]},
            "missing_field",
            r"line 2, field 'prompt\[0\].content': missing",
        ),
        ({**GOOD, "chosen": "  "}, "empty_response", r"line 2, field 'chosen': empty response"),
        (
            {**GOOD, "rejected": "yes "},
            "identical_responses",
            r"line 2, field 'rejected': same text as 'chosen'",
        ),
        ({**GOOD, "rating": "great"}, "unknown_rating", r"line 2, field 'rating': unknown rating 'great'"),
        ({**GOOD, "rating": 3}, "wrong_type", r"line 2, field 'rating': expected a string, got integer"),
        (
            {**GOOD, "category": "harmless"},
            "invalid_value",
            r"line 2, field 'category': unknown category 'harmless'",
        ),
        (
            {**GOOD, "ratng": "better"},
            "unknown_field",
            r"line 2, field 'ratng': unknown field; did you mean 'rating'\?",
        ),
        ({**GOOD, "margin": True}, "wrong_type", r"line 2, field 'margin': expected a number, got boolean"),
        (
            {**GOOD, "chosen_safe": "yes"},
            "wrong_type",
            r"line 2, field 'chosen_safe': expected true or false, got string",
        ),
        (
            {**GOOD, "prompt": [U("q"), A("a")]},
            "invalid_value",
            r"line 2, field 'prompt': prompt must end with a user turn",
        ),
        (
            {**GOOD, "prompt": [{"role": "bot", "content": "q"}]},
            "invalid_value",
            r"line 2, field 'prompt\[0\].role': unknown role",
        ),
        ([1, 2], "not_an_object", r"line 2: row is list, not an object"),
    ],
)
def test_bad_row_names_file_line_and_field(tmp_path, bad, kind, message):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, bad])
    with pytest.raises(DataError, match=r"data\.jsonl " + message) as info:
        load_preferences(path)
    assert info.value.kind == kind and info.value.number == 2


def test_bad_row_in_parquet_names_the_row(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([GOOD, {**GOOD, "chosen": ""}]), tmp_path / "data.parquet")
    with pytest.raises(DataError, match=r"data\.parquet row 1, field 'chosen': empty response"):
        load_preferences(tmp_path / "data.parquet")


TRANSCRIPT = "\n\nHuman: hi\n\nAssistant: hello"


@pytest.mark.parametrize(
    "adapter, row, message",
    [
        (
            "trl",
            {"prompt": "q", "chosen": [U("other"), A("a")], "rejected": "b"},
            "'chosen': the turns before the answer do not start with the 'prompt' turns",
        ),
        (
            "trl",
            {"prompt": "q", "chosen": [U("q"), A("a"), U("more"), A("c")], "rejected": [U("q"), A("b")]},
            "'rejected': the turns before the answer differ",
        ),
        (
            "trl",
            {"chosen": "abc", "rejected": "abd"},
            "'chosen': no 'prompt' column, and .* share no leading",
        ),
        (
            "trl",
            {"chosen": [U("q"), A("a")], "rejected": [U("r"), A("b")]},
            "'rejected': must share every message",
        ),
        ("trl", {"chosen": [U("q"), A("a")], "rejected": "b"}, "'rejected': expected a list of messages"),
        (
            "trl",
            {"prompt": "q", "chosen": "a", "rejected": "b", "margin": "1"},
            "'margin': expected a number",
        ),
        (
            "hh-rlhf",
            {"chosen": TRANSCRIPT, "rejected": "\n\nHuman: yo\n\nAssistant: x"},
            "'rejected': turns before",
        ),
        ("hh-rlhf", {"chosen": "\n\nHuman: hi", "rejected": TRANSCRIPT}, "'chosen': .*does not end with"),
        (
            "hh-rlhf",
            {"chosen": "hi\n\nHuman: x\n\nAssistant: y", "rejected": TRANSCRIPT},
            "'chosen': text before",
        ),
        ("hh-rlhf", {"chosen": TRANSCRIPT, "rejected": TRANSCRIPT}, "'rejected': same text as 'chosen'"),
        (
            "pku-saferlhf",
            {
                "prompt": "q",
                "response_0": "a",
                "response_1": "b",
                "better_response_id": 2,
                "safer_response_id": 0,
            },
            r"'better_response_id': must be one of \[0, 1\], got 2",
        ),
        (
            "pku-saferlhf",
            {"prompt": "q", "response_0": "a", "response_1": "b", "better_response_id": 0},
            "'safer_response_id': missing",
        ),
        (
            "ultrafeedback",
            {"prompt": "q", "chosen": "a", "rejected": "b", "score_chosen": 2, "score_rejected": 5},
            r"'score_chosen': lower than score_rejected \(2 < 5\)",
        ),
        (
            "ultrafeedback",
            {
                "prompt": "q",
                "chosen": "a",
                "rejected": "b",
                "score_chosen": 2,
                "score_rejected": float("nan"),
            },
            r"'score_rejected': not a finite number",
        ),
        (
            "shp",
            {"history": "q", "human_ref_A": "a", "human_ref_B": "b", "labels": 1, "score_A": 2, "score_B": 9},
            r"'labels': prefers A, whose score is lower \(2 < 9\)",
        ),
    ],
)
def test_adapter_specific_errors(tmp_path, adapter, row, message):
    path = write_jsonl(tmp_path / "data.jsonl", [row])
    with pytest.raises(DataError, match=r"data\.jsonl line 1, field " + message):
        load_preferences(path, adapter)


def test_bad_dialogue_and_rl_prompt(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"messages": [U("q"), A("a"), U("more?")]}])
    with pytest.raises(
        DataError, match=r"d\.jsonl line 1, field 'messages': must end with an assistant turn"
    ):
        load_dialogues(path)
    path = write_jsonl(tmp_path / "p.jsonl", [{"prompt": [U("q")], "catgory": "safety"}])
    with pytest.raises(
        DataError, match=r"p\.jsonl line 1, field 'catgory': unknown field; did you mean 'category'"
    ):
        load_rl_prompts(path)


# --- skip mode -----------------------------------------------------------------------------------


def test_skip_mode_sets_bad_rows_aside(tmp_path, caplog):
    rows = [
        GOOD,
        '{"oops',
        {**GOOD, "chosen": ""},
        "",
        {**GOOD, "rating": "meh"},
        GOOD,
        {**GOOD, "rejected": "yes"},
    ]
    path = write_jsonl(tmp_path / "data.jsonl", rows)  # line 4 is blank: not a row
    with caplog.at_level(logging.WARNING):
        result = load_preferences(path, on_error="skip")
    report = result.report
    assert len(result.pairs) == report.produced == 2
    assert report.rows_read == 6 and report.rows_rejected == 4
    assert report.rejected == {
        "malformed_json": 1,
        "empty_response": 1,
        "unknown_rating": 1,
        "identical_responses": 1,
    }
    assert report.rejects_path is None  # no rejects_path: nothing is written beside the data
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl"]
    rejects = report.rejects
    assert [(r["line"], r["field"], r["kind"]) for r in rejects] == [
        (2, None, "malformed_json"),
        (3, "chosen", "empty_response"),
        (5, "rating", "unknown_rating"),
        (7, "rejected", "identical_responses"),
    ]
    assert rejects[0]["raw"] == '{"oops' and rejects[1]["row"] == {**GOOD, "chosen": ""}
    assert rejects[1]["error"].endswith("data.jsonl line 3, field 'chosen': empty response")
    assert (
        "rejected 4 (1 empty_response, 1 identical_responses, 1 malformed_json, 1 unknown_rating); "
        "rejects not written to a file" in caplog.text
    )
    target = tmp_path / "run" / "rejects.jsonl"
    result = load_preferences(path, on_error="skip", rejects_path=target)
    assert [json.loads(line) for line in target.read_text().splitlines()] == rejects


def test_skip_mode_with_a_given_rejects_path_and_no_rejects(tmp_path):
    path = write_jsonl(tmp_path / "data.jsonl", [GOOD, {**GOOD, "chosen": 1}])
    result = load_preferences(path, on_error="skip", rejects_path=tmp_path / "run" / "rejects.jsonl")
    assert result.report.rejects_path == str(tmp_path / "run" / "rejects.jsonl")
    assert len((tmp_path / "run" / "rejects.jsonl").read_text().splitlines()) == 1
    clean = write_jsonl(tmp_path / "clean.jsonl", [GOOD])
    result = load_preferences(clean, on_error="skip", rejects_path=tmp_path / "run" / "rejects.jsonl")
    assert result.report.rows_rejected == 0
    assert (tmp_path / "run" / "rejects.jsonl").read_text() == ""  # no stale rejects from the earlier load


def test_skip_mode_counts_pairs_per_row(tmp_path):
    result = load_preferences(
        FIXTURES / "pku_saferlhf.jsonl", "pku-saferlhf", on_error="skip", rejects_path=tmp_path / "r"
    )
    assert (result.report.rows_read, result.report.produced, result.report.rows_rejected) == (2, 4, 0)


# --- configuration errors ------------------------------------------------------------------------


def test_unknown_adapter_and_option():
    with pytest.raises(PaddockError, match="unknown adapter 'hh'.*adapters: llama2, trl, hh-rlhf"):
        get_adapter("hh")
    with pytest.raises(
        PaddockError, match="adapter 'shp' has no option 'treshold' \\(did you mean 'thresholds'\\?\\)"
    ):
        get_adapter("shp", treshold=(3, 2, 1))
    with pytest.raises(PaddockError, match="thresholds must be three descending numbers"):
        get_adapter("ultrafeedback", thresholds=(1, 2, 3))
    with pytest.raises(PaddockError, match="category must be one of helpfulness, safety"):
        get_adapter("hh-rlhf", category="harmless")
    with pytest.raises(PaddockError, match="on_error must be 'raise' or 'skip'"):
        load_preferences(FIXTURES / "llama2.jsonl", on_error="ignore")
