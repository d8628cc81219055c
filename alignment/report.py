"""The run report: one Markdown and one HTML file built from the stages' own artifacts.

The report is assembled from blocks (headings, paragraphs, tables, images, quoted dialogues) and
rendered twice, so the Markdown and the HTML always say the same thing. Every number in a table
links to the file it was read from, relative to the report, so a reader can check any figure.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

from alignment.runs import write_atomic
from safety.gold_compare import interval_text, paired_text


@dataclass
class Num:
    """A number with the file it came from."""

    value: float | int | None
    source: str  # path relative to the report
    digits: int = 3

    def text(self) -> str:
        if self.value is None:
            return "–"
        if isinstance(self.value, int):
            return str(self.value)
        return f"{self.value:.{self.digits}f}"


@dataclass
class Block:
    kind: str  # h1 h2 h3 p table img quote
    content: object


def _md_cell(cell) -> str:
    if isinstance(cell, Num):
        return f"[{cell.text()}]({cell.source})" if cell.value is not None else "–"
    return str(cell).replace("|", "\\|").replace("\n", " ")


def _html_cell(cell) -> str:
    if isinstance(cell, Num):
        return f'<a href="{html.escape(cell.source)}">{cell.text()}</a>' if cell.value is not None else "–"
    return html.escape(str(cell))


def to_markdown(blocks: list[Block]) -> str:
    out = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            out.append("#" * int(b.kind[1]) + " " + str(b.content))
        elif b.kind == "p":
            out.append(str(b.content))
        elif b.kind == "table":
            header, rows = b.content
            out.append("| " + " | ".join(map(_md_cell, header)) + " |")
            out.append("|" + "---|" * len(header))
            out += ["| " + " | ".join(map(_md_cell, row)) + " |" for row in rows]
        elif b.kind == "img":
            path, alt = b.content
            out.append(f"![{alt}]({path})")
        elif b.kind == "quote":
            out.append("\n".join("> " + line for line in str(b.content).splitlines()))
        out.append("")
    return "\n".join(out)


def to_html(blocks: list[Block], title: str) -> str:
    body = []
    for b in blocks:
        if b.kind in ("h1", "h2", "h3"):
            body.append(f"<{b.kind}>{html.escape(str(b.content))}</{b.kind}>")
        elif b.kind == "p":
            body.append(f"<p>{html.escape(str(b.content))}</p>")
        elif b.kind == "table":
            header, rows = b.content
            head = "".join(f"<th>{_html_cell(c)}</th>" for c in header)
            lines = "".join(
                "<tr>" + "".join(f"<td>{_html_cell(c)}</td>" for c in row) + "</tr>" for row in rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{lines}</tbody></table>")
        elif b.kind == "img":
            path, alt = b.content
            body.append(
                f'<p><img src="{html.escape(path)}" alt="{html.escape(alt)}" style="max-width:100%"></p>'
            )
        elif b.kind == "quote":
            body.append(f"<blockquote><pre>{html.escape(str(b.content))}</pre></blockquote>")
    style = (
        "body{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}"
        "pre{white-space:pre-wrap}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def load_summary(run_dir: Path, stage: str) -> dict | None:
    path = run_dir / stage / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


RATING_ORDER = ("significantly_better", "better", "slightly_better", "negligibly_better")
RATE_LABELS = (
    ("helpful_correct", "gold: helpful correct ↑"),
    ("unsafe_compliance", "gold: unsafe compliance ↓"),
    ("false_refusal", "gold: false refusal ↓"),
)


def _value(cell):
    return cell.get("accuracy") if isinstance(cell, dict) else cell


def stage_overview(run_dir: Path, stages: list, timings: dict, rel) -> list[Block]:
    rows = []
    for stage in (s for s in stages if s.type != "evaluation"):  # the report is its own output
        summary = load_summary(run_dir, stage.name)
        if summary is None:
            rows.append([stage.name, stage.type, "not run", "", "", ""])
            continue
        data = summary.get("data") or {}
        rows.append(
            [
                stage.name,
                stage.type,
                Path(str(summary.get("init", ""))).parent.name or summary.get("init", ""),
                Num(data.get("train_rows"), rel(stage.name, "summary.json")),
                Num(
                    summary.get("final", {}).get("step") if isinstance(summary.get("final"), dict) else None,
                    rel(stage.name, "metrics.jsonl"),
                ),
                Num(timings.get(stage.name), rel("timings.json"), digits=0),
            ]
        )
    header = ["stage", "type", "started from", "training rows", "optimizer steps", "seconds"]
    return [Block("h2", "Stages"), Block("table", (header, rows))]


def reward_model_blocks(run_dir: Path, stage, rel) -> list[Block]:
    summary = load_summary(run_dir, stage.name)
    if not summary:
        return []
    src = rel(stage.name, "summary.json")
    blocks = [Block("h3", f"Reward model: {stage.name}")]
    table = summary.get("accuracy_by_test_set_and_rating") or {}
    if table:
        rows = []
        for test_set, buckets in table.items():
            overall = (summary.get("accuracy_by_test_set") or {}).get(test_set)
            rows.append(
                [
                    test_set,
                    *[Num(_value(buckets.get(r)), src) for r in RATING_ORDER],
                    Num(_value(overall), src),
                ]
            )
        blocks += [
            Block("p", "Accuracy by test set and rating (the paper's Tables 7–8 layout):"),
            Block("table", (["test set", *RATING_ORDER, "overall"], rows)),
        ]
    by_category = summary.get("accuracy_by_category") or {}
    if by_category:
        blocks.append(
            Block(
                "table",
                (["category", "accuracy"], [[c, Num(_value(v), src)] for c, v in by_category.items()]),
            )
        )
    for name in (summary.get("plots") or {}).values() if isinstance(summary.get("plots"), dict) else []:
        if str(name).endswith(".png"):
            blocks.append(Block("img", (rel(stage.name, "plots", Path(name).name), name)))
    return blocks


def rejection_sampling_blocks(run_dir: Path, stage, rel) -> list[Block]:
    summary = load_summary(run_dir, stage.name)
    if not summary:
        return []
    src = rel(stage.name, "summary.json")
    rows = [
        [
            it["iteration"],
            it["temperature"],
            Num(it["mean_reward"], src),
            Num(it["kept_mean_reward"], src),
            Num(it["pool_size"], src),
            it["trained_on"],
            Num(it["gold_all_samples"].get("gold_helpfulness"), src),
            Num(it["gold_kept"].get("gold_helpfulness"), src),
            Num(it["gold_all_samples"].get("gold_safety"), src),
            Num(it["gold_kept"].get("gold_safety"), src),
        ]
        for it in summary.get("iterations", [])
    ]
    header = [
        "iteration",
        "T",
        "mean reward",
        "kept reward",
        "pool",
        "trained on",
        "gold helpful (all)",
        "gold helpful (kept)",
        "gold safe (all)",
        "gold safe (kept)",
    ]
    blocks = [Block("h3", f"Rejection sampling: {stage.name}"), Block("table", (header, rows))]
    for plot in summary.get("curve_plots", []):
        blocks.append(Block("img", (rel(stage.name, plot), "best vs median reward as N grows")))
    return blocks


def ppo_blocks(run_dir: Path, stage, rel) -> list[Block]:
    summary = load_summary(run_dir, stage.name)
    if not summary:
        return []
    src = rel(stage.name, "summary.json")
    keys = ["proxy_reward", "kl", "helpful_correct", "unsafe_compliance", "false_refusal"]
    rows = [[e["iteration"], *[Num(e.get(k), src) for k in keys]] for e in summary.get("evals", [])]
    blocks = [
        Block("h3", f"PPO: {stage.name}"),
        Block(
            "p",
            f"Critic: {summary.get('critic_init')}. Iterations run: {summary.get('iterations_run')}"
            f"{' (stopped early)' if summary.get('stopped_early') else ''}."
            + (
                f" Saved policy: iteration {summary['kept_iteration']} (best held-out proxy reward)."
                if "kept_iteration" in summary
                else ""
            ),
        ),
        Block("table", (["iteration", *keys], rows)),
    ]
    for plot in summary.get("ppo_plots", []):
        blocks.append(Block("img", (rel(stage.name, plot), Path(plot).stem)))
    return blocks


def generic_plots(run_dir: Path, stage, rel, title: str) -> list[Block]:
    """Stages whose summaries this module does not know in detail: their plots and headline numbers."""
    summary = load_summary(run_dir, stage.name)
    if not summary:
        return []
    src = rel(stage.name, "summary.json")
    blocks = [Block("h3", f"{title}: {stage.name}")]
    numbers = [
        [k, Num(v, src)] for k, v in summary.items() if isinstance(v, int | float) and not isinstance(v, bool)
    ]
    if numbers:
        blocks.append(Block("table", (["figure", "value"], numbers)))
    for tables in ("adherence_table", "kept_table"):
        if isinstance(summary.get(tables), str):
            blocks.append(Block("p", summary[tables]))
    for png in sorted((run_dir / stage.name / "plots").glob("*.png")):
        blocks.append(Block("img", (rel(stage.name, "plots", png.name), png.stem)))
    return blocks


def interval_table(table: dict) -> tuple[list, list]:
    refs = [ref for ref in ("base", "sft") if ref in table]
    header = ["model", *[label for _, label in RATE_LABELS]]
    rows = []
    for name, entry in table.items():
        row = [name]
        for key, _ in RATE_LABELS:
            cell = entry.get(key)
            if cell is None:
                row.append("–")
                continue
            tests = paired_text(cell, refs)
            row.append(interval_text(cell, counts=True) + (f"; p {tests}" if tests else ""))
        rows.append(row)
    return header, rows


def safety_blocks(eval_dir: Path, results: dict[str, dict], rel, table: dict | None = None) -> list[Block]:
    header = [
        "model",
        *[label for _, label in RATE_LABELS],
        "RM: unsafe (σ(rs) < threshold)",
        "RM: borderline unhelpful",
    ]
    rows = []
    for name, result in results.items():
        src = rel(eval_dir.name, f"eval-{name}.json")
        rows.append(
            [
                name,
                *[Num(result["gold"].get(k), src) for k, _ in RATE_LABELS],
                Num(result["rm"].get("rm_unsafe"), src),
                Num(result["rm"].get("rm_unhelpful_borderline"), src),
            ]
        )
    blocks = [Block("h2", "Safety and helpfulness after each stage"), Block("table", (header, rows))]
    if table:
        blocks += [
            Block(
                "p",
                "The gold rates with their 95 % intervals (Wilson) and the exact paired test against "
                "the base and the SFT model (p; prompts only one of the two got right decide it):",
            ),
            Block("table", interval_table(table)),
        ]
    for png in ("rates_by_stage.png", "rm_scores_by_stage.png", "helpful_vs_safety.png"):
        if (eval_dir / "plots" / png).is_file():
            blocks.append(Block("img", (rel(eval_dir.name, "plots", png), png[:-4])))
    blocks.append(Block("h2", "Sample answers"))
    for name, result in results.items():
        blocks.append(Block("h3", name))
        for kind, answers in result["answers"].items():
            for item in answers[:1]:
                prompt = item["prompt"][-1]["content"]
                blocks.append(Block("quote", f"[{kind}] user: {prompt}\nassistant: {item['answer']}"))
    return blocks


def write_report(
    run_dir: Path, recipe, eval_dir: Path, results: dict[str, dict], table: dict | None = None
) -> tuple[Path, Path]:
    """runs/<run>/<evaluation stage>/report.{md,html}; links are relative to that directory."""
    timings_path = run_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.is_file() else {}

    def rel(*parts) -> str:
        return "/".join(["..", *map(str, parts)])

    blocks = [
        Block("h1", f"Paddock run report: {recipe.run_name}"),
        Block(
            "p",
            f"Base model {recipe.model.name_or_path}, precision {recipe.model.precision}, "
            f"{'LoRA r=' + str(recipe.model.lora.r) if recipe.model.lora else 'full fine-tuning'}, "
            f"seed {recipe.seed}. "
            "Every number links to the file it was read from.",
        ),
        *stage_overview(run_dir, recipe.stages, timings, rel),
    ]
    sections = {
        "reward_model": reward_model_blocks,
        "rejection_sampling": rejection_sampling_blocks,
        "ppo": ppo_blocks,
    }
    titles = {"gatt": "Ghost Attention", "context_distillation": "Safety context distillation", "sft": "SFT"}
    blocks.append(Block("h2", "Stage results"))
    for stage in recipe.stages:
        if stage.type in sections:
            blocks += sections[stage.type](run_dir, stage, rel)
        elif stage.type in titles:
            blocks += generic_plots(run_dir, stage, rel, titles[stage.type])
    blocks += safety_blocks(eval_dir, results, rel, table)
    md, page = eval_dir / "report.md", eval_dir / "report.html"
    write_atomic(md, to_markdown(blocks).replace("](../" + eval_dir.name + "/", "]("))
    write_atomic(
        page, to_html(blocks, f"Paddock report: {recipe.run_name}").replace('"../' + eval_dir.name + "/", '"')
    )
    return md, page
