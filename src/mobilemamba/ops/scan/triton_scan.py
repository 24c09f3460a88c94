"""Selective scan for d_state = 1 as Triton kernels (forward and backward), for CUDA tensors.

Each program owns BLOCK_D channels of one sample and walks the sequence in tiles of BLOCK_L steps; inside a tile
the first-order recurrence h_t = a_t h_{t-1} + x_t is an associative scan over (a, x) pairs, and the last state is
carried to the next tile. The forward pass stores h (float32) for the backward pass, which runs the adjoint
recurrence g_t = C_t dy_t + a_{t+1} g_{t+1} the same way, tiles taken from the end.
Compiled by Triton at first use: users need no build step. Under TRITON_INTERPRET=1 it also runs on the CPU
(slowly), which is how the tests check it without a GPU.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _combine(a1, x1, a2, x2):
    return a1 * a2, a2 * x1 + x2


@triton.jit
def _softplus(x):
    e = tl.exp(tl.minimum(x, 20.0))
    log1p = tl.where(e < 1e-4, e - 0.5 * e * e, tl.log(1.0 + e))
    return tl.where(x > 20.0, x, log1p)


@triton.jit
def _scan_fwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, h_ptr,
                     CH, L, CH_PER_GROUP,
                     HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr, STORE_H: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    b = tl.program_id(0)
    ch = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ch_ok = ch < CH
    group = ch // CH_PER_GROUP
    groups = CH // CH_PER_GROUP
    A = tl.load(A_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)
    Dv = tl.zeros([BLOCK_D], tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)
    row = (b * CH + ch)[:, None] * L
    bc_row = (b * groups + group)[:, None] * L
    last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[None, :]
    h_carry = tl.zeros([BLOCK_D], tl.float32)
    for t0 in range(0, L, BLOCK_L):
        t = t0 + tl.arange(0, BLOCK_L)
        m = ch_ok[:, None] & (t < L)[None, :]
        u = tl.load(u_ptr + row + t[None, :], mask=m, other=0.0).to(tl.float32)
        dt = tl.load(dt_ptr + row + t[None, :], mask=m, other=0.0).to(tl.float32) + bias[:, None]
        if SOFTPLUS:
            dt = _softplus(dt)
        Bt = tl.load(B_ptr + bc_row + t[None, :], mask=m, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc_row + t[None, :], mask=m, other=0.0).to(tl.float32)
        a = tl.where(m, tl.exp(dt * A[:, None]), 1.0)
        x = tl.where(m, dt * Bt * u, 0.0)
        acc_a, acc_x = tl.associative_scan((a, x), axis=1, combine_fn=_combine)
        h = acc_a * h_carry[:, None] + acc_x
        y = Ct * h + Dv[:, None] * u
        tl.store(y_ptr + row + t[None, :], y.to(y_ptr.dtype.element_ty), mask=m)
        if STORE_H:
            tl.store(h_ptr + row + t[None, :], h, mask=m)
        h_carry = tl.sum(tl.where(last, h, 0.0), axis=1)


@triton.jit
def _scan_bwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, h_ptr, dy_ptr,
                     du_ptr, ddt_ptr, dBc_ptr, dCc_ptr, dA_ptr, dD_ptr, dbias_ptr,
                     CH, L, CH_PER_GROUP,
                     HAS_D: tl.constexpr, HAS_BIAS: tl.constexpr, SOFTPLUS: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_L: tl.constexpr):
    b = tl.program_id(0)
    ch = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ch_ok = ch < CH
    group = ch // CH_PER_GROUP
    groups = CH // CH_PER_GROUP
    A = tl.load(A_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)
    Dv = tl.zeros([BLOCK_D], tl.float32)
    if HAS_D:
        Dv = tl.load(D_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)
    bias = tl.zeros([BLOCK_D], tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + ch, mask=ch_ok, other=0.0).to(tl.float32)
    row = (b * CH + ch)[:, None] * L
    bc_row = (b * groups + group)[:, None] * L
    last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[None, :]
    g_carry = tl.zeros([BLOCK_D], tl.float32)
    acc_dA = tl.zeros([BLOCK_D], tl.float32)
    acc_dD = tl.zeros([BLOCK_D], tl.float32)
    acc_dbias = tl.zeros([BLOCK_D], tl.float32)
    for r0 in range(0, L, BLOCK_L):
        t = L - 1 - (r0 + tl.arange(0, BLOCK_L))  # walking backwards in time
        valid = t >= 0
        m = ch_ok[:, None] & valid[None, :]
        m_next = ch_ok[:, None] & (valid & (t + 1 < L))[None, :]
        m_prev = ch_ok[:, None] & (valid & (t >= 1))[None, :]
        u = tl.load(u_ptr + row + t[None, :], mask=m, other=0.0).to(tl.float32)
        dt_raw = tl.load(dt_ptr + row + t[None, :], mask=m, other=0.0).to(tl.float32) + bias[:, None]
        dt_next = tl.load(dt_ptr + row + t[None, :] + 1, mask=m_next, other=0.0).to(tl.float32) + bias[:, None]
        dt = dt_raw
        if SOFTPLUS:
            dt = _softplus(dt_raw)
            dt_next = _softplus(dt_next)
        Bt = tl.load(B_ptr + bc_row + t[None, :], mask=m, other=0.0).to(tl.float32)
        Ct = tl.load(C_ptr + bc_row + t[None, :], mask=m, other=0.0).to(tl.float32)
        dy = tl.load(dy_ptr + row + t[None, :], mask=m, other=0.0).to(tl.float32)
        h = tl.load(h_ptr + row + t[None, :], mask=m, other=0.0)
        h_prev = tl.load(h_ptr + row + t[None, :] - 1, mask=m_prev, other=0.0)
        # g_t = C_t dy_t + a_{t+1} g_{t+1}: in reversed order, the decay of step j is a at time t+1
        a_next = tl.where(m_next, tl.exp(dt_next * A[:, None]), 0.0)
        a_next = tl.where(m, a_next, 1.0)
        x = tl.where(m, Ct * dy, 0.0)
        acc_a, acc_x = tl.associative_scan((a_next, x), axis=1, combine_fn=_combine)
        g = acc_a * g_carry[:, None] + acc_x
        g_carry = tl.sum(tl.where(last, g, 0.0), axis=1)
        a = tl.exp(dt * A[:, None])
        du = dy * Dv[:, None] + g * dt * Bt
        ddt = g * (Bt * u + h_prev * A[:, None] * a)
        if SOFTPLUS:
            ddt = ddt / (1.0 + tl.exp(-dt_raw))
        ddt = tl.where(m, ddt, 0.0)
        tl.store(du_ptr + row + t[None, :], du.to(du_ptr.dtype.element_ty), mask=m)
        tl.store(ddt_ptr + row + t[None, :], ddt.to(ddt_ptr.dtype.element_ty), mask=m)
        tl.store(dBc_ptr + row + t[None, :], g * dt * u, mask=m)
        tl.store(dCc_ptr + row + t[None, :], dy * h, mask=m)
        acc_dA += tl.sum(tl.where(m, g * h_prev * dt * a, 0.0), axis=1)
        acc_dD += tl.sum(tl.where(m, dy * u, 0.0), axis=1)
        acc_dbias += tl.sum(ddt, axis=1)
    out = b * CH + ch
    tl.store(dA_ptr + out, acc_dA, mask=ch_ok)
    tl.store(dD_ptr + out, acc_dD, mask=ch_ok)
    tl.store(dbias_ptr + out, acc_dbias, mask=ch_ok)


BLOCK_D = 16
BLOCK_L = 64


def _grid(batch: int, channels: int) -> tuple[int, int]:
    return (batch, triton.cdiv(channels, BLOCK_D))


# The kernels as two PyTorch operators (torch.library custom ops): torch.compile treats each as one opaque node
# (shapes from the fake implementations), so a model using this backend compiles as one graph, and AOTAutograd
# puts the backward op into the compiled backward. Eager calls run exactly the kernels of the autograd formula.


def _optional_operands(D: Optional[Tensor], delta_bias: Optional[Tensor], A: Tensor
                       ) -> tuple[bool, bool, Tensor, Tensor]:
    """(has D, has Δ-bias, D, Δ-bias) for a kernel launch: an absent operand is passed as A, never read."""
    has_d, has_bias = D is not None, delta_bias is not None
    return has_d, has_bias, D.contiguous() if has_d else A, delta_bias.contiguous() if has_bias else A


@torch.library.custom_op("mobilemamba::selective_scan_fwd", mutates_args=())
def selective_scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       delta_bias: Optional[Tensor], delta_softplus: bool, store_h: bool,
                       float_out: bool = False) -> tuple[Tensor, Tensor]:
    """(y, h): the scan's output (float32 with `float_out`, else u's dtype) and, when `store_h`, its float32
    states for the backward (else an empty tensor)."""
    u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
    batch, channels, length = u.shape
    groups = B.shape[1]
    has_d, has_bias, D_arg, bias_arg = _optional_operands(D, delta_bias, A)
    y = torch.empty(u.shape, device=u.device, dtype=torch.float32 if float_out else u.dtype)
    h = torch.empty(u.shape if store_h else (0,), device=u.device, dtype=torch.float32)
    _scan_fwd_kernel[_grid(batch, channels)](
        u, delta, A, B, C, D_arg, bias_arg, y, h if store_h else y, channels, length, channels // groups,
        HAS_D=has_d, HAS_BIAS=has_bias, SOFTPLUS=bool(delta_softplus), STORE_H=store_h,
        BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L)
    return y, h


@selective_scan_fwd.register_fake
def _(u, delta, A, B, C, D, delta_bias, delta_softplus, store_h, float_out=False):
    y = u.new_empty(u.shape, dtype=torch.float32 if float_out else u.dtype)
    return y, u.new_empty(u.shape if store_h else (0,), dtype=torch.float32)


@torch.library.custom_op("mobilemamba::selective_scan_bwd", mutates_args=())
def selective_scan_bwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Optional[Tensor],
                       delta_bias: Optional[Tensor], h: Tensor, dy: Tensor, delta_softplus: bool
                       ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(du, dΔ, dB and dC per channel, dA, dD and dΔ-bias per sample): the kernel's outputs, before the
    reductions over channel groups and samples (left to the autograd formula, where the compiler can fuse them)."""
    u, delta, A, B, C, h, dy = (t.contiguous() for t in (u, delta, A, B, C, h, dy))
    batch, channels, length = u.shape
    groups = B.shape[1]
    has_d, has_bias, D_arg, bias_arg = _optional_operands(D, delta_bias, A)
    du = torch.empty(u.shape, device=u.device, dtype=u.dtype)
    ddelta = torch.empty(delta.shape, device=u.device, dtype=delta.dtype)
    dBc = torch.empty(u.shape, device=u.device, dtype=torch.float32)
    dCc = torch.empty_like(dBc)
    per_channel = [torch.empty(batch, channels, device=u.device, dtype=torch.float32) for _ in range(3)]
    _scan_bwd_kernel[_grid(batch, channels)](
        u, delta, A, B, C, D_arg, bias_arg, h, dy, du, ddelta, dBc, dCc, *per_channel,
        channels, length, channels // groups,
        HAS_D=has_d, HAS_BIAS=has_bias, SOFTPLUS=bool(delta_softplus), BLOCK_D=BLOCK_D, BLOCK_L=BLOCK_L)
    return (du, ddelta, dBc, dCc, *per_channel)


@selective_scan_bwd.register_fake
def _(u, delta, A, B, C, D, delta_bias, h, dy, delta_softplus):
    per_channel = [u.new_empty((u.shape[0], u.shape[1]), dtype=torch.float32) for _ in range(3)]
    return (u.new_empty(u.shape), delta.new_empty(delta.shape), u.new_empty(u.shape, dtype=torch.float32),
            u.new_empty(u.shape, dtype=torch.float32), *per_channel)


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, delta_bias, delta_softplus, store_h, _float_out = inputs
    _, h = output
    ctx.mark_non_differentiable(h)
    ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, h)
    ctx.delta_softplus = delta_softplus


def _backward(ctx, dy, _dh):
    u, delta, A, B, C, D, delta_bias, h = ctx.saved_tensors
    if h.numel() != u.numel():
        raise RuntimeError("selective_scan_fwd ran with store_h=False: it has no states for a backward pass")
    batch, channels, length = u.shape
    groups = B.shape[1]
    du, ddelta, dBc, dCc, *per_channel = torch.ops.mobilemamba.selective_scan_bwd(
        u, delta, A, B, C, D, delta_bias, h, dy, ctx.delta_softplus)
    dA, dD, dbias = (p.sum(0) for p in per_channel)
    group_sum = lambda g: g.view(batch, groups, channels // groups, length).sum(2, keepdim=True)  # noqa: E731
    dB, dC = group_sum(dBc).to(B.dtype), group_sum(dCc).to(C.dtype)
    return (du, ddelta, dA.view(A.shape).to(A.dtype), dB, dC,
            dD.to(D.dtype) if D is not None else None, dbias.to(delta_bias.dtype) if delta_bias is not None else None,
            None, None, None)


selective_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def selective_scan_triton(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                          D: torch.Tensor | None = None, delta_bias: torch.Tensor | None = None,
                          delta_softplus: bool = True, float_out: bool = False) -> torch.Tensor:
    """Shapes as `selective_scan_ref`, with N = 1 (B, C: (b, G, 1, L)); y in float32 with `float_out`."""
    if A.shape[-1] != 1 or B.shape[2] != 1:
        raise ValueError(f"the triton scan backend supports d_state=1 only, got A {tuple(A.shape)}")
    u, delta, A, B, C = (t.contiguous() for t in (u, delta, A, B, C))
    D = D.contiguous() if D is not None else None
    delta_bias = delta_bias.contiguous() if delta_bias is not None else None
    store_h = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (u, delta, A, B, C, D, delta_bias))
    y, _ = torch.ops.mobilemamba.selective_scan_fwd(u, delta, A, B, C, D, delta_bias, bool(delta_softplus), store_h,
                                                    bool(float_out))
    return y
