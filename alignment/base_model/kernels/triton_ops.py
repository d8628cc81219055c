"""Triton kernels: the default for CUDA tensors.

Why: on a GPU these ops are memory-bound, and eager torch makes one round trip to memory per
elementary op; each kernel here reads its inputs once and writes its outputs once, in fp32
registers whatever the storage dtype. In the fused linear ops the matmuls stay in cuBLAS and only
the softmax / log-prob / entropy over a logits block is a kernel; its backward writes the gradient
over the logits in place, so no second [rows, vocab] buffer is needed.

Tested on the CPU with TRITON_INTERPRET=1 (tests/test_kernels_triton.py), which runs each program
instance in numpy. Its limits: numpy has no bf16, so only fp32 is tested there; it is slow, so the
tests use small shapes; and it is more lenient than the compiler (dtype of loop-carried values,
out-of-range masked pointers), so a GPU run remains the final check.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

MAX_BLOCK = 4096  # columns a fused-linear program holds at once; tests lower it to exercise the loop


def _programs(t: torch.Tensor) -> int:
    if t.is_cuda:
        return 4 * torch.cuda.get_device_properties(t.device).multi_processor_count
    return 4  # interpreter: each program is a numpy loop anyway


# ---- RMSNorm -------------------------------------------------------------------------------------


@triton.jit
def _rms_norm_fwd(X, W, Y, RSTD, x_stride, y_stride, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(X + row * x_stride + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    w = tl.load(W + cols, mask=mask, other=0.0)
    # Round the normalised row to x's dtype before the weight, as the reference does.
    y = w * (x * rstd).to(X.dtype.element_ty)
    tl.store(Y + row * y_stride + cols, y, mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def _rms_norm_bwd(
    DY,
    X,
    W,
    RSTD,
    DX,
    DW,
    dy_stride,
    x_stride,
    dx_stride,
    n_rows,
    n_cols,
    rows_per_program,
    BLOCK: tl.constexpr,
):
    # Each program walks a run of rows and keeps its share of d weight in registers: [programs, C]
    # partial sums instead of a [rows, C] buffer; torch adds them up.
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros([BLOCK], dtype=tl.float32)
    start = pid * rows_per_program
    end = tl.minimum(start + rows_per_program, n_rows)
    # Walk by pointer increments: 64-bit pointer arithmetic, no row * stride overflow in int32 (and
    # the interpreter's loop variable is a plain Python int, which has no .to(tl.int64)).
    DY += start.to(tl.int64) * dy_stride
    X += start.to(tl.int64) * x_stride
    DX += start.to(tl.int64) * dx_stride
    RSTD += start
    for _ in range(start, end):
        dy = tl.load(DY + cols, mask=mask, other=0.0).to(tl.float32)
        x = tl.load(X + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD)
        xn = x * rstd
        dw += dy * xn.to(X.dtype.element_ty).to(tl.float32)
        g = dy * w
        dx = rstd * (g - xn * (tl.sum(g * xn, axis=0) / n_cols))
        tl.store(DX + cols, dx, mask=mask)
        DY += dy_stride
        X += x_stride
        DX += dx_stride
        RSTD += 1
    tl.store(DW + pid * n_cols + cols, dw, mask=mask)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        rows = x.reshape(-1, x.shape[-1])
        rows = rows if rows.stride(-1) == 1 else rows.contiguous()
        weight = weight.contiguous()
        n, c = rows.shape
        y = torch.empty((n, c), dtype=torch.result_type(x, weight), device=x.device)
        rstd = torch.empty(n, dtype=torch.float32, device=x.device)
        _rms_norm_fwd[(n,)](
            rows, weight, y, rstd, rows.stride(0), y.stride(0), c, eps, BLOCK=triton.next_power_of_2(c)
        )
        ctx.save_for_backward(rows, weight, rstd)
        ctx.shape = x.shape
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, grad):
        rows, weight, rstd = ctx.saved_tensors
        n, c = rows.shape
        dy = grad.reshape(n, c)
        dy = dy if dy.stride(-1) == 1 else dy.contiguous()
        dx = torch.empty_like(rows)
        programs = max(1, min(n, _programs(rows)))
        per_program = triton.cdiv(n, programs)
        dw = torch.empty((programs, c), dtype=torch.float32, device=rows.device)
        _rms_norm_bwd[(programs,)](
            dy,
            rows,
            weight,
            rstd,
            dx,
            dw,
            dy.stride(0),
            rows.stride(0),
            dx.stride(0),
            n,
            c,
            per_program,
            BLOCK=triton.next_power_of_2(c),
        )
        return dx.view(ctx.shape), dw.sum(0).to(weight.dtype), None


# ---- RoPE ----------------------------------------------------------------------------------------


@triton.jit
def _rope(
    X,
    COS,
    SIN,
    OUT,
    sxb,
    sxh,
    sxt,
    sxd,
    sob,
    soh,
    sot,
    sod,
    scb,
    sct,
    scd,
    ssb,
    sst,
    ssd,
    n_heads,
    T,
    half,
    INVERSE: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program per (batch, position): cos/sin are loaded once and applied to every head.
    # Strides are explicit because q/k arrive as a transposed view of [B, T, heads, D].
    pid = tl.program_id(0)
    b = (pid // T).to(tl.int64)
    t = (pid % T).to(tl.int64)
    h = tl.arange(0, BLOCK_H)[:, None]
    d = tl.arange(0, BLOCK_D)[None, :]
    mask = (h < n_heads) & (d < half)
    c1 = tl.load(COS + b * scb + t * sct + d * scd, mask=d < half, other=0.0).to(tl.float32)
    c2 = tl.load(COS + b * scb + t * sct + (d + half) * scd, mask=d < half, other=0.0).to(tl.float32)
    s1 = tl.load(SIN + b * ssb + t * sst + d * ssd, mask=d < half, other=0.0).to(tl.float32)
    s2 = tl.load(SIN + b * ssb + t * sst + (d + half) * ssd, mask=d < half, other=0.0).to(tl.float32)
    x_row = X + b * sxb + h * sxh + t * sxt
    x1 = tl.load(x_row + d * sxd, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(x_row + (d + half) * sxd, mask=mask, other=0.0).to(tl.float32)
    if INVERSE:  # backward: the transpose of the rotation
        o1 = x1 * c1 + x2 * s2
        o2 = x2 * c2 - x1 * s1
    else:
        o1 = x1 * c1 - x2 * s1
        o2 = x2 * c2 + x1 * s2
    o_row = OUT + b * sob + h * soh + t * sot
    tl.store(o_row + d * sod, o1, mask=mask)
    tl.store(o_row + (d + half) * sod, o2, mask=mask)


def _launch_rope(x, cos, sin, out_dtype, inverse):
    B, H, T, D = x.shape
    if D % 2:
        raise ValueError(f"RoPE needs an even head_dim, got {D}")
    cos, sin = cos.expand(B, T, D), sin.expand(B, T, D)  # batch 1 becomes stride 0, no copy
    out = torch.empty_like(x, dtype=out_dtype)  # keeps x's (possibly transposed) layout
    _rope[(B * T,)](
        x,
        cos,
        sin,
        out,
        *x.stride(),
        *out.stride(),
        *cos.stride(),
        *sin.stride(),
        H,
        T,
        D // 2,
        INVERSE=inverse,
        BLOCK_H=triton.next_power_of_2(H),
        BLOCK_D=triton.next_power_of_2(D // 2),
    )
    return out


class _RoPE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, cos, sin):
        ctx.save_for_backward(cos, sin)
        ctx.x_dtype = x.dtype
        return _launch_rope(x, cos, sin, torch.result_type(x, cos), inverse=False)

    @staticmethod
    def backward(ctx, grad):
        cos, sin = ctx.saved_tensors
        return _launch_rope(grad, cos, sin, ctx.x_dtype, inverse=True), None, None


# ---- SwiGLU --------------------------------------------------------------------------------------


@triton.jit
def _swiglu_fwd(G, U, Y, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + offs, g * tl.sigmoid(g) * u, mask=mask)


@triton.jit
def _swiglu_bwd(DY, G, U, DG, DU, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(DY + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(G + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(U + offs, mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    tl.store(DG + offs, dy * u * sig * (1 + g * (1 - sig)), mask=mask)
    tl.store(DU + offs, dy * g * sig, mask=mask)


_SWIGLU_BLOCK = 1024


class _SwiGLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, gate, up):
        if gate.shape != up.shape:
            raise ValueError(f"swiglu needs gate and up of one shape, got {gate.shape} and {up.shape}")
        gate, up = gate.contiguous(), up.contiguous()
        y = torch.empty_like(gate, dtype=torch.result_type(gate, up))
        n = gate.numel()
        _swiglu_fwd[(triton.cdiv(n, _SWIGLU_BLOCK),)](gate, up, y, n, BLOCK=_SWIGLU_BLOCK)
        ctx.save_for_backward(gate, up)
        return y

    @staticmethod
    def backward(ctx, grad):
        gate, up = ctx.saved_tensors
        grad = grad.contiguous()
        dg, du = torch.empty_like(gate), torch.empty_like(up)
        n = gate.numel()
        _swiglu_bwd[(triton.cdiv(n, _SWIGLU_BLOCK),)](grad, gate, up, dg, du, n, BLOCK=_SWIGLU_BLOCK)
        return dg, du


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return _RMSNorm.apply(x, weight, eps)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return _RoPE.apply(x, cos, sin)


def swiglu(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return _SwiGLU.apply(gate, up)


# ---- fused linear: per-block softmax statistics and gradient -------------------------------------
# Same contract as torch_ops.block_stats / block_grad / cross_entropy_block (see fused_linear.py),
# except that the statistics kernel leaves z intact.


@triton.jit
def _logit_stats(
    Z,
    z_stride,
    TGT,
    v0,
    n_cols,
    LSE,
    ENT,
    TZ,
    FIRST: tl.constexpr,
    WITH_ENTROPY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One row per program, one pass over its columns with an online max: running sum s of
    # exp(z - m) and t of exp(z - m) * (z - m), so lse = m + log s and entropy = log s - t / s.
    row = tl.program_id(0).to(tl.int64)
    z_row = Z + row * z_stride
    m = -1e30  # finite: with -inf the first rescale would compute 0 * inf
    s = 0.0
    t = 0.0
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        z = tl.load(z_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(z, axis=0))
        alpha = tl.exp(m - m_new)
        e = tl.exp(z - m_new)  # 0 in masked columns
        if WITH_ENTROPY:
            shifted = tl.where(mask, z - m_new, 0.0)  # not -inf, so 0 * shifted stays 0
            t = alpha * (t + (m - m_new) * s) + tl.sum(e * shifted, axis=0)
        s = alpha * s + tl.sum(e, axis=0)
        m = m_new
    lse = m + tl.log(s)
    ent = tl.log(s) - t / s
    target = tl.load(TGT + row) - v0
    inside = (target >= 0) & (target < n_cols)
    tz = tl.load(z_row + tl.where(inside, target, 0), mask=inside, other=0.0).to(tl.float32)
    if not FIRST:  # merge with the blocks of this row seen so far
        lse_a = tl.load(LSE + row)
        top = tl.maximum(lse_a, lse)
        total = top + tl.log(tl.exp(lse_a - top) + tl.exp(lse - top))
        if WITH_ENTROPY:
            log_wa = lse_a - total
            log_wb = lse - total
            ent = tl.exp(log_wa) * (tl.load(ENT + row) - log_wa) + tl.exp(log_wb) * (ent - log_wb)
        tz = tz + tl.load(TZ + row)
        lse = total
    tl.store(LSE + row, lse)
    tl.store(TZ + row, tz)
    if WITH_ENTROPY:
        tl.store(ENT + row, ent)


@triton.jit
def _logit_grad(
    Z, z_stride, TGT, v0, n_cols, LSE, ENT, GLP, GENT, HAS_ENTROPY: tl.constexpr, BLOCK: tl.constexpr
):
    # g_lp * (onehot - p) - g_ent * p * (log p + H), written over the logits.
    row = tl.program_id(0).to(tl.int64)
    z_row = Z + row * z_stride
    lse = tl.load(LSE + row)
    g_lp = tl.load(GLP + row)
    ent = tl.load(ENT + row)  # dummies (LSE, GLP) when there is no entropy term
    g_ent = tl.load(GENT + row)
    target = tl.load(TGT + row) - v0
    for start in range(0, n_cols, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < n_cols
        log_p = tl.load(z_row + cols, mask=mask, other=0.0).to(tl.float32) - lse
        p = tl.exp(log_p)
        g = -g_lp * p
        if HAS_ENTROPY:
            g -= g_ent * p * (log_p + ent)
        g = tl.where(cols == target, g + g_lp, g)
        tl.store(z_row + cols, g, mask=mask)


def _block(n_cols: int) -> int:
    return min(triton.next_power_of_2(n_cols), MAX_BLOCK)


def block_stats(z, targets, v0: int, acc, with_entropy: bool):
    n, v = z.shape
    if acc is None:
        lse, tz = torch.empty(n, device=z.device), torch.empty(n, device=z.device)
        ent = torch.empty(n, device=z.device) if with_entropy else None
    else:
        lse, ent, tz = acc
    _logit_stats[(n,)](
        z,
        z.stride(0),
        targets,
        v0,
        v,
        lse,
        lse if ent is None else ent,
        tz,
        FIRST=acc is None,
        WITH_ENTROPY=with_entropy,
        BLOCK=_block(v),
    )
    return lse, ent, tz


def block_grad(z, targets, v0: int, lse, ent, g_lp, g_ent):
    n, v = z.shape
    has_ent = g_ent is not None
    _logit_grad[(n,)](
        z,
        z.stride(0),
        targets,
        v0,
        v,
        lse,
        ent if has_ent else lse,
        g_lp,
        g_ent if has_ent else g_lp,
        HAS_ENTROPY=has_ent,
        BLOCK=_block(v),
    )
    return z, None


def cross_entropy_block(z, targets):
    lse, _, tz = block_stats(z, targets, 0, None, with_entropy=False)
    block_grad(z, targets, 0, lse, None, torch.full_like(lse, -1.0), None)  # z -> softmax - onehot
    return lse, tz
