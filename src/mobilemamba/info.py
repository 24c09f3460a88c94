"""Parameter and FLOP counts per variant, in the published convention (spec §5).

FLOPs are multiply-accumulates of the unfused eval model at batch 1, counted as fvcore did for the paper:
conv (out elems × Cin/groups × k²; the wavelet-domain `padding='same'` conv counts 0, an fvcore blind spot),
Haar DWT + inverse (8·g·Hp·Wp), linear (in × out), BatchNorm 2/elem, LayerNorm 5/elem, global pool 1/elem,
selective scan 9·L·D·N + L·D with D = 4g (so 40·g·L per SS2D); activations, adds, SE mean and flips count 0.

    python -m mobilemamba.info [--json] [--variants mobilemamba_t2,...]
"""
from __future__ import annotations

import argparse
import json
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from .models import VARIANTS, count_params, create_model
from .models.mobilemamba import MBWTConv2d, MobileMamba
from .models.ss2d import SS2D


def _conv_flops(m: nn.Conv2d, out: torch.Tensor) -> int:
    if m.padding == "same":
        return 0
    kh, kw = m.kernel_size
    return out.numel() * (m.in_channels // m.groups) * kh * kw


def _ss2d_flops(m: SS2D, inp: torch.Tensor) -> int:
    """The x_proj / dt_proj projections (1x1 grouped convs in the reference) and the scan itself."""
    _, _, h, w = inp.shape
    length, d, rank = h * w, m.d_inner, m.dt_rank
    x_proj = 2 * (rank + 2 * m.d_state) * d * length
    dt_proj = 2 * d * rank * length
    channels = 2 * d
    scan = 9 * length * channels * m.d_state + length * channels
    return x_proj + dt_proj + scan


def _wavelet_flops(m: MBWTConv2d, inp: torch.Tensor) -> int:
    """Haar analysis (stride-2 conv) plus synthesis (transposed conv), on the input padded to even size."""
    _, g, h, w = inp.shape
    return 8 * g * (h + h % 2) * (w + w % 2)


def _module_flops(m: nn.Module, inp: torch.Tensor, out: torch.Tensor) -> int:
    if isinstance(m, nn.Conv2d):
        return _conv_flops(m, out)
    if isinstance(m, nn.Linear):
        return inp.shape[0] * m.in_features * m.out_features
    if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
        return 2 * out.numel()
    if isinstance(m, nn.LayerNorm):
        return 5 * out.numel()
    if isinstance(m, MBWTConv2d):
        return _wavelet_flops(m, inp)
    return 0


@contextmanager
def _counting(model: MobileMamba, total: list[int]) -> Iterator[None]:
    """Forward hooks adding each module's MACs to total[0]; SS2D and the global pool through pre-hooks."""
    def on_forward(m: nn.Module, args: tuple, out) -> None:
        total[0] += _module_flops(m, args[0], out)

    def on_ss2d_core(m: SS2D, args: tuple) -> None:
        total[0] += _ss2d_flops(m, args[0])

    def on_pool(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        total[0] += out.numel()  # the global average pool reads every element of the last stage's output

    handles = [m.register_forward_hook(on_forward) for m in model.modules()]
    handles.append(model.stages[-1].register_forward_hook(on_pool))
    for m in model.modules():
        if isinstance(m, SS2D):
            m.forward_core = _with_pre_hook(m, m.forward_core, on_ss2d_core)
    try:
        yield
    finally:
        for h in handles:
            h.remove()
        for m in model.modules():
            m.__dict__.pop("forward_core", None)


def _with_pre_hook(module: nn.Module, fn, hook):
    def wrapped(x):
        hook(module, (x,))
        return fn(x)
    return wrapped


@torch.no_grad()
def count_flops(model: MobileMamba, img_size: int) -> int:
    """MACs of one image in the published convention (see module docstring). Works on the meta device."""
    model.eval()
    total = [0]
    device = next(model.parameters()).device
    with _counting(model, total):
        model(torch.zeros(1, 3, img_size, img_size, device=device))
    return total[0]


@torch.no_grad()
def count_macs(model: nn.Module, img_size: int) -> int:
    """MACs of one image: `count_flops` (the published convention) for a MobileMamba; for any other model torch's
    FlopCounterMode (convolutions, matmuls, attention; norms and elementwise ops not counted), halved to MACs."""
    if isinstance(model, MobileMamba):
        return count_flops(model, img_size)
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    device = next(model.parameters()).device
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, img_size, img_size, device=device))
    return counter.get_total_flops() // 2


def variant_info(name: str) -> dict:
    """Sizes of a variant, counted on the meta device (shapes only: fast, no memory)."""
    with torch.device("meta"):
        model = create_model(name, scan_backend="torch")
    img_size = VARIANTS[name].img_size
    flops = count_flops(model, img_size)
    params = count_params(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    model.fuse()
    return dict(name=name, img_size=img_size, params=params, params_trainable=trainable,
                params_fused=count_params(model), flops=flops, flops_fused=count_flops(model, img_size))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Parameters and FLOPs (MACs) of the MobileMamba variants.")
    parser.add_argument("--json", action="store_true", help="print one JSON list")
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated names")
    args = parser.parse_args(argv)
    rows = [variant_info(n) for n in args.variants.split(",")]
    if args.json:
        print(json.dumps(rows))
        return
    print(f"{'variant':<16}{'res':>5}{'params':>13}{'trainable':>13}{'fused':>13}{'FLOPs (M)':>12}{'fused (M)':>12}")
    for r in rows:
        print(f"{r['name']:<16}{r['img_size']:>5}{r['params']:>13,}{r['params_trainable']:>13,}"
              f"{r['params_fused']:>13,}{r['flops'] / 1e6:>12.2f}{r['flops_fused'] / 1e6:>12.2f}")


if __name__ == "__main__":
    main()
