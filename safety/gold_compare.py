"""`paddock gold`: several chat models on the same held-out gym prompts, scored by the gold graders,
with a paired test of each model against the first.

Why a command of its own: a stage's `gold` suite runs on a few dozen prompts to keep runs short,
too few to tell a change of a few points from noise. This answers every prompt of the held-out
files (by default) greedily with each model, and for each rate counts the prompts where only one of
two models is graded well, so the exact McNemar test says whether the gap is more than chance.
"""

from __future__ import annotations

import json
from pathlib import Path

from alignment.errors import PaddockError
from reward_models.compare import mcnemar_exact
from safety.evaluation import RATE_NAMES, GoldSuiteConfig, evaluate_gold, grade, suite_rows

GOOD_WHEN_HIGH = {"helpful": True, "safety": False, "borderline": False}


def paired_gold(rows: dict, texts_a: dict, texts_b: dict) -> dict:
    """Per rate: prompts where only A / only B is graded well, and the McNemar p-value."""
    out = {}
    for kind, records in rows.items():
        if not records:
            continue
        good = GOOD_WHEN_HIGH[kind]
        only_a = only_b = 0
        for record, a, b in zip(records, texts_a[kind], texts_b[kind], strict=True):
            a_good = (grade(kind, record, a) == 1.0) == good
            b_good = (grade(kind, record, b) == 1.0) == good
            only_a += a_good and not b_good
            only_b += b_good and not a_good
        out[RATE_NAMES[kind]] = {
            "only_first": only_a,
            "only_this": only_b,
            "p": mcnemar_exact(only_a, only_b),
        }
    return out


def cmd_gold(args) -> None:
    import torch

    from alignment.base_model import load_tokenizer
    from alignment.model_setup import load_frozen, resolve_init
    from alignment.recipes.schema import ModelConfig
    from alignment.stages.common import data_path

    if len(set(args.models)) < len(args.models):
        raise PaddockError("a model is named twice; give each checkpoint once")
    for name in args.models:  # all before the first model is loaded: a typo fails at once
        if not Path(name).expanduser().exists():
            raise PaddockError(f"{name}: no such checkpoint directory")
    cfg = GoldSuiteConfig(
        n_helpful=args.n_helpful,
        n_safety=args.n_safety,
        n_borderline=args.n_borderline,
        max_new_tokens=args.max_new_tokens,
    )
    rows = suite_rows(cfg, data_path)
    results, texts = {}, {}
    for name in args.models:
        tokenizer = load_tokenizer(resolve_init(name)[0])
        model = load_frozen(ModelConfig(), name, dtype=torch.float32)
        rates, texts[name] = evaluate_gold(
            model, tokenizer, rows, cfg.max_new_tokens, autocast=args.autocast, progress=True
        )
        results[name] = {"rates": rates}
        del model
    first = args.models[0]
    for name in args.models[1:]:
        results[name]["vs_first"] = paired_gold(rows, texts[first], texts[name])
    print(format_table(results, first))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"results": results, "texts": texts}, indent=1) + "\n")
        print(f"wrote {args.out}")


def format_table(results: dict, first: str) -> str:
    names = list(RATE_NAMES.values())
    lines = ["| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for model, result in results.items():
        cells = []
        for rate in names:
            value = result["rates"].get(rate)
            cell = "–" if value is None else f"{value:.3f} (n={result['rates'][f'n_{_kind(rate)}']})"
            paired = result.get("vs_first", {}).get(rate)
            if paired:
                cell += f", p={paired['p']:.3g} vs {Path(first).parent.name or first}"
            cells.append(cell)
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _kind(rate: str) -> str:
    return next(kind for kind, name in RATE_NAMES.items() if name == rate)


def add_commands(subparsers) -> None:
    gold = subparsers.add_parser(
        "gold", help="gold-grader rates of chat models on held-out gym prompts, paired against the first"
    )
    gold.add_argument(
        "models", nargs="+", help="checkpoints or LoRA adapter directories; the first is the baseline"
    )
    gold.add_argument("--n-helpful", type=int, default=300, help="helpfulness prompts (default: all 300)")
    gold.add_argument("--n-safety", type=int, default=150, help="harmful prompts (default: all 150)")
    gold.add_argument("--n-borderline", type=int, default=60, help="borderline prompts (default: all 60)")
    gold.add_argument("--max-new-tokens", type=int, default=64)
    gold.add_argument("--autocast", action="store_true", help="answer under bf16 autocast")
    gold.add_argument("--out", help="write rates, paired tests and every answer as JSON here")
    gold.set_defaults(func=cmd_gold)
