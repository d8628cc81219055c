"""`paddock data inspect`: counts, token lengths, examples, JSON output and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

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
    assert "by category:" in text and "chosen tokens:" in text and "example 1:" in text


def test_inspect_exits_non_zero_on_bad_rows(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    good = {"prompt": "hi", "chosen": "a", "rejected": "b", "rating": "better"}
    bad.write_text(json.dumps(good) + "\n{oops\n" + json.dumps({**good, "rating": "amazing"}) + "\n")
    assert main(["data", "inspect", str(bad), "--tokenizer", "none"]) == 2
    assert "bad.jsonl line 2" in capsys.readouterr().err
    assert main(["data", "inspect", str(bad), "--tokenizer", "none", "--on-error", "skip", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 1 and report["rows_rejected"] == 2
