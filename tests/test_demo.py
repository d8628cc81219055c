"""Smoke runs of the user-facing commands on the embedded default model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_chat_answers_through_the_engine(smollm2_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "alignment.cli",
            "chat",
            "smollm2-135m",
            "--prompt",
            "What is the capital of France?",
            "--max-new-tokens",
            "16",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "The capital of France is Paris."
