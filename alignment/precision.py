"""bf16 autocast on the device a model runs on.

`precision: bf16-autocast` means bf16 matmuls wherever the model is: the CPU on one process, each
process's GPU once accelerate has moved the model there. An autocast context opened for "cpu"
does nothing to CUDA tensors, so every site asks the model for its device instead of naming one.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch

from alignment.placement import module_device


def device_type(model: torch.nn.Module) -> str:
    """ "cpu", "cuda", ...: where the model's first parameter lives (the CPU for a model without any)."""
    return module_device(model).type


def bf16_autocast(model: torch.nn.Module, enabled: bool = True):
    """bf16 autocast for `model`'s device, or a no-op context when not enabled."""
    return torch.autocast(device_type(model), dtype=torch.bfloat16) if enabled else nullcontext()
