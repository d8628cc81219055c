"""Fused LM head + cross-entropy / token log-prob / entropy, walking the logits in chunks.

Why: the logits are the largest tensor in a small model's step. For SmolLM2 (vocab 49152) a batch
of 8 x 1024 tokens has 400M logits: 1.6 GB in fp32, again for their gradient, and again for the
softmax autograd keeps. Here the tokens are taken `chunk_size` rows at a time and, optionally, the
vocabulary `vocab_chunk_size` columns at a time, so only one [chunk, vocab_chunk] block exists at
once; block statistics (logsumexp, entropy) merge exactly across vocabulary blocks.

Cross-entropy's upstream gradient is a scalar known to be linear, so (the Liger-Kernel idea) its
gradients are computed during the forward pass, reusing each chunk's logits while they exist:
3 matmuls instead of 4 when the vocabulary is one block. The log-prob/entropy op's upstream
gradients are per token and unknown at forward time, so its backward recomputes the logits.

The matmuls run in `compute_dtype` (bf16 where the caller allows it: on CPU that hits AMX) and are
turned into fp32 logits; all softmax math is fp32. In backward the per-token loss weights and the
temperature go on the [rows, hidden] operands of the matmuls, not on the [rows, vocab] gradient
block, which saves a pass over the block. The per-block math comes from a backend module
(torch_ops or triton_ops) with the same `block_stats`, `block_grad` and `cross_entropy_block`.
Measured on the 2-core CPU (SmolLM2 head, 2048 tokens, bf16 autocast, forward + backward): CE 1.4x
faster than the reference with half its peak memory; log-probs + entropy 1.7x faster.
"""

from __future__ import annotations

import torch

# Elements of one fp32 logits block when chunk_size is not given: 256 MiB (SmolLM2: 1365 tokens).
# Bigger chunks are faster on CPU: each chunk adds into the fp32 [vocab, hidden] weight gradient.
LOGITS_BUDGET = 1 << 26


def _backend_module(backend: str):
    if backend == "triton":
        from alignment.base_model.kernels import triton_ops

        return triton_ops
    from alignment.base_model.kernels import torch_ops

    return torch_ops


def _spans(total: int, size: int) -> list[tuple[int, int]]:
    return [(start, min(start + size, total)) for start in range(0, total, size)]


def _balanced(total: int, most: int) -> int:
    """Chunk size <= most that splits total evenly: 2048 rows at most 1365 -> 2 x 1024, not 1365 + 683."""
    return -(-total // -(-total // most)) if total else most


class _Blocks:
    """The chunk plan and the reused logits buffers of one call.

    Buffers are allocated once per call, flat, and viewed as [rows, cols] per block: a fresh
    [rows, vocab] tensor per chunk would cost (on CPU) as much as a softmax pass in page faults.
    """

    def __init__(self, hidden, weight, bias, scale, chunk_size, vocab_chunk_size, compute_dtype, backend):
        n, vocab = hidden.shape[0], weight.shape[0]
        vocab_chunk = min(vocab_chunk_size or vocab, vocab)
        rows = chunk_size or _balanced(n, max(1, LOGITS_BUDGET // vocab_chunk))
        # An empty batch still gets one (empty) chunk, so every result has its usual structure.
        self.token_spans, self.vocab_spans = _spans(n, rows) or [(0, 0)], _spans(vocab, vocab_chunk)
        self.ops = _backend_module(backend)
        self.scale = scale
        self.h, self.w = hidden.to(compute_dtype), weight.to(compute_dtype)
        self.b = None if bias is None else bias.float() * scale
        size = min(rows, n) * vocab_chunk
        self._z = torch.empty(size, dtype=torch.float32, device=hidden.device)
        self._low = None
        if compute_dtype != torch.float32:
            self._low = torch.empty(size, dtype=compute_dtype, device=hidden.device)

    def logits(self, rows: slice, v0: int, v1: int) -> torch.Tensor:
        h, w = self.h[rows], self.w[v0:v1]
        z = self._z[: h.shape[0] * w.shape[0]].view(h.shape[0], w.shape[0])
        if self._low is None:
            torch.mm(h, w.T, out=z)
        else:
            z.copy_(torch.mm(h, w.T, out=self._low[: z.numel()].view(z.shape)))
        if self.scale != 1.0:  # on the fp32 logits: scaling a bf16 operand would add a rounding
            z.mul_(self.scale)
        return z if self.b is None else z.add_(self.b[v0:v1])

    def backward(self, g, row_scale, rows: slice, v0: int, v1: int, grads) -> None:
        """Add d loss / d z = row_scale[:, None] * g (for logits rows x v0:v1) to the gradients."""
        grad_h, grad_w, grad_b = grads
        # z = scale (h w^T + b): the scale and the row weights go on the [rows, hidden] operands.
        out_scale = self.scale if row_scale is None else row_scale * self.scale
        if grad_b is not None:
            grad_b[v0:v1] += g.sum(0) * out_scale if row_scale is None else out_scale @ g
        low = g if self._low is None else self._low[: g.numel()].view(g.shape).copy_(g)
        h = self.h[rows]
        if grad_h is not None:
            gh = low @ self.w[v0:v1]
            grad_h[rows] += gh * (out_scale if row_scale is None else out_scale[:, None])
        if grad_w is not None:
            if row_scale is not None:
                h = h * out_scale[:, None].to(h.dtype)
            elif self.scale != 1.0:
                h = h * self.scale
            if grad_w.dtype == low.dtype:
                grad_w[v0:v1].addmm_(low.T, h)
            else:
                grad_w[v0:v1] += low.T @ h

    def stats(self, rows: slice, targets, with_entropy: bool):
        acc = None
        for v0, v1 in self.vocab_spans:
            acc = self.ops.block_stats(self.logits(rows, v0, v1), targets, v0, acc, with_entropy)
        return acc

    def grads(self, rows: slice, targets, lse, ent, g_lp, g_ent, grads) -> None:
        for v0, v1 in self.vocab_spans:
            z = self.logits(rows, v0, v1)
            g, row_scale = self.ops.block_grad(z, targets, v0, lse, ent, g_lp, g_ent)
            self.backward(g, row_scale, rows, v0, v1, grads)


def _grad_buffers(need, hidden, weight, bias):
    return tuple(
        torch.zeros(t.shape, dtype=torch.float32, device=t.device) if n else None
        for n, t in zip(need, (hidden, weight, bias), strict=True)
    )


def _cast(grads, like):
    return tuple(None if g is None else g.to(t.dtype) for g, t in zip(grads, like, strict=True))


def _cross_entropy(hidden, weight, bias, targets, ignore_index, reduction, chunk, vchunk, cd, backend, need):
    valid = (targets != ignore_index).float()
    coef = 1.0 / valid.sum().clamp(min=1.0) if reduction == "mean" else torch.ones((), device=valid.device)
    weights = valid * coef  # d loss / d (lse - target logit) per token: 0 for ignored ones
    grads = _grad_buffers(need, hidden, weight, bias)
    loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
    with torch.autocast(hidden.device.type, enabled=False):
        blocks = _Blocks(hidden, weight, bias, 1.0, chunk, vchunk, cd, backend)
        one_block = len(blocks.vocab_spans) == 1
        for i0, i1 in blocks.token_spans:
            rows, t, wt = slice(i0, i1), targets[i0:i1], weights[i0:i1]
            if one_block and any(need):
                # Gradients from the logits while they exist: 3 matmuls per chunk instead of 4.
                z = blocks.logits(rows, 0, weight.shape[0])
                lse, tz = blocks.ops.cross_entropy_block(z, t)
                blocks.backward(z, wt, rows, 0, weight.shape[0], grads)
            else:
                lse, _, tz = blocks.stats(rows, t, with_entropy=False)
                if any(need):
                    blocks.grads(rows, t, lse, None, -wt, None, grads)
            loss = loss + (wt * (lse - tz)).sum()
    return loss, _cast(grads, (hidden, weight, bias))


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ignore_index, reduction, chunk, vchunk, cd, backend):
        need = tuple(ctx.needs_input_grad[:3])
        loss, grads = _cross_entropy(
            hidden, weight, bias, targets, ignore_index, reduction, chunk, vchunk, cd, backend, need
        )
        ctx.save_for_backward(*grads)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grads = tuple(None if g is None else g * grad_loss for g in ctx.saved_tensors)
        return (*grads, *([None] * 7))


def _logprob_stats(hidden, weight, bias, tokens, scale, chunk, vchunk, cd, backend, with_entropy):
    with torch.autocast(hidden.device.type, enabled=False):
        blocks = _Blocks(hidden, weight, bias, scale, chunk, vchunk, cd, backend)
        parts = [blocks.stats(slice(i0, i1), tokens[i0:i1], with_entropy) for i0, i1 in blocks.token_spans]
    lse, ent, tz = (None if p[0] is None else torch.cat(p) for p in zip(*parts, strict=True))
    return lse, ent, tz


class _LinearLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, tokens, scale, chunk, vchunk, with_entropy, cd, backend):
        lse, ent, tz = _logprob_stats(
            hidden, weight, bias, tokens, scale, chunk, vchunk, cd, backend, with_entropy
        )
        ctx.save_for_backward(hidden, weight, bias, tokens, lse, ent)
        ctx.args = (scale, chunk, vchunk, cd, backend)
        ctx.set_materialize_grads(False)
        logp = tz - lse
        return (logp, ent) if with_entropy else logp

    @staticmethod
    def backward(ctx, g_lp, g_ent=None):
        hidden, weight, bias, tokens, lse, ent = ctx.saved_tensors
        need = tuple(ctx.needs_input_grad[:3])
        if (g_lp is None and g_ent is None) or not any(need):
            return (None,) * 10
        g_lp = torch.zeros_like(lse) if g_lp is None else g_lp.float()
        g_ent = None if g_ent is None else g_ent.float()
        grads = _grad_buffers(need, hidden, weight, bias)
        with torch.autocast(hidden.device.type, enabled=False):
            blocks = _Blocks(hidden, weight, bias, *ctx.args)
            for i0, i1 in blocks.token_spans:
                r = slice(i0, i1)
                e, ge = (None, None) if g_ent is None else (ent[r], g_ent[r])
                blocks.grads(r, tokens[r], lse[r], e, g_lp[r], ge, grads)
        return (*_cast(grads, (hidden, weight, bias)), *([None] * 7))


def _wants_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def cross_entropy(
    hidden,
    weight,
    targets,
    bias,
    *,
    ignore_index,
    reduction,
    chunk_size,
    vocab_chunk_size,
    compute_dtype,
    backend,
) -> torch.Tensor:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', not {reduction!r}")
    h, t = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1)
    args = (ignore_index, reduction, chunk_size, vocab_chunk_size, compute_dtype, backend)
    if _wants_grad(hidden, weight, bias):
        return _LinearCrossEntropy.apply(h, weight, bias, t, *args)
    with torch.no_grad():
        return _cross_entropy(h, weight, bias, t, *args, need=(False, False, False))[0]


def logprobs(
    hidden,
    weight,
    tokens,
    bias,
    *,
    temperature,
    chunk_size,
    vocab_chunk_size,
    with_entropy,
    compute_dtype,
    backend,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    h, t = hidden.reshape(-1, hidden.shape[-1]), tokens.reshape(-1)
    scale = 1.0 / temperature
    if _wants_grad(hidden, weight, bias):
        out = _LinearLogprobs.apply(
            h, weight, bias, t, scale, chunk_size, vocab_chunk_size, with_entropy, compute_dtype, backend
        )
        logp, ent = out if with_entropy else (out, None)
    else:
        with torch.no_grad():
            lse, ent, tz = _logprob_stats(
                h, weight, bias, t, scale, chunk_size, vocab_chunk_size, compute_dtype, backend, with_entropy
            )
            logp = tz - lse
    return logp.view(tokens.shape), None if ent is None else ent.view(tokens.shape)
