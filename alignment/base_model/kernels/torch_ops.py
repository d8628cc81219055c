"""Tuned torch kernels: the default on CPU and on any device without Triton.

Why hand-written autograd Functions instead of letting autograd record the reference: autograd keeps
each elementary op's inputs alive for backward (RMSNorm's fp32 copy of x and its normalised copy,
SwiGLU's silu(gate)), which on a long sequence is most of the activation memory, and runs one
kernel per elementary op. These save only the inputs (plus a [rows] rstd), recompute the cheap
parts in backward and use fused ATen ops where one exists (addcmul, silu_backward). In eager mode
RMSNorm and RoPE beat the reference by 15-25 %; SwiGLU is ~10 % slower, the price of recomputing
silu instead of storing it. No data-dependent Python branches, so torch.compile can fuse further.
`block_stats`, `block_grad` and `cross_entropy_block` are the per-logits-block math of the fused
linear ops (fused_linear.py); triton_ops provides the same three.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        x32 = x.float()
        rstd = torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return weight * (x32 * rstd).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        x, weight, rstd = ctx.saved_tensors
        xn = x.float() * rstd
        grad = grad.float()
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            gw = grad * weight.float()
            grad_x = (rstd * (gw - xn * (gw * xn).mean(-1, keepdim=True))).to(x.dtype)
        if ctx.needs_input_grad[1]:
            # The weight multiplied xn rounded to x's dtype in forward, so use that value here too.
            grad_w = (grad * xn.to(x.dtype).float()).reshape(-1, x.shape[-1]).sum(0).to(weight.dtype)
        return grad_x, grad_w, None


def _signed_sin(sin):
    # rotate_half(x) * sin == x.roll(D/2) * cat(-sin1, sin2): one roll and one fused multiply-add
    # instead of chunk, neg, cat, mul, add.
    half = sin.shape[-1] // 2
    return torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)


class _RoPE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        cos, signed_sin = cos[:, None], _signed_sin(sin[:, None])
        ctx.save_for_backward(cos, signed_sin)
        ctx.x_dtype = x.dtype
        return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, -1), signed_sin)

    @staticmethod
    def backward(ctx, grad):
        # The transpose of rotate_half is -rotate_half: dx = g cos + (g * signed_sin).roll(D/2).
        cos, signed_sin = ctx.saved_tensors
        rotated = (grad * signed_sin).roll(grad.shape[-1] // 2, -1)
        return torch.addcmul(rotated, grad, cos).to(ctx.x_dtype), None, None


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        ctx.save_for_backward(gate, up)  # not silu(gate): recomputing it is one cheap pass
        return F.silu(gate) * up

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        grad_gate = torch.ops.aten.silu_backward((grad * up).to(gate.dtype), gate)
        return grad_gate, (grad * F.silu(gate)).to(up.dtype)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return _RMSNorm.apply(x, weight, eps)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return _RoPE.apply(x, cos, sin)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return _SwiGLU.apply(gate, up)


# ---- per-block math of the fused linear ops -------------------------------------------------------
# A block is z = logits [rows, cols] (fp32, temperature already applied) of vocabulary columns
# v0 .. v0+cols; the caller owns it and lets these functions overwrite it. Working in place matters on
# CPU: allocating and first-touching a fresh [rows, vocab] tensor costs as much as a softmax pass.


def _target_logit(z, targets, v0):
    local = targets - v0
    inside = (local >= 0) & (local < z.shape[1])
    picked = z.gather(1, local.clamp(0, z.shape[1] - 1)[:, None]).squeeze(1)
    return torch.where(inside, picked, 0.0), local.clamp(0, z.shape[1] - 1)[:, None], inside


def block_stats(z, targets, v0: int, acc, with_entropy: bool):
    """(lse, entropy or None, target logit) of the rows, merged into `acc` (None for the first block)."""
    tz = _target_logit(z, targets, v0)[0]
    m = z.amax(-1, keepdim=True)
    shifted = z.sub_(m)
    if with_entropy:
        e = shifted.exp()
        s = e.sum(-1)
        ent = s.log() - e.mul_(shifted).sum(-1) / s  # -sum q log q with q = e / s
    else:
        s, ent = shifted.exp_().sum(-1), None
    lse = m.squeeze(1) + s.log()
    if acc is None:
        return lse, ent, tz
    lse_a, ent_a, tz_a = acc
    total = torch.logaddexp(lse_a, lse)
    if with_entropy:
        # H = sum_k w_k (H_k - log w_k) with w_k = exp(lse_k - lse): the blocks' share of the mass.
        log_wa, log_wb = lse_a - total, lse - total
        ent = log_wa.exp() * (ent_a - log_wa) + log_wb.exp() * (ent - log_wb)
    return total, ent, tz_a + tz


def block_grad(z, targets, v0: int, lse, ent, g_lp, g_ent):
    """(g, row_scale): d loss / d z = row_scale[:, None] * g (row_scale None means 1), written over z.

    g_lp, g_ent: per-row upstream gradients of the log-prob and entropy (g_ent may be None).
    d logp / dz_j = onehot_j - p_j;  d H / dz_j = -p_j (log p_j + H).
    """
    _, index, inside = _target_logit(z, targets, v0)
    log_p = z.sub_(lse[:, None])
    if g_ent is None:  # g_lp * (onehot - p): keep p - onehot and fold -g_lp into the matmul operands
        grad = log_p.exp_().scatter_add_(1, index, -inside[:, None].float())
        return grad, -g_lp
    p = log_p.exp()
    grad = log_p.mul_(-g_ent[:, None]).sub_((g_lp + g_ent * ent)[:, None]).mul_(p)
    return grad.scatter_add_(1, index, torch.where(inside, g_lp, 0.0)[:, None]), None


def cross_entropy_block(z, targets):
    """One block spanning the whole vocabulary: (lse, target logit); z becomes softmax(z) - onehot."""
    tz, index, inside = _target_logit(z, targets, 0)
    m = z.amax(-1, keepdim=True)
    s = z.sub_(m).exp_().sum(-1, keepdim=True)
    z.div_(s).scatter_add_(1, index, -inside[:, None].float())
    return m.squeeze(1) + s.squeeze(1).log(), tz
