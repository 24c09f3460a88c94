"""One entry point for the selective scan, with interchangeable backends.

Backends:
- ``torch``: vectorised pure PyTorch (any device, differentiable); the reference for the others.
- ``chunked``: chunked closed form in cumsum/exp/matmul, in the input dtype (any device, differentiable); exports
  to ONNX with standard operators only, and is the export backend.
- ``sequential``: the textbook loop over the sequence (`selective_scan_ref`); slow, the CPU benchmark's baseline.
- ``triton``: Triton kernels, forward and backward (CUDA; CPU tensors too under ``TRITON_INTERPRET=1``), registered
  as the torch.library ops ``mobilemamba::selective_scan_fwd`` / ``_bwd`` so torch.compile traces through them.
- ``triton_bidir``: SS2D's two directions and their merge as one Triton kernel on token-major operands
  (`bidirectional_scan`; ops ``mobilemamba::bidir_scan_fwd`` / ``_bwd``); SS2D only, a one-direction scan takes
  ``triton``.
- ``mamba_ssm``: ``selective_scan_fn`` from mamba-ssm, when installed with its CUDA kernels.
- ``auto``: triton on CUDA tensors (when triton imports; triton_bidir for SS2D's two directions), torch elsewhere;
  says once which it chose.
Asking for a backend that cannot run raises `ScanBackendError`: there is no silent fallback.
"""
from __future__ import annotations

import functools
import importlib.util
import logging
import os
from typing import Callable, Optional, Tuple

import torch

from .reference import bidirectional_scan_ref, selective_scan_ref
from .chunked_scan import selective_scan_chunked
from .torch_scan import selective_scan_torch

BACKENDS = ("auto", "torch", "triton", "triton_bidir", "mamba_ssm", "chunked", "sequential")
_TRITON_BACKENDS = ("triton", "triton_bidir")
_log = logging.getLogger(__name__)
_HAS_TRITON = importlib.util.find_spec("triton") is not None
_TRITON_INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"  # Triton's CPU interpreter (tests)


class ScanBackendError(RuntimeError):
    """The requested selective-scan backend cannot run here."""


# The Triton kernels are imported with the dispatcher (0.03 s; timm imports triton anyway), not at first use: a lazy
# load inside the first compiled call made Dynamo guard on it, and the next call recompiled the whole model.
if _HAS_TRITON:
    from .triton_bidir import bidirectional_scan_triton  # registers the torch.library ops
    from .triton_scan import selective_scan_triton


def _triton_fn() -> Callable:
    if not _HAS_TRITON:
        raise ScanBackendError("scan backend 'triton' needs the triton package (pip install triton)")
    return selective_scan_triton


@functools.cache
def _mamba_fn() -> Callable:
    try:  # importing mamba_ssm fails outright when its CUDA extension is missing
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception as err:  # noqa: BLE001 - any import failure means the backend is unusable
        raise ScanBackendError(f"scan backend 'mamba_ssm' is unavailable: {type(err).__name__}: {err}") from None

    def call(u, delta, A, B, C, D=None, delta_bias=None, delta_softplus=True):
        return selective_scan_fn(u, delta, A, B, C, D, None, delta_bias, delta_softplus)

    return call


@functools.cache
def _announce(device_type: str, choice: str) -> None:
    _log.info("selective scan: backend 'auto' uses '%s' on %s", choice, device_type)


def resolve_backend(backend: str, device: torch.device, bidirectional: bool = False) -> str:
    """The concrete backend name for `backend` on `device`, for a one-direction scan or, with `bidirectional`, for
    SS2D's two directions (`bidirectional_scan`); raises when it cannot run there."""
    if backend not in BACKENDS:
        raise ScanBackendError(f"unknown scan backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    if backend == "auto":
        choice = "triton" if device.type == "cuda" and _HAS_TRITON else "torch"
        if choice == "triton" and bidirectional:
            choice = "triton_bidir"
        if not torch.compiler.is_compiling():  # logging is a graph break for Dynamo
            _announce(device.type, choice)
        return choice
    if backend == "triton_bidir" and not bidirectional:
        raise ScanBackendError("scan backend 'triton_bidir' scans SS2D's two directions at once "
                               "(bidirectional_scan); a one-direction scan takes 'triton'")
    if backend in _TRITON_BACKENDS and not _HAS_TRITON:
        raise ScanBackendError(f"scan backend {backend!r} needs the triton package (pip install triton)")
    if backend in _TRITON_BACKENDS and _TRITON_INTERPRET and device.type == "cpu":
        return backend
    if backend in (*_TRITON_BACKENDS, "mamba_ssm") and device.type != "cuda":
        raise ScanBackendError(f"scan backend {backend!r} needs CUDA tensors, got device '{device}'")
    return backend


def get_scan_fn(backend: str) -> Callable:
    """The function implementing a concrete backend (not 'auto')."""
    if backend == "torch":
        return selective_scan_torch
    if backend == "chunked":
        return selective_scan_chunked
    if backend == "sequential":
        return selective_scan_ref
    if backend == "triton":
        return _triton_fn()
    if backend == "mamba_ssm":
        return _mamba_fn()
    raise ScanBackendError(f"unknown scan backend {backend!r}")


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                   D: Optional[torch.Tensor] = None, delta_bias: Optional[torch.Tensor] = None,
                   delta_softplus: bool = True, backend: str = "auto", float_out: bool = False) -> torch.Tensor:
    """y = selective_scan(u, Δ, A, B, C, D, Δ-bias); shapes as in `selective_scan_ref`.

    ``float_out``: y in float32 at least, as the reference's kernel returns it under AMP (spec §3: its output is
    normalised in float32 before the cast back), so an fp16 run cannot overflow between the scan and the LayerNorm.
    The triton kernel writes float32 directly; the other backends are given float32 inputs for fp16/bf16 ones.
    In TorchScript the torch scan runs (backend 'auto' or 'torch'): the dispatch below does not compile there.
    """
    if torch.jit.is_scripting():
        if backend != "auto" and backend != "torch":
            raise RuntimeError("scan backend '" + backend + "' does not run in TorchScript; use 'torch' (timm: "
                               "create the model with scriptable=True)")
        if float_out:
            u, delta, B, C = _at_least_float32(u, delta, B, C)
        return selective_scan_torch(u, delta, A, B, C, D, delta_bias, delta_softplus)
    return _dispatch(u, delta, A, B, C, D, delta_bias, delta_softplus, backend, float_out)


def _at_least_float32(u: torch.Tensor, delta: torch.Tensor, B: torch.Tensor,
                      C: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    if u.dtype == torch.float16 or u.dtype == torch.bfloat16:
        return u.float(), delta.float(), B.float(), C.float()
    return u, delta, B, C


@torch.jit.unused
def _dispatch(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
              D: Optional[torch.Tensor], delta_bias: Optional[torch.Tensor], delta_softplus: bool, backend: str,
              float_out: bool) -> torch.Tensor:
    name = resolve_backend(backend, u.device)
    fn = get_scan_fn(name)
    if float_out and u.dtype != torch.float32 and name == "triton":
        return fn(u, delta, A, B, C, D, delta_bias, delta_softplus, float_out=True)
    if float_out:
        u, delta, B, C = _at_least_float32(u, delta, B, C)
    return fn(u, delta, A, B, C, D, delta_bias, delta_softplus)


def bidirectional_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                       D: torch.Tensor, delta_bias: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """SS2D's scan of a token sequence along and back, merged: y (b, L, d) in float32 (`bidirectional_scan_ref`
    says what it computes). Token-major shapes: u (b, L, d); delta (b, L, 2d), direction k at [..., k·d:(k+1)·d];
    A (2d, 1); B, C (b, L, 2); D, delta_bias (2d). 'triton_bidir' is one kernel (ops/scan/triton_bidir.py); any
    other backend runs the one-direction scan on the stacked, flipped sequence."""
    name = resolve_backend(backend, u.device, bidirectional=True)
    if name == "triton_bidir":
        return bidirectional_scan_triton(u, delta, A, B, C, D, delta_bias)

    def scan(u, delta, A, B, C, D, delta_bias):
        return selective_scan(u, delta, A, B, C, D, delta_bias, delta_softplus=True, backend=name, float_out=True)
    return bidirectional_scan_ref(u, delta, A, B, C, D, delta_bias, scan)


__all__ = ["BACKENDS", "ScanBackendError", "resolve_backend", "get_scan_fn", "selective_scan", "bidirectional_scan",
           "bidirectional_scan_ref", "selective_scan_ref", "selective_scan_torch", "selective_scan_chunked"]
