"""Checks before any compute: is there room on the output disk for what the recipe will write?

A run that dies of a full disk at hour 20 has lost the hours since its last checkpoint, and the
error (an OSError deep in safetensors) does not say what to do. The estimate is rough on purpose:
what each unfinished stage saves (a model's size for full weights or merged LoRA weights, a
twentieth of it for an adapter) plus the largest resume scratch (3x the model for a full
fine-tune: weights and AdamW's two moments). Writability itself is checked by pipeline.check_writable.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from alignment.errors import PaddockError

GB = 1e9


def model_bytes(name_or_path: str) -> int:
    """Size of a local checkpoint's weight files; 0 when the recipe names a model not yet on disk
    (a default model is converted on first use, so its size is not known without doing that)."""
    path = Path(str(name_or_path)).expanduser()
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.glob("*.safetensors"))


def needed_bytes(recipe, run_dir: Path) -> int:
    size = model_bytes(recipe.model.name_or_path)
    full = recipe.model.lora is None
    per_stage = size if (full or recipe.model.merge_lora) else size // 20
    scratch = 3 * size if full else size // 10
    todo = [
        s for s in recipe.stages if s.type != "evaluation" and not (run_dir / s.name / "COMPLETE").is_file()
    ]
    return per_stage * len(todo) + (scratch if todo else 0)


def check_free_space(recipe, run_dir: Path) -> None:
    need = needed_bytes(recipe, run_dir)
    free = shutil.disk_usage(run_dir).free
    if need > free:
        raise PaddockError(
            f"{run_dir}: {free / GB:.2f} GB free but the recipe will write about {need / GB:.2f} GB "
            f"(model {model_bytes(recipe.model.name_or_path) / GB:.2f} GB); free space or set output_dir"
        )
