"""Run directories: `runs/<run-name>/<stage>/` with model, metrics.jsonl, summary.json, plots and a
completion marker written last.

Every file is written to a temp name and renamed, and the marker comes after everything else, so
a stage killed at any point is either unfinished (and resumes from its checkpoints) or complete.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

COMPLETE = "COMPLETE"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_json(path: Path, data) -> None:
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


class Metrics:
    """metrics.jsonl plus optional TensorBoard. Lines after a resumed checkpoint are dropped, so a
    resumed run's file equals an uninterrupted one."""

    def __init__(self, path: Path, tensorboard_dir: Path | None = None, wandb_name: str | None = None):
        self.path = path
        self.tensorboard_dir = tensorboard_dir
        self.wandb_name = wandb_name  # set only when a recipe's report_to names wandb
        self._writer = None
        self._wandb = None

    def rows(self) -> list[dict]:
        if not self.path.is_file():
            return []
        lines = [line for line in self.path.read_text().splitlines() if line.strip()]
        rows = [json.loads(line) for line in lines[:-1]]
        with contextlib.suppress(json.JSONDecodeError):  # a line torn by a kill mid-append:
            rows += [json.loads(line) for line in lines[-1:]]  # the resumed run logs that step again
        return rows

    def truncate_after(self, step: int) -> None:
        kept = [row for row in self.rows() if row.get("step", 0) <= step]
        write_atomic(self.path, "".join(json.dumps(row) + "\n" for row in kept))

    def log(self, row: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.tensorboard_dir is not None:
            writer = self._tensorboard()
            for key, value in row.items():
                if key != "step" and isinstance(value, int | float):
                    writer.add_scalar(key, value, row.get("step", 0))
            writer.flush()
        if self.wandb_name is not None:
            self._wandb_run().log(
                {k: v for k, v in row.items() if isinstance(v, int | float)}, step=row.get("step")
            )

    def _wandb_run(self):
        if self._wandb is None:
            try:
                import wandb
            except ImportError:
                from alignment.errors import PaddockError

                raise PaddockError(
                    "report_to names wandb but it is not installed: pip install wandb"
                ) from None
            self._wandb = wandb.init(project="paddock", name=self.wandb_name, dir=str(self.path.parent))
        return self._wandb

    def _tensorboard(self):
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.tensorboard_dir))
        return self._writer

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        if self._wandb is not None:
            self._wandb.finish()


class StageDir:
    def __init__(self, root: Path, tensorboard: bool = True, wandb_name: str | None = None):
        self.root = Path(root)
        self.model = self.root / "model"
        self.checkpoints = self.root / "checkpoints"
        self.plots = self.root / "plots"
        self.summary_path = self.root / "summary.json"
        self.metrics = Metrics(
            self.root / "metrics.jsonl", self.root / "tensorboard" if tensorboard else None
        )

    @property
    def complete(self) -> bool:
        return (self.root / COMPLETE).is_file()

    def write_summary(self, summary: dict) -> None:
        write_json(self.summary_path, summary)

    def mark_complete(self) -> None:
        self.metrics.close()
        write_atomic(self.root / COMPLETE, "ok\n")
