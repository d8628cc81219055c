"""PPO plots: per-iteration training curves, and gold metrics against the proxy reward on one figure
so reward hacking shows (proxy reward up while a gold metric goes down)."""

from __future__ import annotations

from pathlib import Path

from alignment.plotting import figure, save_plot

PANELS = (
    ("reward", ("reward", "reward_helpful", "reward_safety")),
    ("KL to reference (per answer)", ("kl",)),
    ("entropy", ("entropy",)),
    ("losses", ("policy_loss", "value_loss")),
    ("clip fraction", ("clip_fraction", "value_clip_fraction")),
    ("answer length (tokens)", ("response_length",)),
)
GOLD = (
    ("helpful_correct", "gold: helpful correct"),
    ("unsafe_compliance", "gold: unsafe compliance"),
    ("false_refusal", "gold: false refusal"),
)


def plot_ppo(rows: list[dict], evals: list[dict], plots: Path, root: Path) -> list[str]:
    written = []
    fig, axes = figure(2, 3, figsize=(13, 7))
    on_kind = sorted({k for r in rows for k in r if k.startswith("reward_on_")})
    for ax, (title, keys) in zip(axes.flat, PANELS, strict=True):
        if title == "reward":  # the batch mean moves with the prompt mix; per kind it does not
            keys = (*keys, *on_kind)
        for key in keys:
            points = [(r["step"], r[key]) for r in rows if key in r]
            if points:
                ax.plot(*zip(*points, strict=True), label=key)
        ax.set_title(title)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        if len(keys) > 1:
            ax.legend(fontsize=7)
    written.append(save_plot(fig, plots / "ppo_training.png", dpi=90, root=root))

    if evals:
        fig, ax = figure(figsize=(7, 4.5))
        steps = [e["iteration"] for e in evals]
        ax.plot(steps, [e.get("proxy_reward") for e in evals], "k-o", label="proxy reward (held-out, RMs)")
        ax.set_xlabel("iteration")
        ax.set_ylabel("combined RM reward (logit)")
        gold_ax = ax.twinx()
        for key, label in GOLD:
            if any(key in e for e in evals):
                gold_ax.plot(steps, [e.get(key) for e in evals], "--s", label=label)
        gold_ax.set_ylabel("gold rate")
        gold_ax.set_ylim(-0.02, 1.02)
        handles = ax.get_legend_handles_labels()[0] + gold_ax.get_legend_handles_labels()[0]
        labels = ax.get_legend_handles_labels()[1] + gold_ax.get_legend_handles_labels()[1]
        ax.legend(handles, labels, fontsize=8, loc="best")
        ax.set_title("Held-out proxy reward vs gold graders")
        ax.grid(alpha=0.3)
        written.append(save_plot(fig, plots / "gold_vs_proxy.png", dpi=90, root=root))
    return written
