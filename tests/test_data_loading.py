"""Loading writes nothing beside the user's data, and a corrupt file is one clear error.

Skip mode keeps rejected rows in the report; they reach a file only through an explicit
`rejects_path` (the stages pass one in their run directory). A truncated or non-gzip `.gz` and a
damaged Parquet file name the file and say it is corrupt, instead of an EOFError or ArrowInvalid
traceback from deep inside the reader.
"""

from __future__ import annotations

import gzip
import json
import os
from pathlib import Path

import pytest

from alignment.data.loading import load_dialogues, load_preferences, load_rl_prompts
from alignment.data.sources import DataError
from alignment.errors import PaddockError

GOOD = {"prompt": "q", "chosen": "yes", "rejected": "no"}
BAD = {**GOOD, "chosen": ""}


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_skip_mode_works_in_a_read_only_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "prefs.jsonl", [GOOD, BAD])
    data.chmod(0o555)
    try:
        result = load_preferences(data / "prefs.jsonl", on_error="skip")  # no PermissionError
        assert (result.report.produced, result.report.rows_rejected) == (1, 1)
        assert files(data) == {"prefs.jsonl"}
    finally:
        data.chmod(0o755)


@pytest.mark.parametrize("loader", ["preferences", "dialogues", "rl_prompts"])
def test_skip_mode_without_a_rejects_path_writes_nothing(tmp_path, monkeypatch, loader):
    monkeypatch.chdir(tmp_path)  # a hub name once sent its rejects file to the working directory
    rows = {
        "preferences": [GOOD, BAD],
        "dialogues": [
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
            {},
        ],
        "rl_prompts": [{"prompt": "q"}, {"prompt": 3}],
    }[loader]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    load = {"preferences": load_preferences, "dialogues": load_dialogues, "rl_prompts": load_rl_prompts}[
        loader
    ]
    report = load(path, on_error="skip").report
    assert report.rows_rejected == 1 and report.rejects_path is None
    assert report.rejects[0]["line"] == 2 and report.rejects[0]["row"] == rows[1]  # kept in memory
    assert files(tmp_path) == {"d.jsonl"}


def test_skip_mode_on_a_hub_dataset_writes_nothing(tmp_path, monkeypatch):
    import datasets

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(datasets, "load_dataset", lambda name, **kw: [GOOD, BAD])
    report = load_preferences("someone/prefs", allow_hub=True, on_error="skip").report
    assert report.rows_rejected == 1 and files(tmp_path) == set()


def test_an_explicit_rejects_path_is_written_and_may_not_be_the_input(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, BAD])
    target = tmp_path / "run" / "rejects.jsonl"
    report = load_preferences(path, on_error="skip", rejects_path=target).report
    assert report.rejects_path == str(target)
    assert [json.loads(line)["kind"] for line in target.read_text().splitlines()] == ["empty_response"]
    with pytest.raises(PaddockError, match="is the input file itself"):
        load_preferences(path, on_error="skip", rejects_path=path)
    assert path.read_text().count("\n") == 2  # the input is untouched


# --- corrupt files -------------------------------------------------------------------------------


def gzipped(rows) -> bytes:
    return gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode())


def parquet_bytes(tmp_path: Path) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist([GOOD] * 50), tmp_path / "whole.parquet")
    data = (tmp_path / "whole.parquet").read_bytes()
    (tmp_path / "whole.parquet").unlink()
    return data


@pytest.mark.parametrize(
    "name, make, what",
    [
        ("d.jsonl.gz", lambda tmp: gzipped([GOOD] * 200)[:-30], "gzip"),  # truncated: EOFError
        ("d.jsonl.gz", lambda tmp: b"".join(json.dumps(GOOD).encode() + b"\n" for _ in range(3)), "gzip"),
        ("d.jsonl.gz", lambda tmp: gzipped([GOOD])[:10] + b"\xff" * 40, "gzip"),  # damaged stream: zlib.error
        ("d.json.gz", lambda tmp: gzipped([GOOD] * 50)[:-30], "gzip"),
        ("d.parquet", lambda tmp: b"PAR1" + bytes(range(64)) + b"PAR1", "Parquet"),  # garbage bytes
        ("d.parquet", lambda tmp: parquet_bytes(tmp)[:-20], "Parquet"),  # truncated footer
        ("d.parquet", lambda tmp: b"", "Parquet"),
    ],
)
@pytest.mark.parametrize("on_error", ["raise", "skip"])
def test_a_corrupt_file_is_one_line_naming_it(tmp_path, name, make, what, on_error):
    (tmp_path / name).write_bytes(make(tmp_path))
    with pytest.raises(DataError) as info:
        load_preferences(tmp_path / name, on_error=on_error)  # a broken file is not a row to skip
    error = info.value
    assert error.kind == "file" and error.file == str(tmp_path / name)
    assert str(error).startswith(f"{tmp_path / name}: corrupt or truncated {what} file (")
    assert "\n" not in str(error)
    assert files(tmp_path) == {name}


def test_a_damaged_parquet_page_is_a_corrupt_file(tmp_path):
    """The footer can be intact while a data page is not: the error comes while reading rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{**GOOD, "chosen": f"answer {i} " + "x" * 200} for i in range(2000)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet", compression="snappy")
    data = bytearray((tmp_path / "d.parquet").read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    for i in range(200, len(data) - footer - 200, 97):  # scribble over the column chunks
        data[i] ^= 0x5A
    (tmp_path / "d.parquet").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"d\.parquet: corrupt or truncated Parquet file") as info:
        load_preferences(tmp_path / "d.parquet")
    assert info.value.kind == "file"
