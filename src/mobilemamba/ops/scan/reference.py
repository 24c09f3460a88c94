"""The selective scan written as the textbook recurrence: a plain loop over the sequence.

Slow, and only for tests (in float64) and as the baseline of the CPU benchmark.
"""
from __future__ import annotations

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
