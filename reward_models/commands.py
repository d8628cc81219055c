"""`paddock rm ...`: evaluate one reward model, compare several, pick a safety-RM threshold.

    paddock rm evaluate RM --data [NAME=]ADAPTER:PATH [--data ...] [--out DIR]
    paddock rm compare RM [RM ...] --data [NAME=]ADAPTER:PATH [--data ...] [--out DIR]
    paddock rm thresholds SAFETY_RM --data [NAME=]ADAPTER:PATH [--target-precision 0.89] [--out DIR]

Common options: --style template|llama2 (how prompts are formatted, as in training),
--max-pairs N (a seeded subset of each test set), --batch-size, --max-length, --autocast (bf16),
--tokenizer (when the RM directory has none).
"""

from __future__ import annotations

import json
from pathlib import Path

from alignment.placement import DEVICE_HELP
from alignment.runs import write_atomic


def _common(parser, out_default: str) -> None:
    parser.add_argument(
        "--data",
        action="append",
        required=True,
        metavar="[NAME=]ADAPTER:PATH",
        help="a test set of preference pairs (repeatable), e.g. llama2:data/gym/safety_pairs_test.jsonl",
    )
    parser.add_argument("--out", default=out_default, help=f"output directory (default {out_default})")
    parser.add_argument(
        "--style",
        choices=["template", "llama2"],
        default="template",
        help="chat format used to score, as the RM was trained (default template)",
    )
    parser.add_argument(
        "--max-pairs", type=int, default=None, help="score a seeded subset of N pairs per test set"
    )
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512, help="tokens per prompt + response")
    parser.add_argument("--autocast", action="store_true", help="score under bf16 autocast")
    parser.add_argument("--tokenizer", default=None, help="tokenizer path or name if the RM has none")
    parser.add_argument("--device", default="auto", help=DEVICE_HELP)


def _test_sets(args) -> dict:
    from reward_models.compare import DataSpec, load_test_sets

    return load_test_sets([DataSpec.parse(d) for d in args.data], args.max_pairs)


def _scored(args):
    from reward_models.compare import load_reward_model, load_rm_tokenizer
    from reward_models.evaluation import score_test_sets

    test_sets = _test_sets(args)
    model = load_reward_model(args.rm, device=args.device)
    tokenizer = load_rm_tokenizer(args.rm, args.tokenizer)
    return score_test_sets(
        model, tokenizer, test_sets, args.style, args.autocast, args.batch_size, args.max_length
    )


def _pct(c: dict) -> str:
    return "–" if c.get("accuracy") is None else f"{100 * c['accuracy']:.1f} % (n={c['n']})"


def cmd_evaluate(args) -> None:
    from reward_models.evaluation import summarize, write_plots

    scored = _scored(args)
    out = Path(args.out)
    summary = summarize(scored)
    summary["plots"] = write_plots(scored, summary, out, title=Path(args.rm).name)
    summary["rm"] = str(args.rm)
    write_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    print(
        f"accuracy {_pct(summary)}; "
        + ", ".join(f"{k} {_pct(v)}" for k, v in summary["accuracy_by_rating"].items())
    )
    print(f"wrote {out / 'summary.json'} and plots")


def cmd_compare(args) -> None:
    from reward_models.compare import compare_rms

    result = compare_rms(
        args.rms,
        _test_sets(args),
        Path(args.out),
        args.style,
        args.batch_size,
        args.max_length,
        args.autocast,
        args.tokenizer,
        device=args.device,
    )
    for name, r in result["rms"].items():
        print(f"{name}: accuracy {_pct(r['summary'])}")
    print(f"wrote {Path(args.out) / 'report.md'} and {Path(args.out) / 'report.html'}")


def cmd_thresholds(args) -> None:
    from alignment.errors import PaddockError
    from reward_models.thresholds import describe, evaluate_thresholds

    scored = _scored(args)
    pairs = [p for ps, _, _ in scored.values() for p in ps]
    chosen = [float(v) for _, c, _ in scored.values() for v in c]
    rejected = [float(v) for _, _, r in scored.values() for v in r]
    if not any(p.chosen_safe is not None or p.rejected_safe is not None for p in pairs):
        raise PaddockError(
            "no pair has chosen_safe / rejected_safe labels; thresholds need labelled responses"
        )
    report = evaluate_thresholds(
        pairs, chosen, rejected, Path(args.out), args.target_precision, title=Path(args.rm).name
    )
    print(describe(report))
    print(f"wrote {Path(args.out) / 'safety_thresholds.json'} and {Path(args.out) / report['plot']}")


def add_commands(subparsers) -> None:
    rm = subparsers.add_parser("rm", help="evaluate and compare reward models").add_subparsers(
        dest="action", required=True
    )
    evaluate = rm.add_parser("evaluate", help="accuracy by rating/category/test set, calibration, plots")
    evaluate.add_argument("rm", help="reward-model checkpoint or LoRA adapter directory")
    _common(evaluate, "rm-evaluate")
    evaluate.set_defaults(func=cmd_evaluate)

    compare = rm.add_parser("compare", help="score several RMs on the same pairs; report.md and report.html")
    compare.add_argument(
        "rms", nargs="+", metavar="RM", help="reward-model checkpoints or LoRA adapter directories"
    )
    _common(compare, "rm-compare")
    compare.set_defaults(func=cmd_compare)

    thresholds = rm.add_parser("thresholds", help="precision/recall of flagging unsafe when σ(score) < t")
    thresholds.add_argument("rm", help="safety reward-model checkpoint or LoRA adapter directory")
    thresholds.add_argument(
        "--target-precision",
        type=float,
        default=0.89,
        help="report the thresholds reaching this precision (default 0.89, the paper's)",
    )
    _common(thresholds, "rm-thresholds")
    thresholds.set_defaults(func=cmd_thresholds)
