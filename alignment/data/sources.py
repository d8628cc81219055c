"""Where data rows come from: local JSONL, JSON, Parquet, saved `datasets` dirs, or the hub.

Every row is yielded with its place in the file (1-based line for JSONL, 0-based row index for
the other formats, so `row 3` is `ds[3]`), because a researcher fixing a bad row needs to find it.
A line that is not valid JSON is yielded as an error row rather than raised, so `skip` mode can
set it aside and carry on. Problems with the file as a whole (missing, unreadable, wrong layout)
always raise: there is nothing sensible to skip.
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignment.errors import PaddockError

REPO_ROOT = Path(__file__).resolve().parents[2]

ERROR_KINDS = (
    "malformed_json",  # a line or file that does not parse
    "not_an_object",  # a row that parsed but is not a JSON object / dict
    "missing_field",
    "wrong_type",
    "empty_response",
    "identical_responses",
    "unknown_rating",
    "unknown_field",  # a column that looks like a misspelt field name
    "ignored_field",  # a meaningful column (rating, category, ...) the adapter does not read
    "invalid_value",  # right type, wrong value (a role, a category, an id, a score order, ...)
    "file",  # the whole source is unusable
)


class DataError(PaddockError):
    """A bad row or source; the message names file, line (or row) and field so the user can fix it.

    Adapters raise it with only `field`, `kind` and `reason`; the loader adds where the row came
    from with `at()`, which gives "data.jsonl line 7, field 'chosen': empty response".
    """

    def __init__(
        self,
        reason: str,
        *,
        field: str | None = None,
        kind: str = "invalid_value",
        file: str | None = None,
        unit: str = "line",
        number: int | None = None,
    ):
        assert kind in ERROR_KINDS, kind
        super().__init__(reason)
        self.reason, self.field, self.kind = reason, field, kind
        self.file, self.unit, self.number = file, unit, number

    def at(self, file: str, unit: str, number: int | None) -> DataError:
        return DataError(self.reason, field=self.field, kind=self.kind, file=file, unit=unit, number=number)

    def __str__(self) -> str:
        where = self.file or ""
        if self.number is not None:
            where = f"{where} {self.unit} {self.number}".strip()
        if self.field is not None:
            where = f"{where}, field {self.field!r}" if where else f"field {self.field!r}"
        return f"{where}: {self.reason}" if where else self.reason


@dataclass(frozen=True)
class Row:
    """One source row and where it was found; `error` is set (and `data` is None) if it did not parse."""

    file: str
    unit: str  # "line" (JSONL, 1-based) or "row" (JSON/Parquet/datasets, 0-based like ds[i])
    number: int
    data: Any = None
    error: DataError | None = None
    raw: str | None = None  # the undecodable line, kept for the rejects file


SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".parquet": "parquet"}


def iter_rows(
    path: str | Path, *, split: str | None = None, allow_hub: bool = False, hub_kwargs: dict | None = None
) -> Iterator[Row]:
    """Yields the rows of a local file or saved `datasets` directory, or of a hub dataset.

    The hub is tried only when `path` does not exist and `allow_hub` is set: a typo in a local
    path should say "no such file", not start a download (or hang on a machine without network).
    """
    p = Path(path)
    name = str(path)
    if not p.exists():
        if not allow_hub:
            raise DataError(
                "no such file (pass allow_hub=True to load a hub dataset by this name)",
                kind="file",
                file=name,
            )
        yield from _hub(name, split, hub_kwargs or {})
        return
    check_source(p)
    if p.is_dir():
        yield from _datasets_dir(p, name, split)
    else:
        kind = SUFFIXES[_data_suffix(p)]
        yield from {"jsonl": _jsonl, "json": _json, "parquet": _parquet}[kind](p, name)


def check_source(path: str | Path) -> None:
    """The whole-source checks of `iter_rows` without reading a row, so a run can refuse a missing
    or unsupported source before it writes anything. A path that does not exist is an error here
    (hub names are for `iter_rows(allow_hub=True)`)."""
    p, name = Path(path), str(path)
    if p.is_dir():
        if not (p / "dataset_dict.json").exists() and not (p / "state.json").exists():
            raise DataError(
                "a directory, but not a saved datasets directory (no dataset_dict.json or state.json)",
                kind="file",
                file=name,
            )
    elif p.exists():
        if _data_suffix(p) not in SUFFIXES:
            known = ", ".join(sorted(SUFFIXES)) + " (optionally .gz), or a saved datasets directory"
            raise DataError(f"unsupported file type; use {known}", kind="file", file=name)
    else:
        raise DataError("no such file", kind="file", file=name)


def _data_suffix(p: Path) -> str:
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _open(p: Path):
    return gzip.open(p, "rb") if p.suffix.lower() == ".gz" else p.open("rb")


# what gzip raises for a file that is not gzip (BadGzipFile), cut short (EOFError) or damaged (zlib)
_GZIP_ERRORS = (EOFError, gzip.BadGzipFile, zlib.error)


def _corrupt(what: str, error: Exception, name: str) -> DataError:
    detail = " ".join(str(error).split()) or type(error).__name__  # library messages may span lines
    return DataError(f"corrupt or truncated {what} file ({detail})", kind="file", file=name)


def _jsonl(p: Path, name: str) -> Iterator[Row]:
    try:
        with _open(p) as f:
            for number, raw in enumerate(f, start=1):
                if raw.strip():  # a blank line (often the last) is not a row
                    yield _parse_line(raw, name, number)
    except _GZIP_ERRORS as e:
        raise _corrupt("gzip", e, name) from None


def _parse_line(raw: bytes, name: str, number: int) -> Row:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        error = DataError(f"not valid UTF-8 ({e.reason} at byte {e.start})", kind="malformed_json")
        return Row(
            name, "line", number, error=error.at(name, "line", number), raw=raw.decode("utf-8", "replace")
        )
    try:
        return Row(name, "line", number, data=json.loads(text))
    except json.JSONDecodeError as e:
        error = DataError(f"malformed JSON ({e.msg} at column {e.colno})", kind="malformed_json")
        return Row(name, "line", number, error=error.at(name, "line", number), raw=text.rstrip("\n"))


def _json(p: Path, name: str) -> Iterator[Row]:
    """A JSON list of rows, or {"data": [...]}; a .json file that is really JSON Lines also works."""
    try:
        with _open(p) as f:
            raw = f.read()
    except _GZIP_ERRORS as e:
        raise _corrupt("gzip", e, name) from None
    try:
        doc = json.loads(raw)
    except UnicodeDecodeError as e:
        raise DataError(f"not valid UTF-8 ({e.reason})", kind="file", file=name) from None
    except json.JSONDecodeError as e:
        if e.msg == "Extra data":  # several top-level values: JSON Lines under a .json name
            yield from _jsonl(p, name)
            return
        raise DataError(
            f"malformed JSON ({e.msg} at line {e.lineno} column {e.colno})", kind="file", file=name
        ) from None
    if isinstance(doc, dict) and isinstance(doc.get("data"), list):
        doc = doc["data"]
    if not isinstance(doc, list):
        raise DataError('expected a JSON list of rows or {"data": [...]}', kind="file", file=name)
    for i, data in enumerate(doc):
        yield Row(name, "row", i, data=data)


def _parquet(p: Path, name: str) -> Iterator[Row]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # pyarrow raises ArrowInvalid, OSError and others for a corrupt, truncated or non-Parquet file,
    # when opening it or only once a damaged page is read
    errors = (pa.ArrowException, OSError, ValueError)
    try:
        table = pq.ParquetFile(p)
    except errors as e:
        raise _corrupt("Parquet", e, name) from None
    i = 0
    batches = table.iter_batches(batch_size=1024)
    while True:
        try:
            batch = next(batches, None)
        except errors as e:
            raise _corrupt("Parquet", e, name) from None
        if batch is None:
            return
        for data in batch.to_pylist():
            yield Row(name, "row", i, data=data)
            i += 1


def _datasets_dir(p: Path, name: str, split: str | None) -> Iterator[Row]:
    """A `Dataset.save_to_disk` directory, or a `DatasetDict` one (then `split` picks the split)."""
    is_dict = (p / "dataset_dict.json").exists()  # iter_rows checked it is one or the other
    import datasets

    try:
        ds = datasets.load_from_disk(str(p))
    except Exception as e:  # corrupt arrow files, version mismatches, ...
        raise DataError(f"could not load the saved dataset ({e})", kind="file", file=name) from None
    if is_dict:
        splits = list(ds)
        if split is None and len(splits) != 1:
            raise DataError(
                f"holds splits {', '.join(splits)}; choose one (a recipe source's `split`, "
                "or --split for paddock data inspect)",
                kind="file",
                file=name,
            )
        split = split or splits[0]
        if split not in ds:
            raise DataError(f"no split {split!r}; splits: {', '.join(splits)}", kind="file", file=name)
        ds = ds[split]
        name = f"{name}[{split}]"
    elif split is not None and ds.split is not None and str(ds.split) != split:
        raise DataError(f"holds split {str(ds.split)!r}, not {split!r}", kind="file", file=name)
    for i, data in enumerate(ds):
        yield Row(name, "row", i, data=data)


def _hub(name: str, split: str | None, hub_kwargs: dict) -> Iterator[Row]:
    import datasets

    split = split or "train"
    try:
        ds = datasets.load_dataset(name, split=split, **hub_kwargs)
    except Exception as e:  # offline, unknown name, gated, bad config: all end the same way for the user
        raise DataError(
            f"no such file, and loading it from the hub failed ({e})", kind="file", file=name
        ) from None
    label = f"{name}[{split}]"
    for i, data in enumerate(ds):
        yield Row(label, "row", i, data=data)


def data_path(path: str) -> Path:
    """Relative paths are tried from the working directory, then from the repository root."""
    candidate = Path(path).expanduser()
    if candidate.exists() or candidate.is_absolute():
        return candidate
    return REPO_ROOT / path if (REPO_ROOT / path).exists() else candidate
