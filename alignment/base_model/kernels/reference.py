"""Plain-torch reference kernels: the definition every tuned kernel is tested against.

Why keep them: they are the semantics (including dtype promotion and the fp32 normalisation of
RMSNorm), they run on any device, and `PADDOCK_KERNELS=reference` switches the model back to them
when a tuned kernel is suspected. They are written for clarity, not memory: the fused linear ops
build the full [tokens, vocab] logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    x32 = x.float()
    return weight * (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, D]; cos, sin [B, T, D] (B may be 1)."""
    cos, sin = cos[:, None], sin[:, None]
    return x * cos + rotate_half(x) * sin


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def _logits(hidden, weight, bias, compute_dtype) -> torch.Tensor:
    bias = None if bias is None else bias.to(compute_dtype)
    return F.linear(hidden.to(compute_dtype), weight.to(compute_dtype), bias).float()


def fused_linear_cross_entropy(
    hidden, weight, targets, bias=None, *, ignore_index=-100, reduction="mean", compute_dtype=None, **_
) -> torch.Tensor:
    logits = _logits(hidden, weight, bias, compute_dtype or hidden.dtype)
    losses = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=ignore_index, reduction="none"
    )
    if reduction == "sum":
        return losses.sum()
    # Mean over the tokens that count; an all-padding batch gives 0, not 0/0.
    return losses.sum() / (targets != ignore_index).sum().clamp(min=1)


def fused_linear_logprobs(
    hidden, weight, tokens, bias=None, *, temperature=1.0, with_entropy=True, compute_dtype=None, **_
) -> tuple[torch.Tensor, torch.Tensor | None]:
    logits = _logits(hidden, weight, bias, compute_dtype or hidden.dtype) / temperature
    log_probs = logits.log_softmax(-1)
    token_logprobs = log_probs.gather(-1, tokens[..., None]).squeeze(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1) if with_entropy else None
    return token_logprobs, entropy
