"""SS2D as MobileMamba calls it: d_state 1, two scan directions (row-major and reversed), channel-first.

in_proj (1x1 Conv+BN) → (x, z) → x: depthwise 3x3 + SiLU → two-direction selective scan → LayerNorm over
channels → gate by SiLU(z) → out_proj (1x1 Conv+BN).

The scan core has two equal forms. The channel-major one is the published formulation (spec §3.7: flatten, stack
with the flipped copy, one-direction scan, flip back and add); it runs with every one-direction scan backend and is
what exports to ONNX. The token-major one (backend 'triton_bidir') works on (B, L, C), the memory of a channels_last
tensor as it is, and scans both directions in one kernel: no flipped, stacked or transposed copies, and the
LayerNorm runs over the contiguous channel axis.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ops.scan import bidirectional_scan, resolve_backend, selective_scan
from .layers import Conv2d_BN, LayerNorm2d

K_DIRECTIONS = 2
torch.fx.wrap("selective_scan")  # one node of an FX graph: the dispatcher branches on the input's device


class SS2D(nn.Module):
    def __init__(self, d_model: int, ssm_ratio: float = 2.0, d_state: int = 1, scan_backend: str = "auto"):
        super().__init__()
        d_inner = int(ssm_ratio * d_model)
        rank = math.ceil(d_model / 16)
        self.d_inner, self.dt_rank, self.d_state = d_inner, rank, d_state
        self.scan_backend = scan_backend
        self.in_proj = Conv2d_BN(d_model, 2 * d_inner)
        self.act = nn.SiLU()
        self.conv2d = nn.Conv2d(d_inner, d_inner, 3, 1, 1, groups=d_inner, bias=True)
        # 'v2' initialisation of the reference: x_proj as stacked nn.Linear defaults, dt weights/bias 0.1·U[0,1),
        # A = -1 (A_logs = 0), D = 1.
        bound = 1.0 / math.sqrt(d_inner)
        self.x_proj_weight = nn.Parameter(torch.empty(K_DIRECTIONS, rank + 2 * d_state, d_inner).uniform_(-bound, bound))
        self.dt_projs_weight = nn.Parameter(0.1 * torch.rand(K_DIRECTIONS, d_inner, rank))
        self.dt_projs_bias = nn.Parameter(0.1 * torch.rand(K_DIRECTIONS, d_inner))
        self.A_logs = nn.Parameter(torch.zeros(K_DIRECTIONS * d_inner, d_state))
        self.Ds = nn.Parameter(torch.ones(K_DIRECTIONS * d_inner))
        self.out_norm = LayerNorm2d(d_inner)
        self.out_proj = Conv2d_BN(d_inner, d_model)

    def forward_core(self, x: torch.Tensor) -> torch.Tensor:
        """(B, d_inner, H, W) → (B, d_inner, H, W): scan both directions, merge per sample, LayerNorm."""
        if torch.jit.is_scripting():  # TorchScript compiles the channel-major path alone (the torch scan)
            return self._core_channel_major(x)
        else:
            return self._core_dispatched(x)

    @torch.jit.unused
    def _core_dispatched(self, x: torch.Tensor) -> torch.Tensor:
        """The token-major core where the backend resolves to 'triton_bidir'; FX tracing (a Proxy input, whose device
        is unknown) records the channel-major one, whose scan is a leaf."""
        if not isinstance(x, torch.fx.Proxy) and resolve_backend(self.scan_backend, x.device,
                                                                   bidirectional=True) == "triton_bidir":
            return self._core_token_major(x)
        return self._core_channel_major(x)

    def _core_token_major(self, x: torch.Tensor) -> torch.Tensor:
        if self.d_state != 1:
            raise ValueError(f"scan backend 'triton_bidir' supports d_state=1 only, got {self.d_state}")
        b, d, h, w = x.shape
        u = x.permute(0, 2, 3, 1).reshape(b, h * w, d)  # a view of a channels_last x
        dbl = F.linear(u, self.x_proj_weight.flatten(0, 1))  # (b, L, 2·(R+2)): per direction [dt (R), B, C]
        delta = F.linear(dbl, self._dt_proj_matrix())  # (b, L, 2·d), direction-major within a token
        bc = dbl.view(b, h * w, K_DIRECTIONS, -1)[..., self.dt_rank:]
        y = bidirectional_scan(u, delta, -torch.exp(self.A_logs.float()), bc[..., 0], bc[..., 1], self.Ds.float(),
                               self.dt_projs_bias.float().flatten(), backend="triton_bidir")
        norm = self.out_norm
        y = F.layer_norm(y, norm.normalized_shape, norm.weight, norm.bias, norm.eps)  # float32 (spec §3)
        return y.view(b, h, w, d).permute(0, 3, 1, 2).to(x.dtype)

    def _dt_proj_matrix(self) -> torch.Tensor:
        """dt_proj of both directions as one block-diagonal (2·d_inner, 2·(R+2)) matrix over x_proj's output (zero
        columns for B and C): one GEMM writes Δ token-major, where a batched product over the two directions would
        write it direction-major and need a transposed copy."""
        return torch.block_diag(*F.pad(self.dt_projs_weight, (0, 2 * self.d_state)))

    def _core_channel_major(self, x: torch.Tensor) -> torch.Tensor:
        b, d, h, w = x.shape
        length = h * w
        u = x.flatten(2)
        xs = torch.stack([u, u.flip(-1)], dim=1)  # (B, 2, d, L)
        dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight.to(xs.dtype))
        dts, Bs, Cs = torch.split(dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight.to(dts.dtype))
        # -1 stands for K_DIRECTIONS (· d): TorchScript reads no module-level ints
        y = selective_scan(
            xs.reshape(b, -1, length), dts.reshape(b, -1, length),
            -torch.exp(self.A_logs.float()), Bs.contiguous(), Cs.contiguous(), self.Ds.float(),
            self.dt_projs_bias.float().flatten(), delta_softplus=True, backend=self.scan_backend, float_out=True,
        ).view(b, -1, d, length)
        y = y[:, 0] + y[:, 1].flip(-1)  # float32 up to the LayerNorm (spec §3): fp16 would overflow here
        return self.out_norm(y.view(b, d, h, w)).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(x).chunk(2, dim=1)
        x = self.act(self.conv2d(x))
        y = self.forward_core(x) * self.act(z)
        return self.out_proj(y)
