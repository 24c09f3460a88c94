"""Folding BatchNorm into the preceding convolution, for a teacher that only runs inference.

Two steps:
1. the model's own ``fuse()`` if it has one (MobileMamba), then timm's ``reparameterize_model``
   (sub-modules that fuse themselves: ``fuse()`` / ``reparameterize()``, e.g. RepVGG blocks);
2. a generic pass: one probe forward with hooks finds every BatchNorm2d whose input is exactly the
   output tensor of a Conv2d (each called once), whatever the module layout (``nn.Sequential``,
   timm ``ConvNormAct``, ResNet's ``conv1``/``bn1`` …). The conv absorbs the BN, the BN becomes
   Identity (timm's ``BatchNormAct2d`` becomes its drop + act part).

A conv output also used elsewhere (e.g. by a residual add) would be changed by the fold; hooks
cannot see that, so :func:`fuse_bn` checks the probe's output and undoes everything if it moved.

With s = γ/√(σ²+ε): W' = W·s (per output channel), b' = (b − μ)·s + β.
"""
from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import Tensor, nn

from mobilemamba.models.factory import reparameterized

try:  # classes whose structure we know; optional so a timm change cannot break the import
    from timm.layers import BatchNormAct2d, Conv2dSame
except ImportError:  # pragma: no cover
    BatchNormAct2d = Conv2dSame = None  # type: ignore[assignment,misc]

# exact types only: a Conv2d subclass such as StdConv2d re-normalizes its weight in forward.
_CONVS = tuple(t for t in (nn.Conv2d, Conv2dSame) if t is not None)
_BNS = tuple(t for t in (nn.BatchNorm2d, BatchNormAct2d) if t is not None)


def _foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (type(conv) in _CONVS and type(bn) in _BNS and bn.running_mean is not None
            and bn.num_features == conv.out_channels)


@torch.no_grad()
def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Module:
    """Scale/shift ``conv`` in place so it computes bn(conv(x)); returns what replaces ``bn``."""
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    bias = conv.bias.double() if conv.bias is not None else torch.zeros_like(scale)
    bias = (bias - bn.running_mean.double()) * scale
    if bn.bias is not None:
        bias = bias + bn.bias.double()
    conv.weight.copy_((conv.weight.double() * scale.view(-1, 1, 1, 1)).to(conv.weight.dtype))
    if conv.bias is None:
        conv.bias = nn.Parameter(torch.empty_like(bn.running_mean, dtype=conv.weight.dtype),
                                 requires_grad=conv.weight.requires_grad)
    conv.bias.copy_(bias.to(conv.bias.dtype))
    if BatchNormAct2d is not None and type(bn) is BatchNormAct2d:
        return nn.Sequential(bn.drop, bn.act)
    return nn.Identity()


def find_conv_bn_pairs(model: nn.Module, probe: Tensor) -> list[tuple[nn.Module, nn.Module]]:
    """(conv, bn) pairs where bn's input is conv's output, seen in one forward of ``probe``."""
    produced: dict[int, tuple[nn.Module, Tensor]] = {}  # id(output) → (conv, output kept alive)
    calls: Counter[int] = Counter()
    candidates: list[tuple[nn.Module, nn.Module]] = []

    def after_conv(module: nn.Module, _args: tuple, out: Tensor) -> None:
        calls[id(module)] += 1
        produced[id(out)] = (module, out)

    def before_bn(module: nn.Module, args: tuple) -> None:
        calls[id(module)] += 1
        hit = produced.get(id(args[0])) if args else None
        if hit is not None and _foldable(hit[0], module):
            candidates.append((hit[0], module))

    hooks = [m.register_forward_hook(after_conv) for m in model.modules() if type(m) in _CONVS]
    hooks += [m.register_forward_pre_hook(before_bn) for m in model.modules() if type(m) in _BNS]
    try:
        with torch.inference_mode():
            model(probe)
    finally:
        for hook in hooks:
            hook.remove()
    return [(c, b) for c, b in candidates if calls[id(c)] == 1 and calls[id(b)] == 1]


def _replace(model: nn.Module, old: nn.Module, new: nn.Module) -> None:
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is old:
                parent._modules[name] = new


def fuse_bn(model: nn.Module, probe: Tensor, rtol: float = 1e-2) -> tuple[nn.Module, int]:
    """Inference-only BN folding; returns (model, number of pairs folded by the generic pass).

    ``probe``: an example batch on the model's device. If the folded model's output differs from
    the original by more than ``rtol`` (relative to the largest logit; a wrong fold moves it by
    O(1), TF32 convs by ~1e-3) the original model is returned unchanged with count -1.
    """
    original = model.eval()
    model = copy.deepcopy(original)
    with torch.inference_mode():
        reference = original(probe)
    if callable(getattr(model, "fuse", None)):  # e.g. MobileMamba: the model fuses itself
        model = model.fuse()
    model = reparameterized(model.eval())
    pairs = find_conv_bn_pairs(model, probe)
    for conv, bn in pairs:
        _replace(model, bn, fold_conv_bn(conv, bn))
    with torch.inference_mode():
        out = model(probe)
    if not relative_error(out, reference) < rtol:
        return original, -1
    return model.eval(), len(pairs)




def relative_error(out: Tensor, reference: Tensor) -> float:
    """max |out − reference| / max |reference| (fp32; tuples: first element)."""
    if isinstance(out, (tuple, list)):
        out, reference = out[0], reference[0]
    return ((out.float() - reference.float()).abs().max() / (reference.float().abs().max() + 1e-6)).item()
