"""Paddock's kernels: one entry point per op, dispatched to the implementation that suits the tensor.

Why a dispatcher: the model code calls `rms_norm(...)` once and gets Triton on CUDA, tuned torch on
CPU, and the plain-torch reference whenever it is forced, so a suspected kernel bug is one setting
away from being confirmed or ruled out, with no change to the model.

Backends: "reference" (reference.py), "torch" (torch_ops.py, any device), "triton" (triton_ops.py;
CUDA, or CPU tensors under TRITON_INTERPRET=1 for tests). The choice, first match wins:
`use_kernels(mode)` / `use_reference_kernels()` context managers, then the PADDOCK_KERNELS
environment variable, then "auto" (Triton for CUDA tensors when it is installed, torch otherwise).
Triton is imported only when a Triton kernel is about to run.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from contextlib import contextmanager

import torch

from alignment.base_model.kernels import fused_linear, reference, torch_ops

MODES = ("auto", "reference", "torch", "triton")
ENV_VAR = "PADDOCK_KERNELS"
_forced: str | None = None  # a plain global, not a ContextVar: torch.compile guards on it cheaply

__all__ = [
    "MODES",
    "apply_rope",
    "backend_for",
    "fused_linear_cross_entropy",
    "fused_linear_logprobs",
    "kernel_mode",
    "rms_norm",
    "swiglu",
    "triton_available",
    "use_kernels",
    "use_reference_kernels",
]


@functools.cache
def triton_available() -> bool:
    return importlib.util.find_spec("triton") is not None


def kernel_mode() -> str:
    mode = _forced or os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"{ENV_VAR}={mode!r} is not one of {MODES}")
    return mode


@contextmanager
def use_kernels(mode: str):
    """Force a backend ("auto", "reference", "torch" or "triton") inside the block."""
    global _forced
    if mode not in MODES:
        raise ValueError(f"kernel mode {mode!r} is not one of {MODES}")
    previous, _forced = _forced, mode
    try:
        yield
    finally:
        _forced = previous


def use_reference_kernels():
    return use_kernels("reference")


def backend_for(device: torch.device) -> str:
    """The backend the fused ops use for tensors on `device`: the forced mode, or in `auto` the
    Triton kernels on CUDA (when Triton is installed) and torch's ops elsewhere."""
    mode = kernel_mode()
    if mode == "auto":
        return "triton" if device.type == "cuda" and triton_available() else "torch"
    if mode == "triton" and not triton_available():
        raise RuntimeError(f"{ENV_VAR}=triton but triton is not installed")
    return mode


def _backend(t: torch.Tensor) -> str:
    return backend_for(t.device)


def _module(backend: str):
    if backend == "triton":
        from alignment.base_model.kernels import triton_ops

        return triton_ops
    return reference if backend == "reference" else torch_ops


def _compute_dtype(hidden: torch.Tensor, weight: torch.Tensor, requested) -> torch.dtype:
    if requested is not None:
        return requested
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return torch.promote_types(hidden.dtype, weight.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """weight * (x normalised in fp32, cast back to x's dtype); x [..., C], weight [C]."""
    return _module(_backend(x)).rms_norm(x, weight, eps)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, heads, T, D]; cos, sin [B or 1, T, D] (halves convention). cos/sin get no gradient from
    the tuned kernels; if they require one the reference runs."""
    backend = "reference" if cos.requires_grad or sin.requires_grad else _backend(x)
    return _module(backend).apply_rope(x, cos, sin)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    """silu(gate) * up, the activation between Llama's gate/up and down projections."""
    return _module(_backend(gate)).swiglu(gate, up)


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    ignore_index: int = -100,
    reduction: str = "mean",
    chunk_size: int | None = None,
    vocab_chunk_size: int | None = None,
    compute_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Cross-entropy of (hidden @ weight.T + bias) against targets without the full logits.

    hidden [..., C], weight [V, C], targets [...]. "mean" averages over non-ignored tokens (0 if none).
    chunk_size: tokens per chunk (default: a ~32 MiB logits block); vocab_chunk_size: vocabulary
    columns per block (default: all). compute_dtype: matmul dtype (default: the active autocast
    dtype, else the inputs'); logits and softmax are fp32 either way.
    """
    backend = _backend(hidden)
    kwargs = dict(
        ignore_index=ignore_index,
        reduction=reduction,
        chunk_size=chunk_size,
        vocab_chunk_size=vocab_chunk_size,
        compute_dtype=_compute_dtype(hidden, weight, compute_dtype),
    )
    if backend == "reference":
        return reference.fused_linear_cross_entropy(hidden, weight, targets, bias, **kwargs)
    return fused_linear.cross_entropy(hidden, weight, targets, bias, backend=backend, **kwargs)


def fused_linear_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    tokens: torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    temperature: float = 1.0,
    chunk_size: int | None = None,
    vocab_chunk_size: int | None = None,
    with_entropy: bool = True,
    compute_dtype: torch.dtype | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(log-prob of `tokens`, entropy) under softmax((hidden @ weight.T + bias) / temperature).

    Shapes as tokens. Both are differentiable in hidden, weight and bias; entropy is None unless
    with_entropy. Tokens must be valid ids (mask padding afterwards). Chunking as in the CE.
    """
    backend = _backend(hidden)
    kwargs = dict(
        temperature=temperature,
        chunk_size=chunk_size,
        vocab_chunk_size=vocab_chunk_size,
        with_entropy=with_entropy,
        compute_dtype=_compute_dtype(hidden, weight, compute_dtype),
    )
    if backend == "reference":
        return reference.fused_linear_logprobs(hidden, weight, tokens, bias, **kwargs)
    return fused_linear.logprobs(hidden, weight, tokens, bias, backend=backend, **kwargs)
