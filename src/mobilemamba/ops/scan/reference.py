"""The selective scan written as the textbook recurrence: a plain loop over the sequence.

Slow, and only for tests (in float64) and as the baseline of the CPU benchmark.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F


def selective_scan_ref(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                       D: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                       delta_softplus: bool = True) -> torch.Tensor:
    """Sequential selective scan with d_state N and grouped B/C.

    Shapes: u, delta (b, G*d, L); A (G*d, N); B, C (b, G, N, L); D, delta_bias (G*d,).
    Per channel c of group g: h_t = exp(Δ_t A_c) h_{t-1} + Δ_t B_{g,t} u_t,  y_t = C_{g,t}·h_t + D_c u_t, h_{-1} = 0.
    """
    batch, channels, length = u.shape
    groups = B.shape[1]
    dt = delta + (delta_bias[:, None] if delta_bias is not None else 0)
    if delta_softplus:
        dt = F.softplus(dt)
    Bc = B.repeat_interleave(channels // groups, dim=1)  # (b, channels, N, L)
    Cc = C.repeat_interleave(channels // groups, dim=1)
    h = u.new_zeros(batch, channels, A.shape[1])
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, :, t, None] * A)
        h = decay * h + dt[:, :, t, None] * Bc[..., t] * u[:, :, t, None]
        ys.append((h * Cc[..., t]).sum(-1))
    y = torch.stack(ys, dim=-1)
    if D is not None:
        y = y + D[:, None] * u
    return y


def _in_scan_order(pair: torch.Tensor) -> torch.Tensor:
    """(b, 2, ..., L) of one sequence twice → the second copy reversed along L: each direction in its scan order."""
    return torch.stack([pair[:, 0], pair[:, 1].flip(-1)], dim=1)


def bidirectional_scan_ref(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                           D: torch.Tensor, delta_bias: torch.Tensor,
                           scan: Callable[..., torch.Tensor] = selective_scan_ref) -> torch.Tensor:
    """SS2D's two-direction scan as published (spec §3.7), on token-major operands: `scan` (softplus on Δ) of the
    stacked [u, flip(u)] in channel-major layout, then y = y_fwd + flip(y_bwd). Shapes as `bidirectional_scan`."""
    batch, length, dim = u.shape
    pair = lambda t: t.view(batch, length, 2, -1).permute(0, 2, 3, 1)  # noqa: E731 - (b, L, 2n) → (b, 2, n, L)
    us = _in_scan_order(u.transpose(1, 2)[:, None].expand(batch, 2, dim, length))
    y = scan(us.reshape(batch, 2 * dim, length), _in_scan_order(pair(delta)).reshape(batch, 2 * dim, length), A,
             _in_scan_order(pair(B)), _in_scan_order(pair(C)), D, delta_bias).view(batch, 2, dim, length)
    return (y[:, 0] + y[:, 1].flip(-1)).transpose(1, 2)
