"""Stage fingerprints: a record of what made a stage, so a run never reuses a stage made otherwise.

A stage's fingerprint holds its resolved settings (every field, defaults filled in), the run's seed
and model settings, the engine it samples with, the Paddock version, a content hash of every file
its settings name (data sources, gold suites, instruction files, model checkpoints) and the digest
of every earlier stage it builds on (its `init_from`, its reward models, a source read from a
stage's output, the models an evaluation compares). The pipeline writes it into the stage
directory (fingerprint.json, with the readable config.yaml) when the stage starts, and compares it
before anything runs: a finished or half-finished stage made under another fingerprint is neither
skipped nor resumed (docs/design.md, "Stage fingerprints").

Settings that change how a run is watched but not what it makes are left out (NOT_FINGERPRINTED).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from alignment import __version__
from alignment.data.sources import data_path

FINGERPRINT = "fingerprint.json"

# Field name -> why it does not change what a stage makes.
NOT_FINGERPRINTED = {
    "name": "the stage's identity (its directory), not a setting",
    "engine": "the resolved engine is recorded instead of the request",
    "device": "placement; the math is the same up to float rounding",
    "log_every": "how often metrics are logged",
    "checkpoint_every": "how often resume checkpoints are written; a resumed run equals an uninterrupted one",
}
# Whole-file hashes up to this size; above it (model weights) the size and the first and last MiB,
# so checking a 14 GB checkpoint costs milliseconds and a swapped checkpoint is still noticed.
FULL_HASH_BYTES = 1 << 30
SAMPLE_BYTES = 1 << 20
PATH_SUFFIXES = (".jsonl", ".json", ".parquet", ".gz", ".csv", ".arrow", ".safetensors", ".yaml", ".txt")


def settings_of(obj):
    """A config as plain data, NOT_FINGERPRINTED fields left out."""
    if dataclasses.is_dataclass(obj):
        return {
            f.name: settings_of(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if f.name not in NOT_FINGERPRINTED
        }
    if isinstance(obj, list | tuple):
        return [settings_of(item) for item in obj]
    if isinstance(obj, dict):
        return {str(key): settings_of(value) for key, value in obj.items()}
    return obj


_hash_cache: dict[tuple, str] = {}


def file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _hash_cache:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            if stat.st_size <= FULL_HASH_BYTES:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            else:
                digest.update(f"size {stat.st_size}".encode())
                digest.update(handle.read(SAMPLE_BYTES))
                handle.seek(-SAMPLE_BYTES, os.SEEK_END)
                digest.update(handle.read(SAMPLE_BYTES))
        _hash_cache[key] = digest.hexdigest()[:16]
    return _hash_cache[key]


def content_digest(path: Path) -> str:
    """A file's digest, or a directory's over its files' names and digests (a saved dataset, a
    checkpoint); hidden files (atomic-write leftovers, markers) are left out."""
    if path.is_file():
        return file_digest(path)
    digest = hashlib.sha256()
    for child in sorted(path.rglob("*")):
        rel = child.relative_to(path)
        if child.is_file() and not any(part.startswith(".") for part in rel.parts):
            digest.update(f"{rel.as_posix()} {file_digest(child)}\n".encode())
    return digest.hexdigest()[:16]


def looks_like_file(value: str) -> bool:
    return "/" in value or "\\" in value or value.endswith(PATH_SUFFIXES)


def strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in strings_in(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings_in(item)]
    return []


def upstream_stages(recipe, index: int) -> list[str]:
    """Earlier stages whose outputs stage `index` reads: any setting naming one, its default
    `init_from`, and what the stage config adds (`upstream_stages(earlier)`, e.g. an evaluation's
    default models)."""
    from alignment.pipeline import stage_init_stage

    stage = recipe.stages[index]
    earlier = recipe.stages[:index]
    names = {s.name for s in earlier}
    found = [s for s in strings_in(settings_of(stage)) if s in names]
    init = stage_init_stage(recipe, index)
    if init is not None:
        found.append(init)
    extra = getattr(stage, "upstream_stages", None)
    if extra is not None:
        found += extra(earlier)
    return [s.name for s in earlier if s.name in found]  # recipe order, each once


def stage_files(stage, upstream: list[str]) -> dict[str, str]:
    """Path-like settings that exist on disk -> content digest. A source read from a stage's
    output is covered by that stage's digest instead."""
    files = {}
    sources = [] if stage.data is None else stage.data.sources + stage.data.test_sources
    skip = {s.path for s in sources if s.stage}
    candidates = [s.path for s in sources if not s.stage]
    candidates += [v for v in strings_in(settings_of(stage)) if looks_like_file(v)]
    for value in candidates:
        if value in skip or value in upstream or value in files:
            continue
        path = data_path(value)
        if path.exists():
            files[value] = content_digest(path)
    return files


def model_identity(name_or_path: str) -> str:
    """A named default model is pinned by its package; a checkpoint directory by its content."""
    path = data_path(name_or_path)
    return content_digest(path) if path.exists() else "named"


def digest_of(record: dict) -> str:
    text = json.dumps(record, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recipe_fingerprints(recipe, engines: dict[str, str]) -> dict[str, dict]:
    """Each stage's fingerprint, in recipe order (each needs its upstream stages' digests).
    `engines`: stage name -> the engine it samples with."""
    prints: dict[str, dict] = {}
    model = settings_of(recipe.model)
    model_id = model_identity(recipe.model.name_or_path)
    for index, stage in enumerate(recipe.stages):
        upstream = upstream_stages(recipe, index)
        record = {
            "paddock": __version__,
            "seed": recipe.seed,
            "model": {**model, "content": model_id},
            "engine": engines[stage.name],
            "config": settings_of(stage),
            "files": stage_files(stage, upstream),
            "upstream": {name: prints[name]["digest"] for name in upstream},
        }
        prints[stage.name] = {**record, "digest": digest_of(record)}
    return prints


def flatten(value, prefix: str = "") -> dict[str, object]:
    """Nested settings as dotted keys: `data.sources.0.path`."""
    if isinstance(value, dict | list) and value:
        out = {}
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, item in items:
            out.update(flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def differences(old: dict, new: dict) -> list[str]:
    """What changed between two fingerprints, as a reader names it: `margin: 'small' -> 'large'`,
    `file data/x.jsonl changed`, `upstream stage sft changed`."""
    before, after = (
        flatten({k: v for k, v in old.items() if k != "digest"}),
        flatten({k: v for k, v in new.items() if k != "digest"}),
    )
    changes = []
    for key in sorted(before.keys() | after.keys()):
        if before.get(key, "<absent>") == after.get(key, "<absent>"):
            continue
        group, _, rest = key.partition(".")
        if group == "files":
            how = "changed" if key in before and key in after else "added or removed"
            changes.append(f"file {rest} {how}")
        elif group == "upstream":
            changes.append(f"upstream stage {rest} changed")
        else:
            name = rest if group == "config" else key
            was, now = before.get(key, "<absent>"), after.get(key, "<absent>")
            changes.append(f"{name}: {short(was)} -> {short(now)}")
    return changes


def short(value) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_fingerprint(stage_dir: Path) -> dict | None:
    path = stage_dir / FINGERPRINT
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"digest": "unreadable"}
