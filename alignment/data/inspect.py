"""`paddock data inspect` and `paddock data adapters`: what a source holds, before a recipe trains on it.

`inspect` counts records by category, rating, category and rating together, safety label and
source, gives token-length statistics and a few examples; `--json` gives the same as one object.
Any row that fails to load makes the command exit non-zero; rejected rows are written to a file
only when `--rejects PATH` names one. `adapters` lists each adapter's fields and options, read
from the adapter classes themselves.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter

from alignment.data import loading
from alignment.data.adapters import ADAPTERS, get_adapter
from alignment.errors import PaddockError

FIELDS = {
    "preferences": ("prompt", "chosen", "rejected"),
    "dialogues": ("messages",),
    "rl_prompts": ("prompt",),
}
RECORD_OPTIONS = ("category", "source")  # what load_dialogues and load_rl_prompts take


def _lengths(values: list[int]) -> dict:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "mean": round(statistics.fmean(values), 1),
        "median": statistics.median(values),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
    }


def _text(messages) -> str:
    return "\n".join(m["content"] for m in messages) if isinstance(messages, list) else str(messages)


def _value(x):
    return getattr(x, "value", x)


def _rating(record) -> str:
    return _value(getattr(record, "rating", None)) or "unrated"


def safety_label(chosen_safe: bool | None, rejected_safe: bool | None) -> str:
    """A pair's two safety labels in words; pairs without either are 'unlabelled'."""
    if chosen_safe is None and rejected_safe is None:
        return "unlabelled"
    word = {True: "safe", False: "unsafe", None: "unlabelled"}
    return f"chosen {word[chosen_safe]} / rejected {word[rejected_safe]}"


def _load(path, adapter, kind, on_error, split, rejects_path, options):
    """(load result, the adapter's effective options or None)."""
    common = dict(on_error=on_error, split=split, rejects_path=rejects_path)
    if kind == "preferences":
        built = get_adapter(adapter, **options)
        result = loading.load_preferences(path, built, **common)
        return result, {**built.options, "source": built.source}
    unknown = sorted(set(options) - set(RECORD_OPTIONS))
    if unknown:
        raise PaddockError(f"{kind} take no option {unknown[0]!r}; options: {', '.join(RECORD_OPTIONS)}")
    loader = loading.load_dialogues if kind == "dialogues" else loading.load_rl_prompts
    return loader(path, **common, **options), None


def inspect_source(
    path,
    adapter: str = "llama2",
    kind: str = "preferences",
    on_error: str = "raise",
    tokenizer=None,
    examples: int = 3,
    *,
    split: str | None = None,
    rejects_path=None,
    options: dict | None = None,
) -> dict:
    result, adapter_options = _load(path, adapter, kind, on_error, split, rejects_path, options or {})
    records, load = result.records, result.report
    pairs = kind == "preferences"
    by_category_rating: dict = {}
    for r in records:
        by_category_rating.setdefault(_value(r.category), Counter())[_rating(r)] += 1
    report = {
        "path": str(path),
        "kind": kind,
        "split": split,
        "adapter": adapter if pairs else None,
        "adapter_options": adapter_options,
        "rows_read": load.rows_read,
        "rows_rejected": load.rows_rejected,
        "rejected_by_kind": dict(load.rejected),
        "rejects_path": load.rejects_path,
        "reject_examples": [r["error"] for r in load.rejects[:examples]],
        "total": len(records),
        "by_category": dict(Counter(_value(r.category) for r in records)),
        "by_rating": dict(Counter(_rating(r) for r in records)),
        "by_category_rating": {c: dict(n) for c, n in by_category_rating.items()},
        "by_safety_label": dict(Counter(safety_label(r.chosen_safe, r.rejected_safe) for r in records))
        if pairs
        else {},
        "by_source": dict(Counter(r.source or "(none)" for r in records)),
    }
    if tokenizer is not None:
        report["tokens"] = {
            name: _lengths(
                [len(tokenizer.encode(_text(getattr(r, name)), add_special_tokens=False)) for r in records]
            )
            for name in FIELDS[kind]
        }
    labels = ("category", "rating", "chosen_safe", "rejected_safe") if pairs else ("category",)
    report["examples"] = [
        {
            **{name: _value(getattr(r, name)) for name in labels},
            **{name: getattr(r, name) for name in FIELDS[kind]},
        }
        for r in records[:examples]
    ]
    return report


def show_value(value) -> str:
    """An option value as YAML would spell it: null, true, [3.0, 2.0, 1.0]; strings bare."""
    return value if isinstance(value, str) and value else json.dumps(value)


def _counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:12])


def print_report(report: dict) -> None:
    header = report["kind"]
    if report["adapter"]:
        options = ", ".join(f"{k} {show_value(v)}" for k, v in report["adapter_options"].items())
        header += f", adapter {report['adapter']}: {options}"
    split = f"[{report['split']}]" if report["split"] else ""
    print(f"{report['path']}{split} ({header})")
    line = f"  records: {report['total']} from {report['rows_read']} rows, {report['rows_rejected']} rejected"
    if report["rows_rejected"]:
        line += f" ({_counts(report['rejected_by_kind'])})"
        line += (
            f" -> {report['rejects_path']}"
            if report["rejects_path"]
            else ", not written: --rejects PATH writes them"
        )
    print(line)
    for error in report["reject_examples"]:
        print(f"    rejected: {error}")
    print(f"  by category: {_counts(report['by_category'])}")
    print(f"  by rating: {_counts(report['by_rating'])}")
    if report["kind"] == "preferences":
        parts = [f"{c}: {_counts(n)}" for c, n in sorted(report["by_category_rating"].items())]
        print(f"  by category and rating: {'; '.join(parts)}")
        print(f"  by safety label: {_counts(report['by_safety_label'])}")
    print(f"  by source: {_counts(report['by_source'])}")
    for name, stats in report.get("tokens", {}).items():
        print(f"  {name} tokens: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    for i, example in enumerate(report["examples"], 1):
        tags = [example["category"]]
        if report["kind"] == "preferences":
            tags += [
                example["rating"] or "unrated",
                safety_label(example["chosen_safe"], example["rejected_safe"]),
            ]
        print(f"  example {i} ({', '.join(tags)}):")
        for name in FIELDS[report["kind"]]:
            print(f"    {name}: {_text(example[name])[:160]!r}")


def parse_options(items: list[str]) -> dict:
    """`--option key=value` pairs; each value is read as YAML, so `true`, `3` and `[3, 2, 1]` are typed."""
    import yaml

    options = {}
    for item in items:
        key, eq, text = item.partition("=")
        if not eq or not key.strip():
            raise PaddockError(f"--option expects KEY=VALUE, got {item!r}")
        try:
            options[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError:
            raise PaddockError(f"--option {key.strip()}: not a valid YAML value: {text!r}") from None
    return options


def cmd_inspect(args) -> int:
    if args.rejects and args.on_error != "skip":
        raise PaddockError(
            "--rejects needs --on-error skip (in raise mode the first bad row stops the command)"
        )
    options = parse_options(args.option)
    tokenizer = None
    if args.tokenizer != "none":
        from alignment.base_model import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    report = inspect_source(
        args.source,
        args.adapter,
        args.kind,
        args.on_error,
        tokenizer,
        args.examples,
        split=args.split,
        rejects_path=args.rejects,
        options=options,
    )
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print_report(report)
    return 1 if report["rows_rejected"] else 0


def adapters_table() -> dict:
    """Every adapter's summary, the fields it reads and its options with their defaults and help."""
    return {
        name: {
            "summary": (cls.__doc__ or "").strip().splitlines()[0],
            "fields": list(cls.FIELDS),
            "options": {key: {"default": o.default, "help": o.help} for key, o in cls.OPTIONS.items()},
        }
        for name, cls in ADAPTERS.items()
    }


def cmd_adapters(args) -> int:
    table = adapters_table()
    if args.json:
        print(json.dumps(table))
        return 0
    for name, entry in table.items():
        print(f"{name}: {entry['summary']}")
        print(f"  reads: {', '.join(entry['fields'])}")
        for key, option in entry["options"].items():
            print(f"  option {key} (default {show_value(option['default'])}): {option['help']}")
    return 0


def add_commands(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect datasets").add_subparsers(dest="action", required=True)
    inspect = data.add_parser("inspect", help="counts, token lengths and examples of a data source")
    inspect.add_argument("source", help="JSONL, JSON, Parquet file or saved datasets directory")
    inspect.add_argument("--adapter", default="llama2", help=f"preference adapter: {', '.join(ADAPTERS)}")
    inspect.add_argument("--kind", choices=["preferences", "dialogues", "rl_prompts"], default="preferences")
    inspect.add_argument("--split", help="the split of a saved DatasetDict directory (e.g. test_prefs)")
    inspect.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an adapter option, value read as YAML (repeatable; see `paddock data adapters`)",
    )
    inspect.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    inspect.add_argument("--rejects", metavar="PATH", help="with --on-error skip: write rejected rows here")
    inspect.add_argument("--tokenizer", default="smollm2-135m", help="for token lengths; 'none' to skip")
    inspect.add_argument("--examples", type=int, default=3)
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(func=cmd_inspect)
    adapters = data.add_parser("adapters", help="each preference adapter's fields and options")
    adapters.add_argument("--json", action="store_true", help="print one JSON object")
    adapters.set_defaults(func=cmd_adapters)
