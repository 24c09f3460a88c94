"""Building blocks of MobileMamba. Each Conv+BN pair knows how to fold itself for inference (`fuse`)."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


def _bn_scale_shift(bn: nn.BatchNorm2d | nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (s, t) with bn(x) == s * x + t in eval mode."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    return scale, shift


class Conv2d_BN(nn.Sequential):
    """Bias-free conv followed by BatchNorm (γ initialised to `bn_weight_init`, β = 0). Keys: `c.*`, `bn.*`."""

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int = 1, stride: int = 1, padding: int = 0,
                 groups: int = 1, bn_weight_init: float = 1.0):
        super().__init__()
        self.add_module("c", nn.Conv2d(in_ch, out_ch, kernel_size, stride, padding, groups=groups, bias=False))
        self.add_module("bn", nn.BatchNorm2d(out_ch))
        nn.init.constant_(self.bn.weight, bn_weight_init)
        nn.init.constant_(self.bn.bias, 0.0)

    @torch.no_grad()
    def fuse(self) -> nn.Conv2d:
        conv, bn = self.c, self.bn
        scale, shift = _bn_scale_shift(bn)
        fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
                          groups=conv.groups, bias=True, device=conv.weight.device, dtype=conv.weight.dtype)
        fused.weight.copy_(conv.weight * scale[:, None, None, None])
        fused.bias.copy_(shift)
        return fused


class BN_Linear(nn.Sequential):
    """BatchNorm1d then Linear (the classifier head). Keys: `bn.*`, `l.*`."""

    def __init__(self, in_features: int, out_features: int, std: float = 0.02):
        super().__init__()
        self.add_module("bn", nn.BatchNorm1d(in_features))
        self.add_module("l", nn.Linear(in_features, out_features))
        nn.init.trunc_normal_(self.l.weight, std=std)
        nn.init.constant_(self.l.bias, 0.0)

    @torch.no_grad()
    def fuse(self) -> nn.Linear:
        scale, shift = _bn_scale_shift(self.bn)
        lin = self.l
        fused = nn.Linear(lin.in_features, lin.out_features, device=lin.weight.device, dtype=lin.weight.dtype)
        fused.weight.copy_(lin.weight * scale[None, :])
        fused.bias.copy_(lin.weight @ shift + lin.bias)
        return fused


class Residual(nn.Module):
    """x + m(x). The inner module is fused in place by `fuse_model`."""

    def __init__(self, m: nn.Module):
        super().__init__()
        self.m = m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.m(x)


class FFN(nn.Module):
    """1x1 expand ×2 → ReLU → 1x1 project (γ of the last BN starts at 0)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.pw1 = Conv2d_BN(dim, hidden)
        self.act = nn.ReLU()
        self.pw2 = Conv2d_BN(hidden, dim, bn_weight_init=0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw2(self.act(self.pw1(x)))


class DWConv2d_BN_ReLU(nn.Sequential):
    """The MRFFI local branch: k×k depthwise conv → BN → ReLU → per-channel 1×1 grouped conv → BN.

    The k×k conv keeps the reference's name `dwconv3x3` whatever k is (state-dict compatibility).
    """

    def __init__(self, dim: int, kernel_size: int = 3):
        super().__init__()
        self.add_module("dwconv3x3", nn.Conv2d(dim, dim, kernel_size, 1, kernel_size // 2, groups=dim, bias=False))
        self.add_module("bn1", nn.BatchNorm2d(dim))
        self.add_module("relu", nn.ReLU())
        self.add_module("dwconv1x1", nn.Conv2d(dim, dim, 1, 1, 0, groups=dim, bias=False))
        self.add_module("bn2", nn.BatchNorm2d(dim))

    @torch.no_grad()
    def fuse(self) -> nn.Sequential:
        def fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
            pair = Conv2d_BN(conv.in_channels, conv.out_channels, conv.kernel_size[0], conv.stride[0],
                             conv.padding[0], groups=conv.groups)
            pair.c, pair.bn = conv, bn
            return pair.fuse()

        return nn.Sequential(fold(self.dwconv3x3, self.bn1), nn.ReLU(), fold(self.dwconv1x1, self.bn2))


class ScaleModule(nn.Module):
    """Learnable per-channel scale, stored as `weight` of shape `dims` (init `init_scale`)."""

    def __init__(self, dims: tuple[int, ...], init_scale: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.full(dims, float(init_scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.weight * x


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over the channel dimension of an NCHW tensor, at each pixel.

    Normalises in the input's dtype, the weights cast to it: SS2D feeds it the scan's float32 output in a bf16 or
    fp16 model too (spec §3: float32 up to the norm).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight.to(x.dtype), self.bias.to(x.dtype), self.eps)
        return x.permute(0, 3, 1, 2)


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN statistics and affine terms, so that every branch of a randomly initialised model contributes.

    At initialisation many BN γ are 0 (FFN and MRFFI outputs), which would hide those branches — the scan among
    them — from a numerical check (fusion, export, backends).
    """
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            n, device = m.num_features, m.weight.device
            m.weight.data = (torch.rand(n, generator=g) + 0.5).to(device)
            m.bias.data = (torch.randn(n, generator=g) * 0.1).to(device)
            m.running_mean = (torch.randn(n, generator=g) * 0.1).to(device)
            m.running_var = (torch.rand(n, generator=g) + 0.5).to(device)
    return model


def fuse_model(module: nn.Module) -> nn.Module:
    """Replace, recursively, every child that has a `fuse()` method by its fused form (in place)."""
    for name, child in list(module.named_children()):
        if hasattr(child, "fuse") and callable(child.fuse):
            fused = child.fuse()
            setattr(module, name, fused)
            fuse_model(fused)
        else:
            fuse_model(child)
    return module
