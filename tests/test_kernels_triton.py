"""Triton kernels against the plain-torch references, on the CPU through Triton's interpreter.

Why a subprocess: TRITON_INTERPRET=1 only takes effect if it is set before triton is imported, and
pytest imports every test module (and torch.compile may import triton) in one process; setting it
there would also turn any other Triton user of the run (inductor on a GPU box) into the slow
interpreter. So on a machine without CUDA the one outer test re-runs this file under pytest in a
child process with TRITON_INTERPRET=1, where the tests below run on CPU tensors in fp32 only (the
interpreter executes kernels in numpy, which has no bf16). With CUDA they also run natively on the
GPU, bf16 included.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignment.base_model import kernels as K

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
pytestmark = pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")

if INTERPRETED:
    CASES = [("cpu", torch.float32)]
elif torch.cuda.is_available():
    CASES = [("cuda", torch.float32), ("cuda", torch.bfloat16)]
else:
    CASES = []


def runs_here(test):
    """Collect a kernel test only where Triton can run in this process (else only in the child)."""
    return test if CASES else None


TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.bfloat16: dict(atol=3e-2, rtol=3e-2)}


@pytest.mark.skipif(INTERPRETED, reason="this is the child process")
def test_triton_kernels_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop(K.ENV_VAR, None)
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        __file__,
        "-q",
        "-p",
        "no:cacheprovider",
        "-o",
        "addopts=",
        "-k",
        "not test_triton_kernels_in_interpreter",
    ]
    child = subprocess.run(
        cmd, env=env, cwd=Path(__file__).parents[1], capture_output=True, text=True, timeout=900
    )
    report = child.stdout[-6000:] + child.stderr[-3000:]
    assert child.returncode == 0, report
    assert " passed" in report and " skipped" not in report, report
    print(report.strip().splitlines()[-1])  # the child's summary, shown with -s / -rP


def _check(fn, inputs, differentiable, dtype):
    """Same leaves through the reference and the Triton backend: outputs and leaf grads must agree."""
    results = []
    for mode in ("reference", "triton"):
        leaves = [x.detach().clone().requires_grad_(d) for x, d in zip(inputs, differentiable, strict=True)]
        with K.use_kernels(mode):
            out = fn(*leaves)
        outs = [o for o in (out if isinstance(out, tuple) else (out,)) if o is not None]
        gen = torch.Generator().manual_seed(1234)
        upstream = [torch.randn(o.shape, generator=gen).to(o.device) for o in outs]
        sum((o.float() * u).sum() for o, u in zip(outs, upstream, strict=True)).backward()
        results.append(outs + [x.grad for x, d in zip(leaves, differentiable, strict=True) if d])
    for i, (want, got) in enumerate(zip(*results, strict=True)):
        assert got.dtype == want.dtype and got.shape == want.shape, i
        torch.testing.assert_close(
            got.float(), want.float(), **TOL[dtype], msg=lambda m, i=i: f"tensor {i}: {m}"
        )


def _randn(*shape, device, dtype, scale=1.0):
    return (torch.randn(*shape) * scale).to(device=device, dtype=dtype)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@runs_here
@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("shape", [(2, 7, 576), (33, 64), (2, 5, 4, 24)])  # last: Qwen3's q/k heads
def test_rms_norm(shape, device, dtype):
    x, w = (
        _randn(*shape, device=device, dtype=dtype, scale=3.0),
        _randn(shape[-1], device=device, dtype=dtype),
    )
    _check(lambda x, w: K.rms_norm(x, w, 1e-6), [x, w], [True, True], dtype)


@runs_here
@pytest.mark.parametrize("device,dtype", CASES)
def test_rms_norm_fp32_weight(device, dtype):
    x, w = _randn(3, 5, 64, device=device, dtype=dtype), _randn(64, device=device, dtype=torch.float32)
    _check(lambda x, w: K.rms_norm(x, w, 1e-5), [x, w], [True, True], dtype)


@runs_here
@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize(
    "B,H,T,D,cos_batch,transposed",
    [(2, 3, 7, 64, 2, False), (1, 9, 33, 64, 1, True), (2, 2, 5, 20, 1, False)],
)
def test_rope(B, H, T, D, cos_batch, transposed, device, dtype):
    # transposed: q/k as the model makes them, a [B, T, heads, D] projection viewed as [B, heads, T, D]
    x = _randn(B, T, H, D, device=device, dtype=dtype).transpose(1, 2)
    x = x if transposed else _randn(B, H, T, D, device=device, dtype=dtype)
    cos, sin = (_randn(cos_batch, T, D, device=device, dtype=dtype) for _ in range(2))
    _check(K.apply_rope, [x, cos, sin], [True, False, False], dtype)


@runs_here
@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("shape", [(7, 1536), (2, 33, 96)])
def test_swiglu(shape, device, dtype):
    gate, up = (
        _randn(*shape, device=device, dtype=dtype, scale=3.0),
        _randn(*shape, device=device, dtype=dtype),
    )
    _check(K.swiglu, [gate, up], [True, True], dtype)


FUSED_CASES = [
    # N, C, V, chunk_size, vocab_chunk_size, max_block (columns per kernel step)
    (7, 32, 1003, None, None, 4096),
    (33, 32, 1003, 8, 256, 4096),
    (9, 48, 1003, 4, 400, 128),  # several kernel steps per block, last one partial
    (33, 576, 2053, 16, 1000, 4096),  # SmolLM2's hidden size
]


def _fused_inputs(N, C, V, device, dtype, pad=True):
    hidden = _randn(N, C, device=device, dtype=dtype)
    weight = _randn(V, C, device=device, dtype=dtype, scale=2 * C**-0.5)
    bias = _randn(V, device=device, dtype=dtype)
    targets = torch.randint(0, V, (N,), device=device)
    if pad:
        targets[::3] = -100
    return hidden, weight, targets, bias


@runs_here
@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("N,C,V,chunk,vchunk,max_block", FUSED_CASES)
def test_fused_linear_cross_entropy(N, C, V, chunk, vchunk, max_block, device, dtype, monkeypatch):
    from alignment.base_model.kernels import triton_ops

    monkeypatch.setattr(triton_ops, "MAX_BLOCK", max_block)
    hidden, weight, targets, bias = _fused_inputs(N, C, V, device, dtype)
    reduction = "sum" if N == 9 else "mean"

    def fn(h, w, b):
        return K.fused_linear_cross_entropy(
            h, w, targets, b, reduction=reduction, chunk_size=chunk, vocab_chunk_size=vchunk
        )

    _check(fn, [hidden, weight, bias], [True, True, True], dtype)


@runs_here
@pytest.mark.parametrize("device,dtype", CASES)
def test_fused_linear_cross_entropy_all_ignored(device, dtype):
    hidden, weight, _, _ = _fused_inputs(7, 32, 101, device, dtype)
    hidden.requires_grad_()
    with K.use_kernels("triton"):
        loss = K.fused_linear_cross_entropy(
            hidden, weight, torch.full((7,), -100, device=device), chunk_size=3
        )
    loss.backward()
    assert loss.item() == 0.0 and torch.all(hidden.grad == 0)


@runs_here
@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("N,C,V,chunk,vchunk,max_block", FUSED_CASES)
def test_fused_linear_logprobs(N, C, V, chunk, vchunk, max_block, temperature, device, dtype, monkeypatch):
    from alignment.base_model.kernels import triton_ops

    monkeypatch.setattr(triton_ops, "MAX_BLOCK", max_block)
    hidden, weight, tokens, bias = _fused_inputs(N, C, V, device, dtype, pad=False)

    def fn(h, w, b):
        return K.fused_linear_logprobs(
            h, w, tokens, b, temperature=temperature, chunk_size=chunk, vocab_chunk_size=vchunk
        )

    _check(fn, [hidden, weight, bias], [True, True, True], dtype)


@runs_here
@pytest.mark.parametrize("device,dtype", CASES)
def test_fused_linear_logprobs_without_entropy(device, dtype):
    hidden, weight, tokens, _ = _fused_inputs(9, 32, 301, device, dtype, pad=False)

    def fn(h, w):
        return K.fused_linear_logprobs(h, w, tokens, with_entropy=False, vocab_chunk_size=100)

    _check(fn, [hidden, weight], [True, True], dtype)


@runs_here
@pytest.mark.parametrize("device,dtype", CASES)
@pytest.mark.parametrize("family", ["llama", "mistral", "qwen2", "qwen3"])
def test_every_family_trains_alike_on_triton_and_reference_kernels(family, device, dtype):
    """A padded batch longer than the sliding window through each family's tiny model (q/k norms,
    biases and windows included): the loss and every parameter's gradient agree."""
    from alignment.base_model.modeling import PaddockLlamaForCausalLM
    from tests.test_model_families import family_config, padded_batch

    torch.manual_seed(0)
    model = PaddockLlamaForCausalLM(family_config(family)).to(device=device, dtype=dtype)
    ids, mask = (t.to(device) for t in padded_batch())
    labels = ids.masked_fill(mask == 0, -100)
    results = []
    for mode in ("reference", "triton"):
        model.zero_grad()
        with K.use_kernels(mode):
            loss = model(ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        results.append([loss.detach()] + [p.grad.clone() for p in model.parameters()])
    names = ["loss"] + [name for name, _ in model.named_parameters()]
    for name, want, got in zip(names, *results, strict=True):
        torch.testing.assert_close(got.float(), want.float(), **TOL[dtype], msg=lambda m, n=name: f"{n}: {m}")
