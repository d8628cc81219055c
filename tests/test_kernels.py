"""Tuned CPU kernels against the plain-torch references: forward output and every gradient.

Why this shape of test (after Liger-Kernel's): a kernel that is right in forward and wrong in one
gradient trains quietly worse, so each op is run twice from identical leaves, once per backend,
under the same random upstream gradient, and all outputs and leaf gradients are compared. fp32 must
agree to ~1e-5; bf16 only to bf16's precision, since the two sides round at different points.
"""

from __future__ import annotations

import pytest
import torch

from alignment.base_model import kernels as K
from alignment.base_model.kernels import fused_linear, reference

FP32 = dict(atol=1e-5, rtol=1e-5)
BF16 = dict(atol=3e-2, rtol=3e-2)
TOL = {torch.float32: FP32, torch.bfloat16: BF16}


def _run(mode, fn, inputs, differentiable):
    """Outputs and leaf gradients of fn(*inputs) under a kernel mode and a fixed upstream gradient."""
    leaves = [x.detach().clone().requires_grad_(d) for x, d in zip(inputs, differentiable, strict=True)]
    with K.use_kernels(mode):
        out = fn(*leaves)
    outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]
    gen = torch.Generator().manual_seed(1234)
    sum((o.float() * torch.randn(o.shape, generator=gen)).sum() for o in outs).backward()
    return outs, [x.grad for x, d in zip(leaves, differentiable, strict=True) if d]


def _check(fn, inputs, differentiable=None, tol=FP32):
    differentiable = differentiable or [x.is_floating_point() for x in inputs]
    want_out, want_grads = _run("reference", fn, inputs, differentiable)
    got_out, got_grads = _run("torch", fn, inputs, differentiable)
    names = [f"output {i}" for i in range(len(want_out))] + [f"grad {i}" for i in range(len(want_grads))]
    for name, got, want in zip(names, got_out + got_grads, want_out + want_grads, strict=True):
        assert got is not None and got.dtype == want.dtype and got.shape == want.shape, name
        assert torch.isfinite(got).all(), name
        torch.testing.assert_close(got.float(), want.float(), **tol, msg=lambda m, n=name: f"{n}: {m}")


def _randn(*shape, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape) * scale).to(dtype)


@pytest.fixture(autouse=True)
def _seed(monkeypatch):
    monkeypatch.delenv(K.ENV_VAR, raising=False)
    torch.manual_seed(0)


# ---- RMSNorm, RoPE, SwiGLU ---------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(2, 7, 576), (33, 64), (1, 1, 48)])
def test_rms_norm(shape, dtype):
    x, w = _randn(*shape, dtype=dtype, scale=3.0), _randn(shape[-1], dtype=dtype).add(1)
    _check(lambda x, w: K.rms_norm(x, w, 1e-6), [x, w], tol=TOL[dtype])


def test_rms_norm_bf16_input_fp32_weight():
    # Autocast training: bf16 activations, fp32 master weight -> fp32 output, bf16 grad for x.
    _check(
        lambda x, w: K.rms_norm(x, w, 1e-5), [_randn(3, 7, 64, dtype=torch.bfloat16), _randn(64)], tol=BF16
    )


def _rotary(B, T, D, dtype, theta=1e5):
    inv_freq = 1.0 / theta ** (torch.arange(0, D, 2).float() / D)
    angles = torch.arange(T).float()[None, :, None].expand(B, T, 1) * inv_freq
    angles = torch.cat((angles, angles), dim=-1) + torch.arange(B).view(B, 1, 1)  # rows differ by batch
    return angles.cos().to(dtype), angles.sin().to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("B,H,T,D,cos_batch", [(2, 3, 7, 64, 2), (1, 9, 33, 64, 1), (3, 2, 5, 16, 1)])
def test_rope(B, H, T, D, cos_batch, dtype):
    cos, sin = _rotary(cos_batch, T, D, dtype)
    x = _randn(B, H, T, D, dtype=dtype)
    _check(K.apply_rope, [x, cos, sin], [True, False, False], tol=TOL[dtype])


def test_rope_transposed_input_and_general_cos_sin():
    # q/k arrive as a transposed view of [B, T, heads, D]; cos/sin here are not duplicated halves.
    x = _randn(2, 33, 3, 64).transpose(1, 2)
    _check(K.apply_rope, [x, _randn(2, 33, 64), _randn(2, 33, 64)], [True, False, False])


def test_rope_gradient_to_cos_sin_uses_reference():
    x, cos, sin = _randn(1, 2, 5, 8), _randn(1, 5, 8).requires_grad_(), _randn(1, 5, 8).requires_grad_()
    K.apply_rope(x, cos, sin).sum().backward()
    assert cos.grad is not None and sin.grad is not None


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("shape", [(7, 1536), (2, 33, 96)])
def test_swiglu(shape, dtype):
    _check(K.swiglu, [_randn(*shape, dtype=dtype, scale=3.0), _randn(*shape, dtype=dtype)], tol=TOL[dtype])


# ---- fused linear + cross-entropy ----------------------------------------------------------------

CE_CASES = [
    # N, C, V, chunk_size, vocab_chunk_size
    (7, 32, 1003, None, None),  # one chunk, one vocabulary block: gradients reuse the logits
    (33, 32, 1003, 4, 256),  # 33 tokens in chunks of 4, vocabulary 1003 in blocks of 256
    (33, 576, 4099, 16, 1000),  # SmolLM2's hidden size
]


def _ce_inputs(N, C, V, dtype, bias, pad_every=3):
    hidden = _randn(N, C, dtype=dtype)
    weight = _randn(V, C, dtype=dtype, scale=C**-0.5 * 2)
    targets = torch.randint(0, V, (N,))
    targets[::pad_every] = -100
    return [hidden, weight, targets] + ([_randn(V, dtype=dtype)] if bias else [])


@pytest.mark.parametrize("reduction", ["mean", "sum"])
@pytest.mark.parametrize("N,C,V,chunk,vchunk", CE_CASES)
def test_fused_linear_cross_entropy(N, C, V, chunk, vchunk, reduction):
    inputs = _ce_inputs(N, C, V, torch.float32, bias=(N == 33))

    def fn(h, w, t, *b):
        return K.fused_linear_cross_entropy(
            h, w, t, *b, reduction=reduction, chunk_size=chunk, vocab_chunk_size=vchunk
        )

    _check(fn, inputs)


@pytest.mark.parametrize("N,C,V,chunk,vchunk", CE_CASES[:2])
def test_fused_linear_cross_entropy_bf16(N, C, V, chunk, vchunk):
    inputs = _ce_inputs(N, C, V, torch.bfloat16, bias=True)
    _check(
        lambda h, w, t, b: K.fused_linear_cross_entropy(
            h, w, t, b, chunk_size=chunk, vocab_chunk_size=vchunk
        ),
        inputs,
        tol=BF16,
    )


def test_fused_linear_cross_entropy_under_autocast():
    # fp32 leaves, bf16 matmuls: the autocast dtype is picked up; gradients come back in fp32.
    inputs = _ce_inputs(33, 64, 1003, torch.float32, bias=False)

    def fn(h, w, t):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return K.fused_linear_cross_entropy(h, w, t, chunk_size=8, vocab_chunk_size=512)

    _check(fn, inputs, tol=BF16)


def test_fused_linear_cross_entropy_ignore_index_is_a_real_id():
    hidden, weight, targets = _ce_inputs(33, 32, 301, torch.float32, bias=False)
    targets[targets == -100] = 0
    _check(
        lambda h, w, t: K.fused_linear_cross_entropy(h, w, t, ignore_index=0, chunk_size=5),
        [hidden, weight, targets],
    )


@pytest.mark.parametrize("mode", ["reference", "torch"])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fused_linear_cross_entropy_all_ignored(mode, reduction):
    hidden, weight, _ = _ce_inputs(7, 32, 101, torch.float32, bias=False)
    hidden.requires_grad_()
    weight.requires_grad_()
    with K.use_kernels(mode):
        loss = K.fused_linear_cross_entropy(
            hidden, weight, torch.full((7,), -100), reduction=reduction, chunk_size=3
        )
    loss.backward()
    assert loss.item() == 0.0
    assert torch.all(hidden.grad == 0) and torch.all(weight.grad == 0)


def test_fused_linear_cross_entropy_frozen_weight_and_no_grad():
    hidden, weight, targets = _ce_inputs(2 * 7, 32, 211, torch.float32, bias=False)
    h3, t2 = hidden.view(2, 7, 32), targets.view(2, 7)  # leading dims are flattened
    want = reference.fused_linear_cross_entropy(hidden, weight, targets)
    with torch.no_grad():
        torch.testing.assert_close(K.fused_linear_cross_entropy(h3, weight, t2, chunk_size=4), want, **FP32)
    h3 = h3.clone().requires_grad_()
    K.fused_linear_cross_entropy(h3, weight, t2, chunk_size=4).backward()
    h_ref = hidden.clone().requires_grad_()
    reference.fused_linear_cross_entropy(h_ref, weight, targets).backward()
    torch.testing.assert_close(h3.grad.view(-1, 32), h_ref.grad, **FP32)
    assert weight.grad is None


# ---- fused linear + token log-prob / entropy -----------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.5])
@pytest.mark.parametrize("N,C,V,chunk,vchunk", CE_CASES)
def test_fused_linear_logprobs(N, C, V, chunk, vchunk, temperature):
    hidden, weight, tokens, *bias = _ce_inputs(N, C, V, torch.float32, bias=(temperature == 0.7), pad_every=N)
    tokens[0] = 3

    def fn(h, w, t, *b):
        return K.fused_linear_logprobs(
            h, w, t, *b, temperature=temperature, chunk_size=chunk, vocab_chunk_size=vchunk
        )

    _check(fn, [hidden, weight, tokens, *bias])


def test_fused_linear_logprobs_bf16_batched_shape():
    hidden, weight = _randn(2, 9, 64, dtype=torch.bfloat16), _randn(517, 64, dtype=torch.bfloat16)

    def fn(h, w, t):
        return K.fused_linear_logprobs(h, w, t, temperature=0.8, chunk_size=4, vocab_chunk_size=200)

    _check(fn, [hidden, weight, torch.randint(0, 517, (2, 9))], tol=BF16)


@pytest.mark.parametrize("with_entropy", [True, False])
def test_fused_linear_logprobs_only_logprob_gradient(with_entropy):
    # PPO's policy loss uses the log-probs alone; the unused entropy must not break backward.
    hidden, weight, tokens = _randn(33, 32), _randn(1003, 32, scale=0.4), torch.randint(0, 1003, (33,))

    def fn(h, w, t):
        logp, ent = K.fused_linear_logprobs(
            h, w, t, chunk_size=8, vocab_chunk_size=300, with_entropy=with_entropy
        )
        assert (ent is None) == (not with_entropy)
        return logp

    _check(fn, [hidden, weight, tokens])


def test_fused_linear_logprobs_large_logits_are_stable():
    # Logits in the hundreds, spread across vocabulary blocks: the block merge must not overflow.
    hidden, weight, tokens = _randn(7, 32, scale=30.0), _randn(1003, 32), torch.randint(0, 1003, (7,))
    _check(
        lambda h, w, t: K.fused_linear_logprobs(h, w, t, vocab_chunk_size=128),
        [hidden, weight, tokens],
        tol=dict(atol=2e-4, rtol=1e-5),
    )


@pytest.mark.parametrize("mode", ["reference", "torch"])
def test_fused_ops_empty_batch(mode):
    hidden, weight, tokens = (
        _randn(0, 8).requires_grad_(),
        _randn(11, 8).requires_grad_(),
        torch.zeros(0).long(),
    )
    with K.use_kernels(mode):
        loss = K.fused_linear_cross_entropy(hidden, weight, tokens)
        logp, ent = K.fused_linear_logprobs(hidden, weight, tokens)
    (loss + logp.sum() + ent.sum()).backward()
    assert loss.item() == 0.0 and logp.shape == ent.shape == (0,)
    assert torch.all(weight.grad == 0)


# ---- chunking and dispatch -----------------------------------------------------------------------


def test_fused_ops_never_build_full_logits(monkeypatch):
    shapes = []
    real_logits = fused_linear._Blocks.logits

    def spy(self, rows, v0, v1):
        z = real_logits(self, rows, v0, v1)
        shapes.append(tuple(z.shape))
        return z

    monkeypatch.setattr(fused_linear._Blocks, "logits", spy)
    monkeypatch.setattr(fused_linear, "LOGITS_BUDGET", 2000)  # default plan: 2000 // 1003 = 1 row
    hidden, weight, targets = _ce_inputs(33, 32, 1003, torch.float32, bias=False)
    hidden.requires_grad_()
    with K.use_kernels("torch"):
        K.fused_linear_cross_entropy(hidden, weight, targets, chunk_size=8, vocab_chunk_size=256).backward()
        logp, ent = K.fused_linear_logprobs(hidden, weight, targets.clamp(min=0), vocab_chunk_size=256)
        (logp + ent).sum().backward()
        K.fused_linear_cross_entropy(hidden, weight, targets).backward()
    assert shapes and max(r * c for r, c in shapes) <= 8 * 256 < 33 * 1003
    assert (1, 1003) in shapes


def test_dispatch_env_var_and_context_manager(monkeypatch):
    calls = []
    monkeypatch.setattr(reference, "rms_norm", lambda *a: calls.append("reference"))
    x, w = _randn(3, 8), _randn(8)
    K.rms_norm(x, w)
    assert calls == [] and K.kernel_mode() == "auto" and K._backend(x) == "torch"
    monkeypatch.setenv(K.ENV_VAR, "reference")
    K.rms_norm(x, w)
    assert calls == ["reference"]
    with K.use_kernels("torch"):  # the context manager wins over the environment
        assert K.kernel_mode() == "torch"
        K.rms_norm(x, w)
    assert calls == ["reference"]
    monkeypatch.setenv(K.ENV_VAR, "auto")
    with K.use_reference_kernels():
        K.rms_norm(x, w)
    assert calls == ["reference", "reference"]
    monkeypatch.setenv(K.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="PADDOCK_KERNELS"):
        K.rms_norm(x, w)
    with pytest.raises(ValueError):
        K.use_kernels("fast").__enter__()


@pytest.mark.slow
def test_tuned_ops_compile_fullgraph():
    # The tuned path is meant to be compiled with the model: no graph breaks in dispatch or kernels.
    x, w = _randn(2, 7, 64), _randn(64)
    q, (cos, sin) = _randn(2, 4, 7, 16), _rotary(2, 7, 16, torch.float32)
    hidden, weight, targets = _ce_inputs(14, 64, 301, torch.float32, bias=False)

    def step(x, w, q, hidden, weight):
        y = K.swiglu(K.rms_norm(x, w), x)
        r = K.apply_rope(q, cos, sin)
        ce = K.fused_linear_cross_entropy(hidden, weight, targets, chunk_size=5, vocab_chunk_size=128)
        return y.sum() + r.sum() + ce

    leaves = [t.clone().requires_grad_() for t in (x, w, q, hidden, weight)]
    eager_leaves = [t.clone().requires_grad_() for t in (x, w, q, hidden, weight)]
    torch.compile(step, fullgraph=True)(*leaves).backward()
    step(*eager_leaves).backward()
    for got, want in zip(leaves, eager_leaves, strict=True):
        torch.testing.assert_close(got.grad, want.grad, atol=1e-4, rtol=1e-4)
