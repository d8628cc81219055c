"""FSDP2 for the fine-tuning loop: parameters, gradients and optimizer state sharded across
processes, each decoder layer gathered only for its own forward and backward.

Chosen by the launcher: `accelerate launch --config_file recipes/accelerate/fsdp.yaml` sets
ACCELERATE_USE_FSDP (with torchrun, set it yourself). We call torch's `fully_shard` directly rather
than accelerate's FSDP path, because accelerate turns FSDP off on CPU, so its path could not be
tested here; `fully_shard` runs the same on gloo and NCCL.

The loop trains a sharded copy of the stage's model and, at the end, gathers the weights back into
the stage's own (unsharded) model, so everything after training (evaluation, sampling, saving) sees
an ordinary module. While the shards train, the original's parameters hold no storage (empty
tensors of their dtype and device): each process keeps only its shards, not a whole model beside
them. Checkpoints hold full tensors: the trainable weights and an optimizer state keyed by
parameter name, gathered from every process and written by the main one.
"""

from __future__ import annotations

import copy
import os

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

from alignment import distributed
from alignment.base_model.modeling import DecoderLayer

GATHERED = StateDictOptions(full_state_dict=True, cpu_offload=True)  # on the main process only
GATHERED_EVERYWHERE = StateDictOptions(full_state_dict=True)


def requested() -> bool:
    return distributed.enabled() and os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true")


def to_float(value) -> float:
    return float(value.full_tensor() if isinstance(value, DTensor) else value)


class ShardedModel:
    def __init__(self, model):
        distributed.accelerator()  # the process group
        self.model = model
        self.work = copy.deepcopy(model)
        for module in self.work.modules():
            if isinstance(module, DecoderLayer):
                fully_shard(module)
        fully_shard(self.work)
        self.trainable = {name for name, p in self.work.named_parameters() if p.requires_grad}
        for parameter in model.parameters():  # the shards hold the weights now; `finish` refills these
            parameter.data = torch.empty(0, dtype=parameter.dtype, device=parameter.device)

    def checkpoint_state(self, optimizer) -> tuple[dict, dict]:
        """(trainable weights, optimizer state), full tensors; every process must call this (it
        gathers), only the main one gets the values."""
        weights = get_model_state_dict(self.work, options=GATHERED)
        weights = {name: t.contiguous() for name, t in weights.items() if name in self.trainable}
        return weights, get_optimizer_state_dict(self.work, optimizer, options=GATHERED)

    def restore(self, optimizer):
        """For load_training_checkpoint: full tensors from disk into the shards."""

        def restore(weights: dict, optimizer_state: dict) -> None:
            options = StateDictOptions(full_state_dict=True, strict=False)
            set_model_state_dict(self.work, weights, options=options)
            set_optimizer_state_dict(self.work, optimizer, optimizer_state, options=GATHERED_EVERYWHERE)

        return restore

    def finish(self) -> None:
        """Gather the trained weights into the stage's own model, on every process."""
        full = get_model_state_dict(self.work, options=GATHERED_EVERYWHERE)
        with torch.no_grad():
            params = dict(self.model.named_parameters())
            for name, value in full.items():
                if name in params:
                    params[name].data = value.detach().to(params[name].device).clone()
        missing = [name for name, p in params.items() if p.numel() == 0 and name not in full]
        if missing:
            raise RuntimeError(f"FSDP gathered no weights for {missing[:3]}")
        del self.work
