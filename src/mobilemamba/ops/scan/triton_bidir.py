"""SS2D's two scan directions and their merge as one Triton kernel, on token-major operands (forward and backward).

SS2D scans every channel of a (B, L, d) token sequence (the memory of a channels_last feature map) twice: along
the sequence and back, each direction with its own Δ, A, B, C, D and Δ-bias, and adds the results:

    y[t] = y_fwd[t] + y_bwd[t],  y_fwd: h_t = a_t h_{t-1} + x_t from t = 0;  y_bwd: h_t = a_t h_{t+1} + x_t from
    t = L - 1;  a_t = exp(Δ_t A), x_t = Δ_t B_t u_t, Δ = softplus(Δ_raw + Δ-bias), y_k[t] = C_t h_t + D u_t,

which is `selective_scan` on the stacked [u, flip(u)] with the second output flipped back (the published
formulation, SS2D's channel-major path) without any of the flipped, stacked or transposed copies: the kernel reads
u once per direction in place and writes y once, in float32 (spec §3.7: normalised before the cast back).

Each program owns BLOCK_D channels of one sample: it walks the sequence in tiles for the first direction, writing
y, then backwards for the second, adding to y (a barrier between: another thread of the program may hold that
position). Both walks load tiles in their scan order (positions descending for the second), so the scan inside a
tile is always a forward `tl.associative_scan`. The backward pass runs the adjoint recurrences the same way, each
against its direction's scan order, from the states h the forward pass stored; dB and dC are summed over the
program's channels in the kernel.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .triton_scan import _combine, _softplus

# Tiles of 32 steps x 32 channels (1024 elements; short sequences get more channels per program): of 32x1024, 64x2048
# and 128x4096 the fastest in every S6 stage for inference, and for training in stages 1-2 (stage 3: 6 % behind
# 128x4096), on an H200 (docs/results.md#scan-tiles).
MAX_BLOCK_L = 32  # sequence steps per tile
TILE_ELEMENTS = 1024  # BLOCK_L x BLOCK_D


@triton.jit
def _tile_positions(r0, L, REVERSE: tl.constexpr, BLOCK_L: tl.constexpr):
    """(positions, valid) of the tile `r0` steps into the scan: ascending from 0, or descending from L - 1."""
    steps = r0 + tl.arange(0, BLOCK_L)
    if REVERSE:
        return L - 1 - steps, steps < L
    return steps, steps < L


@triton.jit
def _bidir_fwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, y_ptr, h_ptr, L, DIM, bc_sb, bc_sl, bc_sk,
                      STORE_H: tl.constexpr, BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    ch = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    ch_ok = ch < DIM
    d_both = tl.load(D_ptr + ch, mask=ch_ok, other=0.0) + tl.load(D_ptr + DIM + ch, mask=ch_ok, other=0.0)
    last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[:, None]
    for k in tl.static_range(2):
        A = tl.load(A_ptr + k * DIM + ch, mask=ch_ok, other=0.0)
        bias = tl.load(bias_ptr + k * DIM + ch, mask=ch_ok, other=0.0)
        h_carry = tl.zeros([BLOCK_D], tl.float32)
        for r0 in range(0, L, BLOCK_L):
            t, t_ok = _tile_positions(r0, L, k == 1, BLOCK_L)
            m = t_ok[:, None] & ch_ok[None, :]
            token = b * L + t
            at_token = token[:, None] * DIM + ch[None, :]
            at_dir = (token * 2 + k)[:, None] * DIM + ch[None, :]
            u = tl.load(u_ptr + at_token, mask=m, other=0.0).to(tl.float32)
            dt = _softplus(tl.load(dt_ptr + at_dir, mask=m, other=0.0).to(tl.float32) + bias[None, :])
            at_bc = b * bc_sb + t * bc_sl + k * bc_sk  # B and C: strided views of x_proj's output
            Bt = tl.load(B_ptr + at_bc, mask=t_ok, other=0.0).to(tl.float32)
            Ct = tl.load(C_ptr + at_bc, mask=t_ok, other=0.0).to(tl.float32)
            a = tl.where(m, tl.exp(dt * A[None, :]), 1.0)
            x = tl.where(m, dt * Bt[:, None] * u, 0.0)
            acc_a, acc_x = tl.associative_scan((a, x), axis=0, combine_fn=_combine)
            h = acc_a * h_carry[None, :] + acc_x
            y = Ct[:, None] * h
            if k == 0:
                y += d_both[None, :] * u  # the D-skip of both directions
            else:
                y += tl.load(y_ptr + at_token, mask=m, other=0.0, cache_modifier=".cg")
            tl.store(y_ptr + at_token, y, mask=m)
            if STORE_H:
                tl.store(h_ptr + at_dir, h, mask=m)
            h_carry = tl.sum(tl.where(last, h, 0.0), axis=0)
        if k == 0:
            tl.debug_barrier()  # y of the first direction is complete before the second adds to it


@triton.jit
def _bidir_bwd_kernel(u_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, bias_ptr, h_ptr, dy_ptr,
                      du_ptr, ddt_ptr, dbc_ptr, dparam_ptr, L, DIM, BATCH, bc_sb, bc_sl, bc_sk,
                      BLOCK_L: tl.constexpr, BLOCK_D: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    block = tl.program_id(1)
    ch = block * BLOCK_D + tl.arange(0, BLOCK_D)
    ch_ok = ch < DIM
    d_both = tl.load(D_ptr + ch, mask=ch_ok, other=0.0) + tl.load(D_ptr + DIM + ch, mask=ch_ok, other=0.0)
    last = (tl.arange(0, BLOCK_L) == BLOCK_L - 1)[:, None]
    acc_dD = tl.zeros([BLOCK_D], tl.float32)
    for k in tl.static_range(2):
        A = tl.load(A_ptr + k * DIM + ch, mask=ch_ok, other=0.0)
        bias = tl.load(bias_ptr + k * DIM + ch, mask=ch_ok, other=0.0)
        g_carry = tl.zeros([BLOCK_D], tl.float32)
        acc_dA = tl.zeros([BLOCK_D], tl.float32)
        acc_dbias = tl.zeros([BLOCK_D], tl.float32)
        for r0 in range(0, L, BLOCK_L):
            # the adjoint runs against the direction's scan order: the first direction's from the end
            t, t_ok = _tile_positions(r0, L, k == 0, BLOCK_L)
            if k == 0:  # the next step of the direction's own scan
                t_next = t + 1
            else:
                t_next = t - 1
            next_ok = t_ok & (t_next >= 0) & (t_next < L)
            m = t_ok[:, None] & ch_ok[None, :]
            m_next = next_ok[:, None] & ch_ok[None, :]
            token = b * L + t
            at_token = token[:, None] * DIM + ch[None, :]
            at_dir = (token * 2 + k)[:, None] * DIM + ch[None, :]
            at_dir_next = ((b * L + t_next) * 2 + k)[:, None] * DIM + ch[None, :]
            u = tl.load(u_ptr + at_token, mask=m, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + at_token, mask=m, other=0.0).to(tl.float32)
            h = tl.load(h_ptr + at_dir, mask=m, other=0.0)
            dt_raw = tl.load(dt_ptr + at_dir, mask=m, other=0.0).to(tl.float32) + bias[None, :]
            dt_next = _softplus(tl.load(dt_ptr + at_dir_next, mask=m_next, other=0.0).to(tl.float32) + bias[None, :])
            dt = _softplus(dt_raw)
            at_bc = b * bc_sb + t * bc_sl + k * bc_sk
            Bt = tl.load(B_ptr + at_bc, mask=t_ok, other=0.0).to(tl.float32)[:, None]
            Ct = tl.load(C_ptr + at_bc, mask=t_ok, other=0.0).to(tl.float32)[:, None]
            # g_t = C_t dy_t + a_next g_next: the decay of a step is that of the scan's next position
            a_next = tl.where(m_next, tl.exp(dt_next * A[None, :]), 0.0)
            a_next = tl.where(m, a_next, 1.0)
            acc_a, acc_x = tl.associative_scan((a_next, tl.where(m, Ct * dy, 0.0)), axis=0, combine_fn=_combine)
            g = acc_a * g_carry[None, :] + acc_x
            g_carry = tl.sum(tl.where(last, g, 0.0), axis=0)
            x = dt * Bt * u
            decayed = h - x  # a_t h_prev: the state carried into step t, without reading h at the previous step
            du = g * dt * Bt
            if k == 0:
                du += dy * d_both[None, :]
                acc_dD += tl.sum(tl.where(m, dy * u, 0.0), axis=0)
            else:
                du += tl.load(du_ptr + at_token, mask=m, other=0.0, cache_modifier=".cg")
            tl.store(du_ptr + at_token, du, mask=m)
            ddt = tl.where(m, g * (Bt * u + A[None, :] * decayed) / (1.0 + tl.exp(-dt_raw)), 0.0)
            tl.store(ddt_ptr + at_dir, ddt.to(ddt_ptr.dtype.element_ty), mask=m)
            # dB and dC of this direction, summed over the program's channels: (channel block, sample, t, 2k + 0|1)
            at_dbc = ((block * BATCH + b) * L + t) * 4 + 2 * k
            tl.store(dbc_ptr + at_dbc, tl.sum(tl.where(m, g * dt * u, 0.0), axis=1), mask=t_ok)
            tl.store(dbc_ptr + at_dbc + 1, tl.sum(tl.where(m, dy * h, 0.0), axis=1), mask=t_ok)
            acc_dA += tl.sum(tl.where(m, g * dt * decayed, 0.0), axis=0)
            acc_dbias += tl.sum(ddt, axis=0)
        tl.store(dparam_ptr + (b * 5 + k) * DIM + ch, acc_dA, mask=ch_ok)
        tl.store(dparam_ptr + (b * 5 + 2 + k) * DIM + ch, acc_dbias, mask=ch_ok)
        if k == 0:
            tl.debug_barrier()  # du of the first direction is complete before the second adds to it
    tl.store(dparam_ptr + (b * 5 + 4) * DIM + ch, acc_dD, mask=ch_ok)


def tile_sizes(length: int) -> tuple[int, int]:
    """(BLOCK_L, BLOCK_D) for a sequence of `length`: tiles of up to MAX_BLOCK_L steps, TILE_ELEMENTS in all."""
    # at least 16 steps: masked steps cost nothing wrong, and Triton's compiled scan is not trusted on an axis of 1
    block_l = min(MAX_BLOCK_L, triton.next_power_of_2(max(length, 16)))
    return block_l, max(16, min(128, TILE_ELEMENTS // block_l))


# The kernels as PyTorch operators (torch.library custom ops), so torch.compile keeps each as one node of the graph
# and AOTAutograd puts the backward op into the compiled backward.
# Shapes: u (b, L, d); delta (b, L, 2d) = (b, L, direction, d); A (2d, 1); B, C (b, L, 2); D, delta_bias (2d).
# B and C are read in place through their strides (SS2D passes views of x_proj's output): no copies.


def _operands(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor
              ) -> tuple[Tensor, ...]:
    """The operands as the kernels read them: u, delta contiguous; A, D, Δ-bias contiguous float32; B and C as they
    are when their strides agree (else both contiguous)."""
    if B.stride() != C.stride():
        B, C = B.contiguous(), C.contiguous()
    f32 = lambda t: t.float().contiguous()  # noqa: E731
    return u.contiguous(), delta.contiguous(), f32(A), B, C, f32(D), f32(delta_bias)


@torch.library.custom_op("mobilemamba::bidir_scan_fwd", mutates_args=())
def bidir_scan_fwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor,
                   store_h: bool) -> tuple[Tensor, Tensor]:
    """(y, h): y (b, L, d) in float32 and, when `store_h`, the float32 states (b, L, 2d) for the backward pass (else
    an empty tensor)."""
    u, delta, A, B, C, D, delta_bias = _operands(u, delta, A, B, C, D, delta_bias)
    batch, length, dim = u.shape
    y = torch.empty(u.shape, device=u.device, dtype=torch.float32)
    h = torch.empty(delta.shape if store_h else (0,), device=u.device, dtype=torch.float32)
    block_l, block_d = tile_sizes(length)
    _bidir_fwd_kernel[(batch, triton.cdiv(dim, block_d))](
        u, delta, A, B, C, D, delta_bias, y, h if store_h else y, length, dim, *B.stride(),
        STORE_H=store_h, BLOCK_L=block_l, BLOCK_D=block_d)
    return y, h


@bidir_scan_fwd.register_fake
def _(u, delta, A, B, C, D, delta_bias, store_h):
    return u.new_empty(u.shape, dtype=torch.float32), u.new_empty(delta.shape if store_h else (0,),
                                                                  dtype=torch.float32)


@torch.library.custom_op("mobilemamba::bidir_scan_bwd", mutates_args=())
def bidir_scan_bwd(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, delta_bias: Tensor,
                   h: Tensor, dy: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(du in float32, dΔ, dB|dC per channel block (blocks, b, L, 4), per sample (b, 5, d): dA of both directions,
    dΔ-bias of both, dD): the kernel's outputs, before the sums over channel blocks and samples (left to the
    autograd formula, where the compiler can fuse them)."""
    u, delta, A, B, C, D, delta_bias = _operands(u, delta, A, B, C, D, delta_bias)
    h, dy = h.contiguous(), dy.contiguous()
    batch, length, dim = u.shape
    block_l, block_d = tile_sizes(length)
    blocks = triton.cdiv(dim, block_d)
    du = torch.empty(u.shape, device=u.device, dtype=torch.float32)
    ddelta = torch.empty_like(delta)
    dbc = torch.empty(blocks, batch, length, 4, device=u.device, dtype=torch.float32)
    per_sample = torch.empty(batch, 5, dim, device=u.device, dtype=torch.float32)
    _bidir_bwd_kernel[(batch, blocks)](
        u, delta, A, B, C, D, delta_bias, h, dy, du, ddelta, dbc, per_sample, length, dim, batch, *B.stride(),
        BLOCK_L=block_l, BLOCK_D=block_d)
    return du, ddelta, dbc, per_sample


@bidir_scan_bwd.register_fake
def _(u, delta, A, B, C, D, delta_bias, h, dy):
    batch, length, dim = u.shape
    blocks = triton.cdiv(dim, tile_sizes(length)[1])
    return (u.new_empty(u.shape, dtype=torch.float32), delta.new_empty(delta.shape),
            u.new_empty((blocks, batch, length, 4), dtype=torch.float32),
            u.new_empty((batch, 5, dim), dtype=torch.float32))


def _setup_context(ctx, inputs, output):
    u, delta, A, B, C, D, delta_bias, _store_h = inputs
    _, h = output
    ctx.mark_non_differentiable(h)
    ctx.save_for_backward(u, delta, A, B, C, D, delta_bias, h)


def _backward(ctx, dy, _dh):
    u, delta, A, B, C, D, delta_bias, h = ctx.saved_tensors
    if h.numel() != delta.numel():
        raise RuntimeError("bidir_scan_fwd ran with store_h=False: it has no states for a backward pass")
    du, ddelta, dbc, per_sample = torch.ops.mobilemamba.bidir_scan_bwd(u, delta, A, B, C, D, delta_bias, h, dy)
    dbc = dbc.sum(0)
    per_sample = per_sample.sum(0)
    dA, dbias, dD = per_sample[:2].reshape(A.shape), per_sample[2:4].flatten(), per_sample[4].repeat(2)
    return (du.to(u.dtype), ddelta, dA.to(A.dtype), dbc[..., 0::2].to(B.dtype), dbc[..., 1::2].to(C.dtype),
            dD.to(D.dtype), dbias.to(delta_bias.dtype), None)


bidir_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def bidirectional_scan_triton(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor,
                              delta_bias: Tensor) -> Tensor:
    """y (b, L, d), float32: both directions of SS2D's scan, merged (module docstring; shapes above)."""
    store_h = torch.is_grad_enabled() and any(t.requires_grad for t in (u, delta, A, B, C, D, delta_bias))
    y, _ = torch.ops.mobilemamba.bidir_scan_fwd(u, delta, A, B, C, D, delta_bias, store_h)
    return y
