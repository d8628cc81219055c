"""A stage that picks up from a checkpoint says so, with the step and the checkpoint, once."""

from __future__ import annotations

import pytest
import torch

from alignment import distributed
from alignment.base_model.modeling import PaddockLlamaForCausalLM
from alignment.runs import StageDir
from alignment.stages.sft import collate, lm_loss
from alignment.training.loop import LoopSettings, train
from tests.conftest import tiny_config

SETTINGS = dict(
    learning_rate=1e-3, epochs=1, batch_size=2, checkpoint_every=2, warmup_ratio=0.0, progress=False
)


class Interrupted(Exception):
    pass


def examples(n: int = 12) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    rows = [torch.randint(3, 200, (6,), generator=g).tolist() for _ in range(n)]
    return [{"input_ids": row, "labels": row} for row in rows]


def fails_at_step(step: int):
    """lm_loss, except that it raises on the first micro-batch of optimizer step `step`."""
    calls = []

    def loss(model, batch, num_items):
        calls.append(1)
        if len(calls) == step:  # grad_accum 1: one call per step
            raise Interrupted
        return lm_loss(model, batch, num_items)

    return loss


def run(stage: StageDir, loss_fn=lm_loss):
    torch.manual_seed(0)
    model = PaddockLlamaForCausalLM(tiny_config())
    data = examples()  # 12 examples, batch 2: 6 steps
    settings = LoopSettings(**SETTINGS)
    train(model, data, lambda b: collate(b, 0), loss_fn, settings, stage, description="tiny/sft")


def test_a_resumed_loop_says_from_which_step_and_checkpoint(tmp_path, capsys):
    stage = StageDir(tmp_path / "sft", tensorboard=False)
    with pytest.raises(Interrupted):
        run(stage, fails_at_step(5))  # checkpoints at 2 and 4 are written
    first = capsys.readouterr().out
    assert "resumed" not in first

    run(stage)
    lines = [line for line in capsys.readouterr().out.splitlines() if "resumed" in line]
    checkpoint = tmp_path / "sft/checkpoints/step-0000004"
    assert lines == [f"[tiny/sft] resumed from step 4 of 6 ({checkpoint})"]
    assert [row["step"] for row in stage.metrics.rows()] == [1, 2, 3, 4, 5, 6]


def test_only_the_main_process_says_it_resumed(tmp_path, capsys, monkeypatch):
    stage = StageDir(tmp_path / "sft", tensorboard=False)
    with pytest.raises(Interrupted):
        run(stage, fails_at_step(3))
    monkeypatch.setattr(distributed, "is_main", lambda: False)
    run(stage)
    assert "resumed" not in capsys.readouterr().out
