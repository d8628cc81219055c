"""`paddock data inspect`: what a source holds, before a recipe trains on it.

Counts by category, rating and source, token-length statistics, and a few examples; `--json`
gives the same as one object. Any row that fails to load makes the command exit non-zero.
"""

from __future__ import annotations

import json
import statistics
from collections import Counter

from alignment.data import loading


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


def inspect_source(
    path,
    adapter: str = "llama2",
    kind: str = "preferences",
    on_error: str = "raise",
    tokenizer=None,
    examples: int = 3,
    **options,
) -> dict:
    if kind == "preferences":
        result = loading.load_preferences(path, adapter, on_error=on_error, **options)
    elif kind == "dialogues":
        result = loading.load_dialogues(path, on_error=on_error)
    else:
        result = loading.load_rl_prompts(path, on_error=on_error)
    records = result.records
    value = lambda x: getattr(x, "value", x)  # noqa: E731
    report = {
        "path": str(path),
        "kind": kind,
        "adapter": adapter if kind == "preferences" else None,
        "rows_read": result.report.rows_read,
        "rows_rejected": result.report.rows_rejected,
        "rejected_by_kind": dict(result.report.rejected),
        "rejects_path": result.report.rejects_path,
        "total": len(records),
        "by_category": dict(Counter(value(r.category) for r in records)),
        "by_rating": dict(Counter(value(getattr(r, "rating", None)) or "unrated" for r in records)),
        "by_source": dict(Counter(r.source or "(none)" for r in records)),
    }
    fields = {
        "preferences": ("prompt", "chosen", "rejected"),
        "dialogues": ("messages",),
        "rl_prompts": ("prompt",),
    }
    if tokenizer is not None:
        report["tokens"] = {
            name: _lengths(
                [len(tokenizer.encode(_text(getattr(r, name)), add_special_tokens=False)) for r in records]
            )
            for name in fields[kind]
        }
    report["examples"] = [{name: getattr(r, name) for name in fields[kind]} for r in records[:examples]]
    return report


def print_report(report: dict) -> None:
    print(
        f"{report['path']} ({report['kind']}{', adapter ' + report['adapter'] if report['adapter'] else ''})"
    )
    print(
        f"  records: {report['total']} from {report['rows_read']} rows, {report['rows_rejected']} rejected"
        + (f" -> {report['rejects_path']}" if report["rows_rejected"] else "")
    )
    for key in ("by_category", "by_rating", "by_source"):
        counts = ", ".join(f"{k} {v}" for k, v in sorted(report[key].items(), key=lambda kv: -kv[1])[:12])
        print(f"  {key.replace('_', ' ')}: {counts}")
    for name, stats in report.get("tokens", {}).items():
        print(f"  {name} tokens: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    for i, example in enumerate(report["examples"], 1):
        print(f"  example {i}:")
        for name, content in example.items():
            print(f"    {name}: {_text(content)[:160]!r}")


def cmd_inspect(args) -> int:
    tokenizer = None
    if args.tokenizer != "none":
        from alignment.base_model import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    report = inspect_source(args.source, args.adapter, args.kind, args.on_error, tokenizer, args.examples)
    if args.json:
        print(json.dumps(report, default=str))
    else:
        print_report(report)
    return 1 if report["rows_rejected"] else 0


def add_commands(subparsers) -> None:
    data = subparsers.add_parser("data", help="inspect datasets").add_subparsers(dest="action", required=True)
    inspect = data.add_parser("inspect", help="counts, token lengths and examples of a data source")
    inspect.add_argument("source", help="JSONL, JSON, Parquet file or saved datasets directory")
    inspect.add_argument("--adapter", default="llama2", help="preference adapter (llama2, trl, hh-rlhf, ...)")
    inspect.add_argument("--kind", choices=["preferences", "dialogues", "rl_prompts"], default="preferences")
    inspect.add_argument("--on-error", choices=["raise", "skip"], default="raise")
    inspect.add_argument("--tokenizer", default="smollm2-135m", help="for token lengths; 'none' to skip")
    inspect.add_argument("--examples", type=int, default=3)
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.set_defaults(func=cmd_inspect)
