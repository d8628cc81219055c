"""PNG plots for reward-model reports: reliability diagram, score histograms, precision/recall curve.

Why a module of its own: the evaluation code stays pure and testable without a plotting stack, and
every report (RM stage, `paddock rm evaluate`, `paddock rm compare`) draws the same pictures.
Figures are built with `matplotlib.figure.Figure` (no pyplot): no global state, no GUI backend, safe
to call from a training process or a thread.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from alignment.plotting import save_plot


def _save(fig: Figure, path: Path) -> Path:
    save_plot(fig, path)
    return Path(path)


def reliability_diagram(calibration: dict, path: Path, title: str = "") -> Path:
    """Observed accuracy per confidence bin against the diagonal, with each bin's pair count."""
    fig = Figure(figsize=(5, 4.5))
    ax = fig.add_subplot()
    rows = [b for b in calibration["bins"] if b["n"]]
    width = calibration["bins"][0]["hi"] - calibration["bins"][0]["lo"] if calibration["bins"] else 0.05
    ax.plot([0.5, 1], [0.5, 1], "--", color="grey", label="perfect calibration")
    ax.bar(
        [b["lo"] for b in rows],
        [b["accuracy"] for b in rows],
        width=width,
        align="edge",
        edgecolor="black",
        alpha=0.7,
        label="observed accuracy",
    )
    for b in rows:
        ax.text(b["lo"] + width / 2, b["accuracy"] + 0.01, str(b["n"]), ha="center", fontsize=7)
    ece = calibration.get("ece")
    ax.set_title(f"{title + ' — ' if title else ''}ECE {ece:.3f}" if ece is not None else title or "no pairs")
    ax.set_xlabel("confidence max(σ(r_c − r_r), 1 − σ(r_c − r_r))")
    ax.set_ylabel("fraction preferring the chosen answer")
    ax.set_xlim(0.5, 1)
    ax.set_ylim(0, 1.05)
    ax.legend(loc="best", fontsize=8)
    return _save(fig, path)


def score_histograms(
    by_category: dict[str, tuple[list[float], list[float]]], path: Path, title: str = ""
) -> Path:
    """Chosen vs rejected reward distributions, one panel per category."""
    names = sorted(by_category) or ["(no pairs)"]
    fig = Figure(figsize=(5 * len(names), 3.8))
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        chosen, rejected = by_category.get(name, ([], []))
        values = chosen + rejected
        if values:
            lo, hi = min(values), max(values)
            bins = [lo + (hi - lo + 1e-9) * j / 30 for j in range(31)]
            ax.hist(chosen, bins=bins, alpha=0.6, label=f"chosen (n={len(chosen)})")
            ax.hist(rejected, bins=bins, alpha=0.6, label=f"rejected (n={len(rejected)})")
            ax.legend(fontsize=8)
        ax.set_title(f"{title + ' — ' if title else ''}{name}")
        ax.set_xlabel("reward r(x, y)")
        ax.set_ylabel("responses")
    return _save(fig, path)


def precision_recall_curve(
    curve: list[dict], path: Path, marks: dict[str, dict] | None = None, title: str = ""
) -> Path:
    """Precision and recall of flagging "unsafe" when σ(score) < t, against t; `marks` labels points
    such as the paper's t = 0.15 or the threshold picked for a target precision."""
    fig = Figure(figsize=(6, 4.5))
    ax = fig.add_subplot()
    ts = [row["threshold"] for row in curve]
    nan = float("nan")
    ax.plot(ts, [nan if row["precision"] is None else row["precision"] for row in curve], label="precision")
    ax.plot(ts, [nan if row["recall"] is None else row["recall"] for row in curve], label="recall")
    for label, row in (marks or {}).items():
        if row:
            show = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
            ax.axvline(row["threshold"], color="grey", linestyle=":", linewidth=1)
            text = f"{label}\nP={show(row['precision'])} R={show(row['recall'])}"
            ax.annotate(text, (row["threshold"], 0.03), fontsize=7, rotation=90, va="bottom", ha="right")
    ax.set_xlabel("threshold t (flag unsafe when σ(safety score) < t)")
    ax.set_ylabel("precision / recall for unsafe responses")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.05)
    ax.set_title(title or "safety RM flagging")
    ax.legend(fontsize=8)
    return _save(fig, path)
