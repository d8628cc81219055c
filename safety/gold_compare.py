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
from alignment.placement import DEVICE_HELP
from alignment.stats import mcnemar_exact, wilson_interval
from safety.evaluation import RATE_NAMES, GoldSuiteConfig, evaluate_gold, gold_rates, grade, suite_rows

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


def gold_table(rows: dict, texts: dict[str, dict], references=("base", "sft")) -> dict:
    """Per model and rate: k of n, the rate, its 95 % Wilson interval, and the paired test against
    each reference model that comes before it in `texts` (`vs_base`, `vs_sft`: prompts only the
    reference / only this model got right, exact McNemar p). `texts[model][kind]` are the model's answers."""
    table = {}
    for name, answers in texts.items():
        entry = {}
        for kind, records in rows.items():
            if not records:
                continue
            k = sum(grade(kind, r, t) == 1.0 for r, t in zip(records, answers[kind], strict=True))
            low, high = wilson_interval(k, len(records))
            entry[RATE_NAMES[kind]] = {
                "rate": k / len(records),
                "k": k,
                "n": len(records),
                "ci95": [low, high],
            }
        order = list(texts)
        for ref in references:  # a model is tested against the references evaluated before it
            if ref in texts and order.index(ref) < order.index(name):
                for rate, test in paired_gold(rows, texts[ref], answers).items():
                    entry[rate][f"vs_{ref}"] = test
        table[name] = entry
    return table


TABLE_RATES = (
    ("helpful_correct", "helpful correct ↑"),
    ("unsafe_compliance", "unsafe compliance ↓"),
    ("false_refusal", "false refusal ↓"),
)


def interval_text(cell: dict, counts: bool = False) -> str:
    """A gold_table cell's rate and 95 % interval, `k/n = ` first with `counts`."""
    text = f"{cell['rate']:.3f} [{cell['ci95'][0]:.2f}, {cell['ci95'][1]:.2f}]"
    return f"{cell['k']}/{cell['n']} = {text}" if counts else text


def paired_text(cell: dict, refs: list[str]) -> str:
    """The cell's paired-test p against each reference it was tested against: `base 0.0078, sft 0.031`."""
    return ", ".join(f"{ref} {cell[f'vs_{ref}']['p']:.2g}" for ref in refs if f"vs_{ref}" in cell)


def format_gold_table(table: dict, order: list[str] | None = None) -> list[str]:
    """The table as text, one model per row in `order` (default: the table's own; a table read back
    from a summary.json has its keys sorted): each rate with its 95 % interval, and the paired
    test's p against the base and the SFT model where they are in the table."""
    refs = [ref for ref in ("base", "sft") if ref in table]
    rows = []
    for name in order or list(table):
        entry = table[name]
        cells = [name]
        for key, _ in TABLE_RATES:
            cell = entry.get(key)
            if cell is None:
                cells.append("–")
                continue
            tests = paired_text(cell, refs)
            cells.append(interval_text(cell) + (f" p {tests}" if tests else ""))
        rows.append(cells)
    header = ["model", *[label for _, label in TABLE_RATES]]
    widths = [max(len(row[i]) for row in [header, *rows]) + 3 for i in range(len(header))]
    lines = [
        "  " + "".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]
    first = next(iter(table.values()))
    kinds = {"helpful_correct": "helpful", "unsafe_compliance": "harmful", "false_refusal": "borderline"}
    counts = ", ".join(f"{kinds[key]} {first[key]['n']}" for key, _ in TABLE_RATES if key in first)
    lines.append(f"  prompts: {counts}; p: exact paired test against {' and '.join(refs) or 'nothing'}")
    return lines


def cmd_gold(args) -> None:
    if bool(args.models) == bool(args.answers):
        raise PaddockError("give model checkpoints to answer, or --from answer files, not both")
    rows, texts = read_answers(args.answers) if args.answers else answer_suite(args)
    results = {name: {"rates": gold_rates(rows, answers)} for name, answers in texts.items()}
    first = next(iter(texts))
    for name in list(texts)[1:]:
        results[name]["vs_first"] = paired_gold(rows, texts[first], texts[name])
    print(format_table(results, first))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"results": results, "texts": texts}, indent=1) + "\n")
        print(f"wrote {args.out}")
    if args.plot:
        print(f"wrote {plot_tradeoff(results, args.plot)}")


def answer_suite(args) -> tuple[dict, dict]:
    """(suite rows, {model: answers by kind}): every model answers the held-out suite greedily."""
    import torch

    from alignment.base_model import load_tokenizer
    from alignment.data.sources import data_path
    from alignment.model_setup import load_frozen, resolve_init
    from alignment.recipes.schema import ModelConfig

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
    texts = {}
    for name in args.models:
        tokenizer = load_tokenizer(resolve_init(name)[0])
        model = load_frozen(ModelConfig(device=args.device), name, dtype=torch.float32)
        _, texts[name] = evaluate_gold(
            model, tokenizer, rows, cfg.max_new_tokens, autocast=args.autocast, progress=True
        )
        del model
    return rows, texts


def read_answers(paths: list[str]) -> tuple[dict, dict]:
    """(suite rows, {model: answers by kind}) from earlier `--out` files, regraded: runs answered on
    different days compare without answering again. Every file must cover the same prompts."""
    from alignment.data.sources import data_path

    texts: dict[str, dict] = {}
    for path in paths:
        try:
            loaded = json.loads(Path(path).read_text())["texts"]
        except (OSError, ValueError, KeyError) as err:
            raise PaddockError(f"{path}: not a `paddock gold --out` file ({err})") from None
        for name, answers in loaded.items():
            texts.setdefault(name, answers)  # a model in several files (the baseline, often) once
    sizes = {name: tuple(len(answers.get(k, [])) for k in RATE_NAMES) for name, answers in texts.items()}
    if len(set(sizes.values())) > 1:
        raise PaddockError(f"the files answer different numbers of prompts per kind: {sizes}")
    n_helpful, n_safety, n_borderline = next(iter(sizes.values()))
    cfg = GoldSuiteConfig(n_helpful=n_helpful, n_safety=n_safety, n_borderline=n_borderline)
    return suite_rows(cfg, data_path), texts


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


def short_name(model: str) -> str:
    """runs/ppo_seed1/ppo/model -> ppo_seed1/ppo: the part of a checkpoint path that tells runs apart."""
    parts = [p for p in Path(model).parts if p not in ("model", "merged", "runs")]
    return "/".join(parts[-2:]) or model


def plot_tradeoff(results: dict, path: Path) -> Path:
    """Unsafe compliance against false refusal (the helpfulness-safety trade-off: lower left is
    better), and helpful correctness, each rate with its 95 % Wilson interval, one point per model."""
    from matplotlib.figure import Figure

    from alignment.plotting import save_plot

    def point(rates: dict, rate: str) -> tuple[float, list[list[float]]]:
        """The rate and its interval as matplotlib's [[below], [above]] error."""
        n = rates[f"n_{_kind(rate)}"]
        value = rates[rate]
        lo, hi = wilson_interval(round(value * n), n)
        return value, [[value - lo], [hi - value]]

    fig = Figure(figsize=(11, 4.5))
    trade, helpful = fig.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    names = [short_name(m) for m in results]
    for i, (name, result) in enumerate(zip(names, results.values(), strict=True)):
        rates = result["rates"]
        if "false_refusal" in rates and "unsafe_compliance" in rates:
            x, xerr = point(rates, "false_refusal")
            y, yerr = point(rates, "unsafe_compliance")
            trade.errorbar(
                x, y, xerr=xerr, yerr=yerr, fmt="o", capsize=3, color=f"C{i % 10}", label=name, alpha=0.8
            )
        if "helpful_correct" in rates:
            v, err = point(rates, "helpful_correct")
            helpful.errorbar(v, i, xerr=err, fmt="o", capsize=3, color=f"C{i % 10}")
    trade.set_xlabel("false refusal on borderline prompts")
    trade.set_ylabel("unsafe compliance on harmful prompts")
    trade.set_title("helpfulness-safety trade-off (lower left is better; 95 % intervals)", fontsize=9)
    if trade.get_legend_handles_labels()[0]:
        trade.legend(fontsize=7, loc="upper right")
    helpful.set_yticks(range(len(names)), names, fontsize=7)
    helpful.invert_yaxis()
    helpful.set_xlabel("helpful correct")
    save_plot(fig, path)
    return Path(path)


def add_commands(subparsers) -> None:
    gold = subparsers.add_parser(
        "gold", help="gold-grader rates of chat models on held-out gym prompts, paired against the first"
    )
    gold.add_argument(
        "models", nargs="*", help="checkpoints or LoRA adapter directories; the first is the baseline"
    )
    gold.add_argument(
        "--from",
        dest="answers",
        nargs="+",
        default=[],
        metavar="JSON",
        help="regrade the answers in earlier --out files instead of answering (first model: baseline)",
    )
    gold.add_argument("--n-helpful", type=int, default=300, help="helpfulness prompts (default: all 300)")
    gold.add_argument("--n-safety", type=int, default=150, help="harmful prompts (default: all 150)")
    gold.add_argument("--n-borderline", type=int, default=60, help="borderline prompts (default: all 60)")
    gold.add_argument("--max-new-tokens", type=int, default=64)
    gold.add_argument("--autocast", action="store_true", help="answer under bf16 autocast")
    gold.add_argument("--device", default="auto", help=DEVICE_HELP)
    gold.add_argument("--out", help="write rates, paired tests and every answer as JSON here")
    gold.add_argument("--plot", help="draw the helpfulness-safety trade-off of the models as a PNG here")
    gold.set_defaults(func=cmd_gold)
