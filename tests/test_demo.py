"""End-to-end smoke run of the main job (`make demo`) on the embedded default model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_demo_answers_chat_prompts(smollm2_path):
    result = subprocess.run(
        [sys.executable, "-m", "alignment.demo"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    assert f"default model: {smollm2_path}" in result.stdout
    assert "smollm2-135m> The capital of France is Paris." in result.stdout
    assert result.stdout.count("smollm2-135m>") == 3
