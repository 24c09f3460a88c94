"""Where a non-finite loss comes from: the first module whose forward output holds inf or NaN.

A run under fp16 autocast that overflows (|x| > 65504) only says "non-finite loss". `locate_nonfinite` re-runs
the forward of the offending batch with a hook on every module and names the first one, in execution order,
whose output is not finite, with the largest finite magnitude it was given: the place to look (or to keep in
fp32). It runs once per process at the first non-finite loss, so it costs nothing in a healthy run.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator

import torch
from torch import nn


@dataclass
class NonFiniteSite:
    module: str          # qualified name ('' for the model itself)
    module_class: str    # its class name
    dtype: str           # dtype of the offending output
    input_absmax: float  # largest |finite value| among the module's tensor inputs
    inputs_finite: bool  # False: the module was handed non-finite values (e.g. the batch itself)

    def describe(self) -> str:
        given = "its inputs were already non-finite" if not self.inputs_finite else \
            f"its inputs reached |x| = {self.input_absmax:.3g}"
        return f"first non-finite output at '{self.module or '<model>'}' ({self.module_class}, {self.dtype}); {given}"


def _tensors(obj) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _absmax_finite(tensors: list[torch.Tensor]) -> float:
    """Largest |finite value| over floating-point `tensors` (0 when there is none)."""
    best = 0.0
    for t in tensors:
        if t.numel():
            v = t.detach().float().abs()
            v = v[torch.isfinite(v)]
            if v.numel():
                best = max(best, float(v.max()))
    return best


def locate_nonfinite(model: nn.Module, images: torch.Tensor,
                     autocast: Callable[[], ContextManager] = contextlib.nullcontext) -> NonFiniteSite | None:
    """Forward `images` through `model` (same mode, under `autocast`) and return the first module whose output
    has a non-finite value, or None when the forward is finite (the cause is then elsewhere: the loss, the data
    in a later step, an injected fault). Leaves RNG state as it found it; buffers a train-mode forward changes
    (BN statistics) are the caller's to restore."""
    found: list[NonFiniteSite] = []

    def hook(name: str):
        def check(module: nn.Module, inputs, output) -> None:
            if found:
                return
            for out in _tensors(output):
                if out.is_floating_point() and not bool(torch.isfinite(out).all()):
                    given = [t for t in _tensors(inputs) if t.is_floating_point()]
                    found.append(NonFiniteSite(name, type(module).__name__, str(out.dtype).replace("torch.", ""),
                                               _absmax_finite(given), all(bool(torch.isfinite(t).all()) for t in given)))
                    return
        return check

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules()]
    devices = [images.device] if images.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=devices), torch.no_grad(), autocast():
            model(images)
    finally:
        for h in handles:
            h.remove()
    # hooks fire inner modules first: the first recorded is the innermost module of the first failing call
    return found[0] if found else None
