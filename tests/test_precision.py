"""bf16 autocast follows the model's device (a "cpu" context does nothing to CUDA tensors)."""

from __future__ import annotations

import torch
from torch import nn

from alignment import precision


def test_bf16_autocast_runs_the_model_in_bf16_only_when_enabled():
    layer = nn.Linear(4, 3)
    x = torch.randn(2, 4)
    with precision.bf16_autocast(layer):
        assert layer(x).dtype == torch.bfloat16
    with precision.bf16_autocast(layer, enabled=False):
        assert layer(x).dtype == torch.float32


def test_the_autocast_device_is_the_models(monkeypatch):
    """A model on another device (meta here, standing in for a GPU this machine lacks) gets an
    autocast context for that device, not the CPU's; a model without parameters counts as CPU."""
    opened = []
    monkeypatch.setattr(precision.torch, "autocast", lambda device, **kw: opened.append((device, kw)))
    precision.bf16_autocast(nn.Linear(4, 3, device="meta"))
    precision.bf16_autocast(nn.ReLU())
    assert opened == [("meta", {"dtype": torch.bfloat16}), ("cpu", {"dtype": torch.bfloat16})]
