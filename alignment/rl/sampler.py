"""A merged copy of a LoRA policy to sample from.

Why: PEFT's LoRA layers add two small matmuls, a dropout call and dtype casts to each of the seven
projections of every layer, and in a decode step (a few rows, one token) those small ops cost more
than the base model's own matmuls: a 16 x 64-token rollout of SmolLM2-135M took 28.1 s through the
PEFT policy and 12.0 s with the adapter merged into bf16 weights on 1 thread of a loaded machine,
7.04 s against 3.40 s on 2 threads (benchmarks/RESULTS.md). Merging
in place would round the frozen fp32 base on every unmerge, so the policy is copied once into a
plain model in the sampling precision and each LoRA projection's weight is rewritten as
W + scaling * B @ A before a rollout.

Only sampling goes through the copy. By default the log-probs PPO's ratio needs are recomputed by
the policy itself, so the copy's rounding changes which tokens are drawn (by at most bf16 rounding
of the distribution) but never the loss; with `rollout_logprobs: sampler` (opt-in) the loss takes
the copy's own log-probs instead, rounding included.
"""

from __future__ import annotations

import torch
from torch import nn


def lora_layers(inner: nn.Module) -> dict[str, nn.Module]:
    from peft.tuners.lora import LoraLayer

    return {name: m for name, m in inner.named_modules() if isinstance(m, LoraLayer)}


def can_merge(policy) -> bool:
    """True for a PEFT LoRA policy whose wrapped layers are plain nn.Linear (not 4-bit QLoRA)."""
    if not hasattr(policy, "peft_config"):
        return False
    layers = lora_layers(policy.get_base_model())
    return bool(layers) and all(type(m.base_layer) is nn.Linear for m in layers.values())


class MergedSampler:
    """`model`: a plain causal LM equal to the policy's active adapter merged into its base."""

    def __init__(self, policy, dtype: torch.dtype = torch.bfloat16, adapter: str = "default"):
        if not can_merge(policy):
            raise ValueError("MergedSampler needs a PEFT LoRA policy over nn.Linear layers")
        self.policy, self.adapter = policy, adapter
        inner = policy.get_base_model()
        with torch.device("meta"):
            model = type(inner)(inner.config)
        model = model.to_empty(device=inner.lm_head.weight.device).eval()
        model.tie_weights()
        for param in model.parameters():  # buffers (RoPE frequencies) keep their fp32
            param.data = param.data.to(dtype)
        self.model = model.requires_grad_(False)
        lora = lora_layers(inner)
        sources = dict(inner.named_parameters())
        sources.update(inner.named_buffers())
        # (target, source, LoRA layer whose delta to add or None) for what `refresh` rewrites: the
        # adapted weights and anything trainable. The frozen rest (embeddings, norms, buffers) is
        # copied here once.
        self._copies = []
        with torch.no_grad():
            for name, target in [*self.model.named_parameters(), *self.model.named_buffers()]:
                module_name, _, leaf = name.rpartition(".")
                if module_name in lora:
                    layer = lora[module_name]
                    source, delta = getattr(layer.base_layer, leaf), layer if leaf == "weight" else None
                else:
                    source, delta = sources[name], None
                if delta is None and not source.requires_grad:
                    target.copy_(source)
                else:
                    self._copies.append((target, source, delta))
        self.refresh()

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the policy's current weights in (call after every update, before sampling)."""
        for target, source, layer in self._copies:
            if layer is None:
                target.copy_(source)
            else:
                target.copy_(source + layer.get_delta_weight(self.adapter).to(source.dtype))
