"""Packed input for the model: several sequences back to back in one row [1, N] without padding.

Positions restart at each sequence and attention stays within it (block-diagonal causal). The
reward-model stage trains this way: a batch of chosen and rejected answers is one row, with no
compute spent on padding. `Packing` holds the layout; attention runs per group of similar-length
sequences, each group padded only to its own longest member.
"""

from __future__ import annotations

import math

import torch

# The fixed cost of one more attention group (a dozen more small kernels forward and backward),
# in units of the per-group cost count x width^2. Measured on 16 sequences of 40-500 tokens
# (SmolLM2's heads, bf16, one thread), forward + backward per layer: one group 620 ms, 4096 here
# 146 ms (13-14 groups), 16384 161 ms, 1024 157 ms. At the gym's 45-133 tokens it hardly matters.
GROUP_OVERHEAD = 4096


def length_groups(lengths: list[int], overhead: float | None = None) -> list[list[int]]:
    """Sequence indices in groups of similar length, longest first: each group is attended padded
    to its longest member, so the split minimises sum(len(group) * width^2) + overhead * groups
    over contiguous runs of the lengths sorted longest first (a small dynamic programme)."""
    overhead = GROUP_OVERHEAD if overhead is None else overhead
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    n = len(order)
    best = [0.0] + [math.inf] * n  # best[j]: cost of grouping order[:j]
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):  # last group order[i:j], padded to lengths[order[i]]
            cost = best[i] + (j - i) * lengths[order[i]] ** 2 + overhead
            if cost < best[j]:
                best[j], cut[j] = cost, i
    groups, j = [], n
    while j > 0:
        groups.append(order[cut[j] : j])
        j = cut[j]
    return groups[::-1]


class _Group:
    """Sequences attended together, right-padded to a common width."""

    def __init__(self, members: list[int], lengths: torch.Tensor, starts: torch.Tensor, device):
        sizes = lengths[members]
        self.count, self.width = len(members), int(sizes.max())
        self.rows = torch.repeat_interleave(torch.arange(self.count), sizes).to(device)  # [M] row in group
        self.within = torch.cat([torch.arange(int(n)) for n in sizes]).to(device)  # [M] position in row
        spans = zip(starts[members].tolist(), sizes.tolist(), strict=True)
        self.tokens = torch.cat([torch.arange(a, a + n) for a, n in spans]).to(device)  # [M] packed index

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """Packed [N, heads, D] -> this group's [count, heads, width, D], zeros in the padding."""
        padded = x.new_zeros(self.count, x.shape[1], self.width, x.shape[2])
        padded.transpose(1, 2)[self.rows, self.within] = x[self.tokens]
        return padded

    def unpad_into(self, out: torch.Tensor, x: torch.Tensor) -> None:
        """Write this group's [count, heads, width, D] real tokens into packed out [N, heads, D]."""
        out[self.tokens] = x.transpose(1, 2)[self.rows, self.within]


class Packing:
    """Sequences laid back to back in one row [1, N], without padding: sequence i is tokens
    starts[i] .. starts[i] + lengths[i] - 1, its positions restart at 0, and its tokens attend only
    to earlier tokens of the same sequence (block-diagonal causal attention, "varlen").

    Norms, projections and the MLP, most of a step's work, then see only the N real tokens.
    Attention runs per group of similar-length sequences (`length_groups`), each right-padded to
    its longest member (see `_PackedCausalAttention`).
    """

    def __init__(self, lengths, device):
        lengths = torch.as_tensor(lengths, dtype=torch.long).cpu()
        if lengths.ndim != 1 or len(lengths) == 0 or int(lengths.min()) < 1:
            raise ValueError(f"sequence_lengths must be a non-empty list of positive lengths, got {lengths}")
        self.count, self.total = len(lengths), int(lengths.sum())
        starts = lengths.cumsum(0) - lengths
        within = torch.arange(self.total) - torch.repeat_interleave(starts, lengths)
        self.positions = within[None].to(device)  # [1, N] position inside its sequence
        self.ends = (starts + lengths - 1).to(device)  # [B] each sequence's last token
        self.groups = [_Group(g, lengths, starts, device) for g in length_groups(lengths.tolist())]
        self._masks: dict = {}

    def causal_mask(self, width: int, group: int, dtype, device, window: int | None = None) -> torch.Tensor:
        """Additive [1, group * width, width] mask: 0 on and below the diagonal, -inf above, for
        `group` query heads stacked along the query axis. Right padding comes after every real
        token of its row, so causality alone keeps real queries off it. A sliding `window` also
        hides the keys `window` or more positions back."""
        window = window if window is not None and window < width else None
        key = (width, group, dtype, device, window)
        if key not in self._masks:
            future = torch.ones(width, width, dtype=torch.bool, device=device).triu_(1)
            if window is not None:
                future |= torch.ones(width, width, dtype=torch.bool, device=device).tril_(-window)
            mask = torch.zeros(width, width, dtype=dtype, device=device).masked_fill_(future, float("-inf"))
            self._masks[key] = mask.repeat(group, 1)[None]
        return self._masks[key]

    def attention(self, q, k, v, window: int | None = None) -> torch.Tensor:
        """q [1, H, N, D], k/v [1, K, N, D] (any head-grouping) -> [1, N, H*D]; `window` for a
        sliding-window layer."""
        _, H, N, D = q.shape
        q, k, v = (t[0].transpose(0, 1) for t in (q, k, v))  # [N, heads, D]
        return _PackedCausalAttention.apply(q, k, v, self, window).reshape(1, N, H * D)


def as_packing(sequence_lengths, device) -> Packing:
    if isinstance(sequence_lengths, Packing):
        return sequence_lengths
    return Packing(sequence_lengths, device)


def _probabilities(q, k, packing: Packing, scale: float, window: int | None) -> torch.Tensor:
    """Causal softmax probabilities [B*K, G*W, W] (softmax accumulates in fp32 whatever the
    dtype). q [B, H, W, D], the G = H/K query heads of each K/V head adjacent; k [B, K, W, D]."""
    B, K, W, D = k.shape
    G = q.shape[1] // K
    mask = packing.causal_mask(W, G, q.dtype, q.device, window)
    scores = torch.baddbmm(mask, q.view(B * K, G * W, D), k.view(B * K, W, D).transpose(1, 2), alpha=scale)
    return torch.softmax(scores, -1)


class _PackedCausalAttention(torch.autograd.Function):
    """Block-diagonal causal attention over packed sequences: q [N, H, D], k/v [N, K, D] -> [N, H, D].

    Per group of similar-length sequences, right-padded to [B, heads, W, D]: scores and output by
    batched matmuls, the query heads sharing a K/V head stacked so each K/V head is read once,
    the causal mask added inside the score matmul, the softmax accumulated in fp32 (scores are
    rounded to the input dtype first, as in transformers' eager attention). Backward recomputes
    the probabilities, as flash attention does, so nothing of size W^2 outlives a layer: only the
    packed q, k, v are saved. Why not SDPA: on CPU its flash kernel is slow in backward at these
    shapes; one layer forward + backward on the gym's reward-model batches (SmolLM2's 9/3 heads of
    64, 16 sequences of 45-133 tokens, bf16, one thread) took 182 ms there and 52 ms here.
    """

    @staticmethod
    def forward(ctx, q, k, v, packing: Packing, window: int | None):
        k, v = k.to(q.dtype), v.to(q.dtype)
        scale = q.shape[-1] ** -0.5
        out = torch.empty_like(q)
        with torch.autocast(q.device.type, enabled=False):
            for group in packing.groups:
                v_padded = group.pad(v)
                B, K, W, D = v_padded.shape
                p = _probabilities(group.pad(q), group.pad(k), packing, scale, window)
                group.unpad_into(out, torch.bmm(p, v_padded.view(B * K, W, D)).view(B, -1, W, D))
        ctx.save_for_backward(q, k, v)
        ctx.packing, ctx.scale, ctx.window = packing, scale, window
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v = ctx.saved_tensors
        packing, scale = ctx.packing, ctx.scale
        grad_out = grad_out.to(q.dtype)
        grad_q, grad_k, grad_v = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        with torch.autocast(q.device.type, enabled=False):
            for group in packing.groups:
                q_padded, k_padded, v_padded = group.pad(q), group.pad(k), group.pad(v)
                B, K, W, D = k_padded.shape
                p = _probabilities(q_padded, k_padded, packing, scale, ctx.window)  # [B*K, G*W, W]
                g = group.pad(grad_out).view(B * K, -1, D)  # [B*K, G*W, D]
                k_padded, v_padded = k_padded.view(B * K, W, D), v_padded.view(B * K, W, D)
                group.unpad_into(grad_v, torch.bmm(p.transpose(1, 2), g).view(B, K, W, D))
                grad_p = torch.bmm(g, v_padded.transpose(1, 2))
                grad_s = torch._softmax_backward_data(grad_p, p, -1, p.dtype)
                grad = torch.bmm(grad_s, k_padded).mul_(scale).view(B, -1, W, D)
                group.unpad_into(grad_q, grad)
                grad = torch.bmm(grad_s.transpose(1, 2), q_padded.view(B * K, -1, D)).mul_(scale)
                group.unpad_into(grad_k, grad.view(B, K, W, D))
        return grad_q, grad_k, grad_v, None, None
