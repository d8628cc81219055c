"""Compare reward models on the same preference pairs: `paddock rm compare` and `paddock rm evaluate`.

Why: RM choices (margin or not, data mixture, LoRA or full, base size) are judged by accuracy on
held-out pairs, and two RMs are only comparable on the same pairs read the same way. This scores
every RM on every test set, then writes one report (report.md and a self-contained report.html
with the PNGs next to it): the Table 7 layout across RMs, per RM the Table 8 layout (test set ×
rating), accuracy by category, calibration, score histograms and gold agreement, and the agreement
matrix, i.e. how often two RMs prefer the same answer of a pair (high agreement with different
accuracies means they fail on the same pairs), and per test set a paired test of each two RMs'
accuracies (exact McNemar: only the pairs one RM gets right and the other wrong carry evidence,
so a 2-point gap can be decisive on shared pairs and noise on independent ones).

An RM is a checkpoint directory with a reward head (a Paddock RM, or any transformers
`LlamaForSequenceClassification`), or a saved LoRA adapter whose `paddock_base.txt` names its base.
"""

from __future__ import annotations

import gc
import html
import json
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from alignment.errors import PaddockError
from alignment.stats import mcnemar_exact
from reward_models.evaluation import RATINGS, score_test_sets, summarize, write_plots


@dataclass
class DataSpec:
    """`[NAME=]ADAPTER:PATH` from the command line; NAME defaults to the file name without suffixes."""

    name: str
    adapter: str
    path: str

    @classmethod
    def parse(cls, text: str) -> DataSpec:
        name, rest = text.split("=", 1) if "=" in text.split(":", 1)[0] else ("", text)
        adapter, sep, path = rest.partition(":")
        if not sep or not adapter or not path:
            raise PaddockError(
                f"--data {text!r}: expected ADAPTER:PATH (e.g. llama2:data/gym/safety_pairs_test.jsonl)"
            )
        if not name:
            name = Path(path).name
            while Path(name).suffix.lower() in (".gz", ".jsonl", ".json", ".ndjson", ".parquet"):
                name = Path(name).stem
        return cls(name or path, adapter, path)


def load_test_sets(specs: list[DataSpec], max_pairs: int | None = None, seed: int = 0) -> dict[str, list]:
    """{test set name: pairs}; with max_pairs, a seeded random subset of each set, in file order."""
    from alignment.data.loading import load_preferences

    if max_pairs is not None and max_pairs < 1:
        raise PaddockError(f"--max-pairs must be at least 1, got {max_pairs}")
    out: dict[str, list] = {}
    for spec in specs:
        pairs = load_preferences(spec.path, spec.adapter).pairs
        if not pairs:
            raise PaddockError(f"{spec.path}: no preference pairs")
        if max_pairs is not None and len(pairs) > max_pairs:
            keep = sorted(random.Random(seed).sample(range(len(pairs)), max_pairs))
            pairs = [pairs[i] for i in keep]
        name, k = spec.name, 2
        while name in out:
            name, k = f"{spec.name}-{k}", k + 1
        out[name] = pairs
    return out


def load_reward_model(path: str | Path, dtype="float32", device: str = "auto"):
    """A checkpoint with the reward head, on `device` (alignment/placement.py); a LoRA adapter dir is
    applied to the base it names and merged."""
    from alignment.base_model import load_model
    from alignment.model_setup import resolve_init
    from alignment.placement import resolve_device

    base, adapter = resolve_init(str(path))
    check_reward_head(base, adapter)
    model = load_model(base, head="reward", dtype=dtype, device=resolve_device(device))
    if adapter is not None:
        from alignment.model_setup import apply_adapter

        model = apply_adapter(model, adapter)
    return model.eval()


def check_reward_head(base: Path, adapter: Path | None) -> None:
    """Refuse a checkpoint without a trained score head: evaluating a freshly initialised head (what
    loading an SFT checkpoint with head="reward" gives) would report noise as accuracy."""
    from alignment.base_model.checkpoint import safetensors_header, weight_files

    files = list(weight_files(Path(base)))
    if adapter is not None:
        files += sorted(Path(adapter).glob("adapter_model*.safetensors"))
    names = [name for f in files for name in safetensors_header(f)]
    if not any(n == "score.weight" or n.endswith(".score.weight") or ".score." in n for n in names):
        where = f"{adapter} (base {base})" if adapter is not None else str(base)
        raise PaddockError(f"{where}: no reward head (score.weight); is this a language-model checkpoint?")


def load_rm_tokenizer(path: str | Path, tokenizer: str | None = None):
    """The given tokenizer, else the RM's own, else (for an adapter) its base checkpoint's."""
    from alignment.base_model import load_tokenizer
    from alignment.model_setup import resolve_init

    if tokenizer:
        return load_tokenizer(tokenizer)
    base, adapter = resolve_init(str(path))
    candidates = [adapter, base] if adapter is not None else [base]
    for candidate in candidates:
        try:
            return load_tokenizer(candidate)
        except PaddockError as err:
            last = err
    raise PaddockError(f"{path}: no tokenizer found ({last}); pass --tokenizer") from None


def rm_names(paths: list[str]) -> list[str]:
    """Shortest unique path suffixes (runs/a/rm/model, runs/b/rm/model -> a/rm/model, b/rm/model); a
    path given twice gets #2, #3 on its repeats."""
    resolved = [Path(p).resolve() for p in paths]
    distinct = list(dict.fromkeys(resolved))
    for k in range(1, max(len(p.parts) for p in distinct) + 1):
        short = {p: "/".join(p.parts[-k:]) for p in distinct}
        if len(set(short.values())) == len(distinct):
            break
    names, seen = [], Counter()
    for p in resolved:
        seen[p] += 1
        names.append(short[p] if seen[p] == 1 else f"{short[p]}#{seen[p]}")
    return names


def file_prefix(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") + "_"


def preferences(r_chosen, r_rejected) -> np.ndarray:
    """+1 where the RM prefers chosen, -1 where it prefers rejected, 0 for a tie."""
    return np.sign(np.asarray(r_chosen, dtype=np.float64) - np.asarray(r_rejected, dtype=np.float64))


def agreement_matrix(prefs: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """Fraction of pairs on which two RMs prefer the same answer (a tie matches only a tie)."""
    return {
        a: {b: float(np.mean(pa == pb)) if len(pa) else None for b, pb in prefs.items()}
        for a, pa in prefs.items()
    }


WITH_PREFERENCE = "with a preference"


def paired_outcomes(scored: dict) -> dict[str, np.ndarray]:
    """Per test set, whether the RM got each pair right; for a test set with negligibly-better
    pairs, also "<set>, with a preference": the same without them. Those pairs are two answers of
    one quality (in the gym, in coin-flip order), so no RM can be right on them more than by
    chance: they add only noise to a paired test of which RM is more accurate."""
    out = {}
    for test_set, (pairs, chosen, rejected) in scored.items():
        right = preferences(chosen, rejected) > 0
        out[test_set] = right
        kept = np.array(
            [getattr(p.rating, "value", p.rating) != "negligibly_better" for p in pairs], dtype=bool
        )
        if kept.any() and not kept.all():
            out[f"{test_set}, {WITH_PREFERENCE}"] = right[kept]
    return out


def paired_tests(correct: dict[str, dict[str, np.ndarray]]) -> list[dict]:
    """correct[rm][test set]: bool per pair (r_chosen > r_rejected). For every two RMs and test set:
    their accuracies, the discordant counts and the McNemar p-value."""
    names, rows = list(correct), []
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for test_set, ca in correct[a].items():
                cb = correct[b][test_set]
                only_a, only_b = int(np.sum(ca & ~cb)), int(np.sum(cb & ~ca))
                rows.append(
                    {
                        "a": a,
                        "b": b,
                        "test_set": test_set,
                        "n": len(ca),
                        "accuracy_a": float(np.mean(ca)) if len(ca) else None,
                        "accuracy_b": float(np.mean(cb)) if len(cb) else None,
                        "only_a": only_a,
                        "only_b": only_b,
                        "p_value": mcnemar_exact(only_a, only_b),
                    }
                )
    return rows


def head_to_head(outcomes: dict[str, dict[str, dict[str, int]]]) -> list[dict]:
    """Paired tests of RMs from their stored per-pair outcomes (`outcomes[rm][test set][pair key]`,
    1 when the RM scored the chosen answer higher; reward_models.evaluation.summarize writes them).
    Each test set is compared on the pairs every RM scored, in one order."""
    if not outcomes:
        return []
    sets = set.intersection(*(set(by_set) for by_set in outcomes.values()))
    correct = {rm: {} for rm in outcomes}
    for test_set in sorted(sets):
        keys = sorted(set.intersection(*(set(by_set[test_set]) for by_set in outcomes.values())))
        for rm, by_set in outcomes.items():
            correct[rm][test_set] = np.array([bool(by_set[test_set][k]) for k in keys], dtype=bool)
    return paired_tests(correct)


def compare_rms(
    rm_paths: list[str],
    test_sets: dict[str, list],
    out_dir: Path,
    style: str = "template",
    batch_size: int = 16,
    max_length: int = 512,
    autocast: bool = False,
    tokenizer: str | None = None,
    device: str = "auto",
) -> dict:
    """Score every RM (one at a time, to keep memory flat) and write report.md, report.html, the PNGs
    and compare.json into out_dir; returns the comparison (RM summaries and agreement matrix)."""
    from alignment.model_setup import resolve_init

    for path in rm_paths:  # fail on a bad path or a missing head before scoring the others
        check_reward_head(*resolve_init(str(path)))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {"test_sets": {k: len(v) for k, v in test_sets.items()}, "style": style, "rms": {}}
    prefs, correct = {}, {}
    for name, path in zip(rm_names(rm_paths), rm_paths, strict=True):
        model, tok = load_reward_model(path, device=device), load_rm_tokenizer(path, tokenizer)
        scored = score_test_sets(model, tok, test_sets, style, autocast, batch_size, max_length)
        del model
        gc.collect()
        summary = summarize(scored)
        summary["plots"] = write_plots(scored, summary, out_dir, prefix=file_prefix(name), title=name)
        result["rms"][name] = {"path": str(path), "summary": summary}
        prefs[name] = np.concatenate([preferences(c, r) for _, c, r in scored.values()])
        correct[name] = paired_outcomes(scored)
    result["agreement"] = agreement_matrix(prefs)
    result["paired"] = paired_tests(correct)
    (out_dir / "compare.json").write_text(json.dumps(result, indent=2) + "\n")
    blocks = report_blocks(result)
    (out_dir / "report.md").write_text(to_markdown(blocks))
    (out_dir / "report.html").write_text(to_html(blocks))
    return result


# --- report: one list of blocks, rendered as Markdown and as HTML --------------------------------


def fmt_cell(c: dict) -> str:
    if not c or c.get("n", 0) == 0 or c.get("accuracy", c.get("agreement")) is None:
        return "– (n=0)"
    value = c.get("accuracy", c.get("agreement"))
    lo, hi = c["ci95"]
    return f"{100 * value:.1f} [{100 * lo:.1f}, {100 * hi:.1f}] (n={c['n']})"


def report_blocks(result: dict) -> list[tuple]:
    """("h1"|"h2"|"h3"|"p", text), ("table", header, rows) and ("img", file, alt) blocks."""
    rms, sets = result["rms"], list(result["test_sets"])
    blocks: list[tuple] = [
        ("h1", "Reward model comparison"),
        (
            "p",
            "Accuracy = share of pairs where r(chosen) > r(rejected), ties counted wrong, in %, with the "
            "95 % Wilson interval and the pair count. Test sets: "
            + ", ".join(f"{k} ({n} pairs)" for k, n in result["test_sets"].items())
            + f"; chat style {result['style']}.",
        ),
        ("h2", "Accuracy by test set (Llama 2 Table 7 layout)"),
        (
            "table",
            ["RM", *sets, "overall"],
            [
                [
                    name,
                    *(fmt_cell(r["summary"]["accuracy_by_test_set"][s]) for s in sets),
                    fmt_cell(r["summary"]),
                ]
                for name, r in rms.items()
            ],
        ),
        ("h2", "Agreement between RMs"),
        ("p", "Fraction of pairs on which the two RMs prefer the same response."),
        (
            "table",
            ["", *rms],
            [
                [a, *(f"{v:.3f}" if v is not None else "–" for v in row.values())]
                for a, row in result["agreement"].items()
            ],
        ),
    ]
    if result.get("paired"):
        blocks += [
            ("h2", "Paired differences"),
            (
                "p",
                "On each test set, the pairs only one of two RMs gets right, and the exact McNemar p-value "
                'of "both are equally accurate" (small: the accuracy gap is not chance). Rows "with a '
                'preference" leave out the negligibly-better pairs, whose two answers are of one quality, '
                "so that only pairs an RM can get right by more than chance are counted.",
            ),
            (
                "table",
                ["RM A", "RM B", "test set", "A", "B", "only A right", "only B right", "p"],
                [
                    [
                        row["a"],
                        row["b"],
                        row["test_set"],
                        *(
                            f"{100 * row[k]:.1f}" if row[k] is not None else "–"
                            for k in ("accuracy_a", "accuracy_b")
                        ),
                        row["only_a"],
                        row["only_b"],
                        f"{row['p_value']:.3g}",
                    ]
                    for row in result["paired"]
                ],
            ),
        ]
    for name, r in rms.items():
        blocks += rm_blocks(name, r["path"], r["summary"], sets)
    return blocks


def rm_blocks(name: str, path: str, s: dict, sets: list[str]) -> list[tuple]:
    rating_cols = [k for k in s["accuracy_by_rating"] if k in RATINGS or s["accuracy_by_rating"][k]["n"]]
    table8 = [
        [
            t,
            *(fmt_cell(s["accuracy_by_test_set_and_rating"][t].get(k, {})) for k in rating_cols),
            fmt_cell(s["accuracy_by_test_set_and_rating"][t]["overall"]),
        ]
        for t in sets
    ]
    table8.append(["all", *(fmt_cell(s["accuracy_by_rating"][k]) for k in rating_cols), fmt_cell(s)])
    gold = s["gold_agreement"]
    cal = s["calibration"]
    return [
        ("h2", f"RM {name}"),
        ("p", f"Checkpoint: {path}"),
        ("h3", "Accuracy by rating (Llama 2 Table 8 layout)"),
        ("table", ["test set", *rating_cols, "overall"], table8),
        ("h3", "Accuracy by category"),
        (
            "table",
            ["category", "accuracy"],
            [[c, fmt_cell(cell)] for c, cell in s["accuracy_by_category"].items()],
        ),
        ("h3", "Agreement with the gold graders"),
        (
            "p",
            "Pairs where the gym's graders (safety labels, checkable answers) separate the two responses; "
            "share where the RM prefers the one the grader prefers.",
        ),
        (
            "table",
            ["category", "agreement"],
            [[c, fmt_cell(cell)] for c, cell in gold["by_category"].items()] + [["all", fmt_cell(gold)]],
        ),
        ("h3", "Calibration"),
        (
            "p",
            "Expected calibration error: "
            + (f"{cal['ece']:.3f}" if cal["ece"] is not None else "–")
            + " (confidence max(σ(Δr), 1 − σ(Δr)) in 10 bins).",
        ),
        ("img", s["plots"]["reliability"], f"reliability diagram of {name}"),
        ("h3", "Reward distributions"),
        ("img", s["plots"]["score_histograms"], f"score histograms of {name}"),
    ]


def to_markdown(blocks: list[tuple]) -> str:
    lines = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "img":
            lines += [f"![{block[2]}]({block[1]})", ""]
        else:
            _, header, rows = block
            esc = lambda v: str(v).replace("|", "\\|")  # noqa: E731
            lines.append("| " + " | ".join(map(esc, header)) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
            lines.append("")
    return "\n".join(lines)


STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:72em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.3em .6em;"
    "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}"
    "img{max-width:100%;border:1px solid #eee}"
)


def to_html(blocks: list[tuple]) -> str:
    """One file with inline CSS; images are the PNG files next to it."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        "<title>Reward model comparison</title>",
        f"<style>{STYLE}</style></head><body>",
    ]
    e = html.escape
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3", "p"):
            out.append(f"<{kind}>{e(block[1])}</{kind}>")
        elif kind == "img":
            out.append(f'<p><img src="{e(block[1])}" alt="{e(block[2])}"></p>')
        else:
            _, header, rows = block
            out.append("<table><tr>" + "".join(f"<th>{e(str(h))}</th>" for h in header) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{e(str(v))}</td>" for v in row) + "</tr>" for row in rows]
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
