"""A stage's data as the recipe describes it: sources read by their adapters, mixed, capped and
split into train and test with no prompt on both sides.

The pipeline's pre-flight (alignment/plan.py) reads the same data the same way, writing nothing,
so a bad row or an empty mixture fails before any stage runs; a stage sets its skipped rows aside
in its own directory (`rejects-<source>.jsonl`), never beside the user's data.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from alignment.data import loading
from alignment.data.mixtures import PAPER_MIXTURES, build_mixture, preset_sources, split_by_prompt
from alignment.data.records import category_of
from alignment.data.sources import data_path
from alignment.errors import PaddockError


def source_path(source, run_dir: Path | None) -> Path:
    """Where a recipe source's file is: in an earlier stage's directory when it names one."""
    if source.stage and run_dir is None:
        raise PaddockError(f"source {source.path!r} of stage {source.stage!r} needs the run directory")
    return run_dir / source.stage / source.path if source.stage else data_path(source.path)


def read_source(source, kind: str, rejects: Path | None = None, run_dir: Path | None = None):
    """A recipe data source read as preferences, dialogues or RL prompts; skipped rows go to
    `rejects` when given (else they are only counted). `run_dir` is needed for a source read from
    a stage's output."""
    path = source_path(source, run_dir)
    if kind == "preferences":
        options = dict(source.options)
        if source.category:
            options.setdefault("category", source.category)
        return loading.load_preferences(
            path,
            source.adapter,
            on_error=source.on_error,
            rejects_path=rejects,
            split=source.split,
            **options,
        )
    loader = loading.load_dialogues if kind == "dialogues" else loading.load_rl_prompts
    return loader(
        path,
        on_error=source.on_error,
        rejects_path=rejects,
        split=source.split,
        category=source.category or "helpfulness",
    )


def load_source(source, kind: str, run_dir: Path | None, rejects_dir: Path | None = None):
    """(name, LoadResult) of one source, its `categories` filter applied."""
    rejects = rejects_dir / f"rejects-{source.name}.jsonl" if rejects_dir is not None else None
    result = read_source(source, kind, rejects, run_dir)
    if source.categories is not None:
        result.records = [r for r in result.records if category_of(r) in source.categories]
    if source.where:
        wanted = source.where.items()
        result.records = [r for r in result.records if all(r.meta.get(k) == v for k, v in wanted)]
    return source.name, result


def split_key(kind: str, key: str | None, stage_name: str):
    """What groups rows for the train/test split: a recipe-named `meta` field, else a dialogue's
    first user turn (not its first message: many dialogues share one system prompt) or a pair's or
    RL prompt's whole prompt."""
    if key is not None:

        def by_meta(row):
            if key not in row.meta:
                raise PaddockError(f"stage {stage_name}: data.split_key {key!r} is missing from a row's meta")
            return str(row.meta[key])

        return by_meta
    if kind == "dialogues":
        return lambda row: next((m["content"] for m in row.messages if m["role"] == "user"), "")
    return lambda row: row.prompt


def stage_records(stage, seed: int, run_dir: Path | None, kind: str, rejects_dir: Path | None = None):
    """(train, test, report) for `stage`'s data: sources loaded, mixed, capped and split by prompt."""
    data = stage.data
    loaded = dict(load_source(source, kind, run_dir, rejects_dir) for source in data.sources)
    report = {name: summary(loaded[name], source) for name, source in zip(loaded, data.sources, strict=True)}
    by_name = {name: result.records for name, result in loaded.items()}
    if data.mixture is None:
        rows = [row for name in by_name for row in by_name[name]]
    else:
        spec = PAPER_MIXTURES[data.mixture] if isinstance(data.mixture, str) else data.mixture
        if isinstance(data.mixture, str):  # presets name categories; sources are grouped by category
            everything = [r for rows in by_name.values() for r in rows]
            by_name = preset_sources(everything, spec, category_of)
            spec = {key: value for key, value in spec.items() if by_name[key] or "anchor" in value}
        rows, mix = build_mixture(by_name, spec, seed=seed)
        report["mixture"] = {**mix.to_dict(), "by_category": dict(Counter(category_of(r) for r in rows))}
    if data.test_sources:
        test = [
            row
            for source in data.test_sources
            for row in load_source(source, kind, run_dir, rejects_dir)[1].records
        ]
        train = rows
    else:
        prompt_of = split_key(kind, data.split_key, stage.name)
        train, test = split_by_prompt(rows, data.test_fraction, seed=seed, prompt_of=prompt_of)
    if data.max_rows:
        train = train[: data.max_rows]
    report["train_rows"], report["test_rows"] = len(train), len(test)
    if not train:
        raise PaddockError(f"stage {stage.name}: no training rows after loading and mixing")
    return train, test, report


def summary(result, source) -> str:
    text = result.report.summary()
    if source.categories is not None:
        text += f"; kept {len(result.records)} of categories {', '.join(source.categories)}"
    if source.where:
        text += f"; kept {len(result.records)} with meta {source.where}"
    return text
