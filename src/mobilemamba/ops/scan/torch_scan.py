"""Vectorised selective scan for d_state = 1 in pure PyTorch (CPU and CUDA, differentiable, no loop over L).

With one state per channel the recurrence h_t = a_t h_{t-1} + x_t has the closed form
    h_t = Σ_{s≤t} exp(S_t − S_s) x_s,   S_t = Σ_{r≤t} log a_r = Σ_{r≤t} Δ_r A,
evaluated as exp(S_t + logcumsumexp_s(log x_s − S_s)) separately for the positive and negative parts of x.
S_t grows with L, so the exponents are formed in float64 to keep float32-level accuracy of the result.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F


def _log_part(x: torch.Tensor, positive: bool) -> torch.Tensor:
    part = x if positive else -x
    # -1e300, a finite stand-in for log(0), keeps logcumsumexp's backward free of inf − inf (a literal, not a
    # module constant: TorchScript does not read global floats)
    return torch.where(part > 0, torch.log(part.clamp_min(1e-300)), torch.full_like(part, -1e300))


def selective_scan_torch(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                         D: Optional[torch.Tensor] = None, delta_bias: Optional[torch.Tensor] = None,
                         delta_softplus: bool = True) -> torch.Tensor:
    """Shapes as `selective_scan_ref`, with N = 1. Returns y in u's dtype. Compiles in TorchScript (no f-strings)."""
    if A.shape[-1] != 1 or B.shape[2] != 1:
        raise ValueError("the torch scan backend supports d_state=1 only, got A of shape {}".format(A.shape))
    batch, channels, length = u.shape
    groups = B.shape[1]
    work = torch.float64
    dt = delta.to(work)
    if delta_bias is not None:
        dt = dt + delta_bias.to(work)[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    uw = u.to(work).view(batch, groups, channels // groups, length)
    dt = dt.view(batch, groups, channels // groups, length)
    Bw, Cw = B.to(work), C.to(work)  # (b, G, 1, L): broadcast over the channels of a group
    x = dt * Bw * uw
    S = torch.cumsum(dt * A.to(work).view(1, groups, channels // groups, 1), dim=-1)
    h = torch.exp(S + torch.logcumsumexp(_log_part(x, True) - S, dim=-1)) \
        - torch.exp(S + torch.logcumsumexp(_log_part(x, False) - S, dim=-1))
    y = Cw * h
    if D is not None:
        y = y + D.to(work).view(1, groups, channels // groups, 1) * uw
    return y.reshape(batch, channels, length).to(u.dtype)
