"""The CLI starts fast: `paddock --help` and `--version` load no torch or transformers (they took
8-12 s to print when every command imported the model code), and the model API is still
reachable from `alignment` when it is used."""

from __future__ import annotations

import subprocess
import sys


def run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_building_the_cli_and_its_help_import_no_torch():
    out = run(
        "import sys; from alignment.cli import build_parser; build_parser().format_help(); "
        "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    )
    assert out.strip() == "[]"


def test_version_prints_the_package_version():
    from alignment import __version__

    result = subprocess.run(
        [sys.executable, "-m", "alignment.cli", "--version"], capture_output=True, text=True
    )
    assert result.returncode == 0 and result.stdout.strip() == f"paddock {__version__}"


def test_the_model_api_loads_on_first_use():
    out = run(
        "import sys, alignment; before = 'torch' in sys.modules; f = alignment.load_model; "
        "from alignment.base_model import PaddockLlamaForCausalLM; "
        "print(before, 'torch' in sys.modules, f.__module__, PaddockLlamaForCausalLM.__name__)"
    )
    assert out.split() == ["False", "True", "alignment.base_model.loading", "PaddockLlamaForCausalLM"]
