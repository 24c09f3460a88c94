"""torch.compile and CUDA-graph capture for MobileMamba, one way for the engine, eval.py and the benchmark.

``how='whole'`` wraps the module (e.g. the DDP-wrapped model) in one ``torch.compile``; ``how='regional'``
compiles each of ``MobileMamba.regions()`` in place (stem and every block: blocks of one shape share code, state
dict keys are unchanged). Both first switch the Haar step to :data:`COMPILED_WAVELET` (unless told otherwise), the
same function in a form Dynamo can trace (pytorch_wavelets calls into pywt); with the triton scan registered as
custom ops the whole model is then one graph.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import torch
import torch.nn as nn

COMPILE_HOWS = ("whole", "regional")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune-no-cudagraphs", "max-autotune")
# The Haar step of a compiled model: pixel (un)shuffle + elementwise mix, which inductor fuses with its neighbours.
# Fused inference on an H200 (bf16, batch 256, CUDA graph), against the two grouped convs: T2 63.2k → 72.9k,
# S6 41.5k → 50.2k, B1 23.5k → 29.7k, B4 6.7k → 8.6k img/s (docs/results.md#infer-compiled).
COMPILED_WAVELET = "shuffle"


def compile_model(module: nn.Module, model: nn.Module, how: str = "whole", mode: str = "default",
                  backend: str = "inductor", wavelet: Optional[str] = COMPILED_WAVELET) -> nn.Module:
    """Compile ``model`` (a MobileMamba) as ``how`` says; returns what to call: ``module`` wrapped (whole), or
    ``module`` itself with ``model``'s regions compiled in place (regional). ``module`` is ``model`` or a wrapper
    around it (DDP). ``wavelet=None`` keeps the Haar implementation the caller chose. Any other model (a timm
    student) has no Haar step and no regions: it is compiled whole."""
    if how not in COMPILE_HOWS:
        raise ValueError(f"compile must be one of {', '.join(COMPILE_HOWS)}, got {how!r}")
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    if wavelet is not None and hasattr(model, "set_wavelet_impl"):
        model.set_wavelet_impl(wavelet)
    # dynamic=False: blocks of one code but different widths get one static graph per shape, not a symbolic-shape
    # graph after the second shape (Dynamo's automatic dynamic shapes)
    kwargs: dict[str, Any] = dict(backend=backend, dynamic=False)
    if mode != "default":
        kwargs["mode"] = mode
    if how == "whole" or not hasattr(model, "regions"):
        return torch.compile(module, **kwargs)
    for region in model.regions():
        region.compile(**kwargs)
    return module


def cuda_graph_step(forward: Callable[[torch.Tensor], Any], x: torch.Tensor, device: torch.device,
                    warmup: int = 3) -> Callable[[], None]:
    """Capture ``forward`` on a static copy of ``x`` (after ``warmup`` calls on a side stream: cuDNN's algorithm
    search, Triton's and torch.compile's compilation); the returned step replays the graph (one launch)."""
    if device.type != "cuda":
        raise ValueError(f"a CUDA graph needs a CUDA device, got {str(device)!r}")
    static_x = x.clone()
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(warmup):
            forward(static_x)
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = forward(static_x)

    def step() -> None:
        graph.replay()
    step.keep = (graph, static_x, static_out)  # type: ignore[attr-defined]
    return step
