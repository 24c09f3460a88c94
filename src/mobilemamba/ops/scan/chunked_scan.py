"""Selective scan for d_state = 1 as a chunked closed form: only cumsum, exp, matmul and masking.

Every operation has a standard ONNX counterpart (CumSum, Exp, MatMul, Where, Pad), so the scan exports as plain
graph ops: no custom operator, no loop over the sequence unrolled into the graph. It is also differentiable and
runs in the input dtype (float32), because every exponent it forms is ≤ 0.

With one state per channel the recurrence h_t = a_t h_{t-1} + x_t, a_t = exp(Δ_t A), x_t = Δ_t B_t u_t, is linear:
- inside a chunk of T steps, h = M x with M[t, s] = exp(Σ_{s<k≤t} Δ_k A) for s ≤ t (0 above the diagonal);
- the chunk-end states H_c obey the same recurrence one level up (decay = the chunk's total Σ Δ A), so they
  are the same construction on the chunk totals; each chunk then adds exp(Σ_{k≤t} Δ_k A)·H_{c-1}.
The segment sums Σ_{s<k≤t} are formed by a masked cumulative sum over the segment only ("segsum"), never as a
difference of two long prefix sums, so they keep float32 accuracy whatever the sequence length.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

MIN_CHUNK, MAX_CHUNK = 4, 64


def auto_chunk(length: int) -> int:
    """The chunk size minimising the work L·T (inside chunks) + (L/T)² (across chunks): T ≈ (2L)^(1/3), as a power
    of two in [4, 64] (8 for L = 144 or 256, 16 for L = 1024)."""
    best = 2 ** round(math.log2((2 * max(length, 1)) ** (1 / 3)))
    return int(min(MAX_CHUNK, max(MIN_CHUNK, best)))


def segment_sums(x: torch.Tensor) -> torch.Tensor:
    """(..., T) → (..., T, T): out[..., t, s] = Σ_{s<k≤t} x_k for s ≤ t, and −inf above the diagonal."""
    length = x.shape[-1]
    idx = torch.arange(length, device=x.device)
    strictly_below = idx[:, None] > idx[None, :]
    rows = x.unsqueeze(-1).expand(*x.shape, length)  # rows[..., k, s] = x_k
    sums = torch.cumsum(rows.masked_fill(~strictly_below, 0.0), dim=-2)  # Σ_{s<k≤t} x_k in [t, s]
    lower = idx[:, None] >= idx[None, :]
    return sums.masked_fill(~lower, float("-inf"))


def linear_recurrence(log_a: torch.Tensor, x: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """h_t = exp(log_a_t) h_{t-1} + x_t along the last axis, h_{-1} = 0; `log_a` ≤ 0. Shapes (..., L).

    `chunk`: steps per chunk (None: `auto_chunk(L)`); any value gives the same result up to rounding.
    """
    length = int(x.shape[-1])
    chunk = max(1, min(chunk or auto_chunk(length), length))
    n_chunks = (length + chunk - 1) // chunk
    pad = n_chunks * chunk - length
    if pad:  # trailing steps with decay 1 and input 0 leave every earlier state unchanged
        log_a, x = F.pad(log_a, (0, pad)), F.pad(x, (0, pad))
    lead = x.shape[:-1]
    log_a = log_a.reshape(*lead, n_chunks, chunk)
    x = x.reshape(*lead, n_chunks, chunk)
    inside = torch.exp(segment_sums(log_a))  # (..., n, T, T)
    h_local = torch.matmul(inside, x.unsqueeze(-1)).squeeze(-1)  # states as if each chunk started from 0
    totals = log_a.sum(-1)  # (..., n): log decay across a whole chunk
    ends = torch.matmul(torch.exp(segment_sums(totals)), h_local[..., -1:])  # (..., n, 1): true chunk-end states
    entering = F.pad(ends[..., :-1, :], (0, 0, 1, 0))  # state before chunk c is the end state of chunk c-1
    h = h_local + torch.exp(torch.cumsum(log_a, dim=-1)) * entering
    return h.reshape(*lead, n_chunks * chunk)[..., :length]


def selective_scan_chunked(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                           D: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                           delta_softplus: bool = True, chunk: int | None = None) -> torch.Tensor:
    """Shapes as `selective_scan_ref`, with N = 1 (A: (G*d, 1); B, C: (b, G, 1, L)). Returns y in u's dtype."""
    if A.shape[-1] != 1 or B.shape[2] != 1:
        raise ValueError(f"the chunked scan backend supports d_state=1 only, got A {tuple(A.shape)}")
    batch, channels, length = u.shape
    groups = B.shape[1]
    per_group = channels // groups
    dt = delta if delta_bias is None else delta + delta_bias.to(delta.dtype)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    dt = dt.reshape(batch, groups, per_group, length)
    uw = u.reshape(batch, groups, per_group, length)
    log_a = dt * A.to(dt.dtype).reshape(1, groups, per_group, 1)
    h = linear_recurrence(log_a, dt * B * uw, chunk)
    y = C * h
    if D is not None:
        y = y + D.to(y.dtype).reshape(1, groups, per_group, 1) * uw
    return y.reshape(batch, channels, length).to(u.dtype)
