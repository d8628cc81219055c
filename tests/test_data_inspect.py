"""`paddock data inspect` and `paddock data adapters`: counts and breakdowns, token lengths,
examples, options, splits, rejects, JSON output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignment.cli import main

REPO = Path(__file__).resolve().parents[1]


def test_inspect_json_counts_the_gym_test_pairs(capsys):
    path = REPO / "data/gym/helpfulness_pairs_test.jsonl"
    assert main(["data", "inspect", str(path), "--json", "--tokenizer", "none"]) == 0
    report = json.loads(capsys.readouterr().out)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert report["total"] == len(rows) == 800
    assert report["by_category"] == {"helpfulness": 800}
    assert report["by_rating"] == {
        r: 200 for r in ("significantly_better", "better", "slightly_better", "negligibly_better")
    }
    assert len(report["examples"]) == 3


def test_inspect_reports_token_lengths(capsys, smollm2_tokenizer):
    path = REPO / "tests/fixtures/pku_saferlhf.jsonl"
    assert main(["data", "inspect", str(path), "--adapter", "pku-saferlhf", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report["by_category"]) == {"helpfulness", "safety"}  # one row gives one pair of each
    assert report["tokens"]["chosen"]["max"] >= report["tokens"]["chosen"]["median"] > 0
    assert main(["data", "inspect", str(path), "--adapter", "pku-saferlhf"]) == 0
    text = capsys.readouterr().out
    assert (
        "by category:" in text
        and "chosen tokens:" in text
        and "example 1 (helpfulness, unrated, chosen unsafe / rejected safe):" in text
    )


def test_inspect_exits_non_zero_on_bad_rows(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    good = {"prompt": "hi", "chosen": "a", "rejected": "b", "rating": "better"}
    bad.write_text(json.dumps(good) + "\n{oops\n" + json.dumps({**good, "rating": "amazing"}) + "\n")
    assert main(["data", "inspect", str(bad), "--tokenizer", "none"]) == 2
    assert "bad.jsonl line 2" in capsys.readouterr().err
    assert main(["data", "inspect", str(bad), "--tokenizer", "none", "--on-error", "skip", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 1 and report["rows_rejected"] == 2


# --- options, splits, rejects and breakdowns ------------------------------------------------------

FIXTURES = REPO / "tests/fixtures"


def run(argv, capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def inspect_json(argv, capsys) -> dict:
    code, out, _ = run(["data", "inspect", *argv, "--tokenizer", "none", "--json"], capsys)
    assert code == 0
    return json.loads(out)


def test_inspect_breaks_pairs_down_by_category_rating_and_safety_label(capsys):
    argv = [str(FIXTURES / "pku_saferlhf.jsonl"), "--adapter", "pku-saferlhf"]
    report = inspect_json([*argv, "--option", "rating_from_severity=true"], capsys)
    assert report["adapter_options"]["rating_from_severity"] is True
    # row 1: severities 2 and 0, gap 2 -> better; row 2: both 0 -> negligibly better
    assert report["by_category_rating"] == {
        "helpfulness": {"unrated": 2},
        "safety": {"better": 1, "negligibly_better": 1},
    }
    assert report["by_safety_label"] == {
        "chosen unsafe / rejected safe": 1,
        "chosen safe / rejected unsafe": 1,
        "chosen safe / rejected safe": 2,
    }
    assert [(e["category"], e["rating"], e["chosen_safe"]) for e in report["examples"][:2]] == [
        ("helpfulness", None, False),
        ("safety", "better", True),
    ]
    code, out, _ = run(
        ["data", "inspect", *argv, "--tokenizer", "none", "--option", "rating_from_severity=true"], capsys
    )
    assert code == 0
    assert "  by category and rating: helpfulness: unrated 2; safety: better 1, negligibly_better 1\n" in out
    assert "  example 2 (safety, better, chosen safe / rejected unsafe):\n" in out


def test_inspect_shows_the_category_an_adapter_chose(capsys):
    path = str(FIXTURES / "hh_rlhf.jsonl")
    code, out, _ = run(["data", "inspect", path, "--adapter", "hh-rlhf", "--tokenizer", "none"], capsys)
    assert code == 0
    assert "adapter hh-rlhf: subset null, category other," in out.splitlines()[0]
    assert "  by category: other 2\n" in out
    report = inspect_json([path, "--adapter", "hh-rlhf", "--option", "subset=harmless-base"], capsys)
    assert report["by_category"] == {"safety": 2} and report["adapter_options"]["category"] == "safety"


def test_inspect_option_values_are_yaml(capsys):
    path = str(FIXTURES / "shp.jsonl")
    report = inspect_json([path, "--adapter", "shp", "--option", "thresholds=[10, 3, 1.2]"], capsys)
    # ratios 12, 3 and 1.5 against (10, 3, 1.2)
    assert report["by_rating"] == {"significantly_better": 1, "better": 1, "slightly_better": 1}
    report = inspect_json(
        [str(FIXTURES / "rl_prompts.jsonl"), "--kind", "rl_prompts", "--option", "category=safety"], capsys
    )
    assert report["by_category"] == {"safety": 2}  # row 1 has none; row 2 says safety


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            ["--option", "subst=harmless"],
            "adapter 'hh-rlhf' has no option 'subst' (did you mean 'subset'?); options: subset,",
        ),
        (["--option", "subset"], "--option expects KEY=VALUE, got 'subset'"),
        (["--option", "subset=[oops"], "--option subset: not a valid YAML value"),
        (["--option", "ignore_extra_fields=maybe"], "ignore_extra_fields must be true or false, got 'maybe'"),
        (
            ["--kind", "dialogues", "--option", "subset=harmless"],
            "dialogues take no option 'subset'; options: category, source",
        ),
        (["--rejects", "r.jsonl"], "--rejects needs --on-error skip"),
    ],
)
def test_inspect_bad_options_are_one_line(capsys, tmp_path, extra, message):
    argv = ["data", "inspect", str(FIXTURES / "hh_rlhf.jsonl"), "--adapter", "hh-rlhf", "--tokenizer", "none"]
    code, out, err = run([*argv, *extra], capsys)
    assert code == 2 and out == ""
    assert err.startswith("paddock: error: ") and err.count("\n") == 1 and message in err


def test_inspect_split_of_a_dataset_dict(tmp_path, capsys):
    from datasets import Dataset, DatasetDict

    rows = [{"prompt": "q", "chosen": f"a{i}", "rejected": "b", "category": "safety"} for i in range(3)]
    DatasetDict(train_prefs=Dataset.from_list(rows), test_prefs=Dataset.from_list(rows[:1])).save_to_disk(
        str(tmp_path / "dd")
    )
    report = inspect_json([str(tmp_path / "dd"), "--split", "test_prefs"], capsys)
    assert (report["total"], report["split"], report["by_category"]) == (1, "test_prefs", {"safety": 1})
    code, _, err = run(["data", "inspect", str(tmp_path / "dd"), "--tokenizer", "none"], capsys)
    assert code == 2 and "holds splits train_prefs, test_prefs" in err and "--split" in err


def test_inspect_writes_rejects_only_when_asked(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    good = {"prompt": "hi", "chosen": "a", "rejected": "b"}
    (data / "d.jsonl").write_text(json.dumps(good) + "\n{oops\n" + json.dumps({**good, "chosen": ""}) + "\n")
    argv = ["data", "inspect", str(data / "d.jsonl"), "--tokenizer", "none", "--on-error", "skip"]
    code, out, _ = run(argv, capsys)
    assert code == 1
    assert "2 rejected (empty_response 1, malformed_json 1), not written: --rejects PATH writes them" in out
    assert f"    rejected: {data / 'd.jsonl'} line 2: malformed JSON" in out
    assert sorted(p.name for p in data.iterdir()) == ["d.jsonl"]
    code, out, _ = run([*argv, "--rejects", str(tmp_path / "rejects.jsonl")], capsys)
    assert code == 1 and f"-> {tmp_path / 'rejects.jsonl'}" in out
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "rejects.jsonl").read_text().splitlines()]
    assert kinds == ["malformed_json", "empty_response"]


def test_inspect_refuses_fields_the_adapter_would_drop(capsys):
    path = str(REPO / "data/gym/safety_pairs_test.jsonl")  # llama2 rows: rating, category, safety labels
    code, _, err = run(["data", "inspect", path, "--adapter", "trl", "--tokenizer", "none"], capsys)
    assert code == 2
    assert (
        "line 1: row carries rating, category, chosen_safe, rejected_safe, which adapter 'trl' ignores; "
        in err
    )
    assert "use adapter 'llama2' to keep them, or set option ignore_extra_fields: true" in err


def test_inspect_a_corrupt_file_is_one_line(tmp_path, capsys):
    (tmp_path / "d.jsonl.gz").write_bytes(b"not gzip at all\n")
    code, _, err = run(["data", "inspect", str(tmp_path / "d.jsonl.gz"), "--tokenizer", "none"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{tmp_path / 'd.jsonl.gz'}: corrupt or truncated gzip file" in err


def test_data_adapters_lists_fields_and_options_from_the_classes(capsys):
    from alignment.data.adapters import ADAPTERS

    code, out, _ = run(["data", "adapters"], capsys)
    assert code == 0
    for name, cls in ADAPTERS.items():
        assert f"{name}: " in out and f"  reads: {', '.join(cls.FIELDS)}\n" in out
    assert "  option rating_from_severity (default false): rate each safety pair" in out
    assert "  option thresholds (default [8.0, 4.0, 2.0]): score ratios" in out
    assert "  option category (default other): " in out
    code, out, _ = run(["data", "adapters", "--json"], capsys)
    table = json.loads(out)
    assert list(table) == list(ADAPTERS)
    assert table["hh-rlhf"]["options"]["subset"]["default"] is None
    assert table["trl"]["fields"] == ["prompt", "chosen", "rejected", "margin"]
    assert {k: v["default"] for k, v in table["pku-saferlhf"]["options"].items()} == {
        "categories": ["helpfulness", "safety"],
        "rating_from_severity": False,
        "source": None,
        "ignore_extra_fields": False,
    }
