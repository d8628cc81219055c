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

from collections.abc import Iterator

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


@torch.no_grad()
def merged_weights(
    policy, adapter: str = "default", updated_only: bool = False
) -> Iterator[tuple[str, torch.Tensor]]:
    """The causal LM's parameters under the plain (transformers) model's names, each LoRA-adapted
    weight with the adapter's delta merged in (W + scaling * B @ A, in W's dtype), on the policy's
    device. The adapters' own A/B matrices and PEFT's modules_to_save copies are left out (a wrapped
    module's original weights stand under the plain name); buffers are not included. A model
    without PEFT gives its own parameters, detached.

    One weight at a time, so merging never holds more than one extra weight. `updated_only`: only
    what an optimizer step can change (the adapted weights and any trainable parameter)."""
    peft = hasattr(policy, "peft_config")
    inner = policy.get_base_model() if peft else policy
    lora = lora_layers(inner) if peft else {}
    for name, param in inner.named_parameters():
        if ".lora_" in name or ".modules_to_save." in name:
            continue
        module_name, _, leaf = name.replace(".base_layer.", ".").rpartition(".")
        adapted = module_name in lora and leaf == "weight"
        if updated_only and not (adapted or param.requires_grad):
            continue
        value = param.detach()
        if adapted:
            value = value + lora[module_name].get_delta_weight(adapter).to(value.dtype)
        yield name.replace(".base_layer.", ".").replace(".original_module.", "."), value


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
        self._targets = dict(self.model.named_parameters())
        # Everything is copied here once (the copy starts out empty); `refresh` rewrites only what
        # an update can change, the adapted weights and anything trainable.
        with torch.no_grad():
            copied = set()
            for name, value in merged_weights(policy, adapter):
                self._targets[name].copy_(value)
                copied.add(name)
            if copied != set(self._targets):
                raise ValueError(f"MergedSampler: no policy weight for {sorted(set(self._targets) - copied)}")
            buffers = dict(inner.named_buffers())
            for name, target in self.model.named_buffers():
                target.copy_(buffers[name])

    @torch.no_grad()
    def refresh(self) -> None:
        """Copy the policy's current weights in (call after every update, before sampling)."""
        for name, value in merged_weights(self.policy, self.adapter, updated_only=True):
            self._targets[name].copy_(value)
