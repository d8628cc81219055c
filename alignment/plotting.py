"""Figures for stage summaries and reports: built without pyplot, written atomically.

`figure()` makes a matplotlib Figure with no global state and no display (safe in a training process
or a thread, no backend to choose); `save_plot()` lays it out and writes it to a temporary name that
is then renamed, so a run killed mid-save leaves no torn PNG behind.
"""

from __future__ import annotations

import os
from pathlib import Path


def figure(nrows: int = 1, ncols: int = 1, figsize=(6, 4), **subplots):
    """(figure, axes) as `pyplot.subplots` gives them."""
    from matplotlib.figure import Figure  # here: importing a stage should not load matplotlib

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots)


def save_figure(fig, path, **savefig) -> None:
    """`fig` to `path` (its directory made), through a temporary file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")  # not *.png, so a leftover is never listed as a plot
    fig.savefig(tmp, format=path.suffix.lstrip(".") or "png", **savefig)
    os.replace(tmp, path)


def save_plot(fig, path, dpi: int = 100, root: Path | None = None) -> str:
    """Lay out and save `fig`; returns the path, relative to `root` when given (as summaries list it)."""
    fig.tight_layout()
    save_figure(fig, path, dpi=dpi)
    return str(Path(path).relative_to(root)) if root is not None else str(path)
