"""Evaluation: top-1/top-5 over the whole val set (counts summed over ranks), fused-vs-unfused check, throughput."""
from __future__ import annotations

import contextlib
import time
from typing import Any, Callable, ContextManager, Iterable, Iterator

import torch
from torch import nn

from ..models.factory import fuse_model_copy as fused_copy  # noqa: F401 - the engine's name for it
from .distributed import all_reduce_sum


def rng_neutral_iter(loader: Iterable) -> Any:
    """iter(loader) without consuming the global torch RNG.

    A DataLoader draws its base seed from the global generator when an iterator is created; a resumed run
    creates its iterator at another point of the RNG stream than an uninterrupted one would, which would
    break bit-exact resume. Restoring the state afterwards makes the creation invisible to the stream.
    """
    state = torch.get_rng_state()
    it = iter(loader)
    torch.set_rng_state(state)
    return it


@contextlib.contextmanager
def iterating(loader: Iterable) -> Iterator[Any]:
    """``rng_neutral_iter(loader)``, closed when the block ends, also by an exception (a preemption): the DALI
    loader's prefetch thread ends with its iteration, not with whatever still holds the traceback."""
    it = rng_neutral_iter(loader)
    try:
        yield it
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()


@contextlib.contextmanager
def ieee_fp32(enabled: bool = True) -> Iterator[None]:
    """fp32 convolutions and matmuls in IEEE fp32 inside the block (flags restored after).

    PyTorch lets cuDNN run fp32 convolutions in TF32 by default (10-bit mantissa). The folded BN weights of a fused
    model then round differently from conv + BN, the logits differ by ~1e-3 and a few near-tie images change class
    (2 of 10,000 on CIFAR-10, H200); in IEEE fp32 fused and unfused agree image for image
    (docs/results.md#fused-unfused-gpu).
    """
    if not enabled:
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device,
    autocast: Callable[[], ContextManager] = contextlib.nullcontext,
    max_batches: int | None = None,
    channels_last: bool = False,
) -> dict[str, float]:
    """Top-1/top-5 (%) and mean CE loss over the `images` evaluated; `skipped`: unreadable images the loader left
    out (never replaced by others). Counts and totals are all-reduced, so with a sampler that gives each val image
    to exactly one rank every image is counted once."""
    was_training = model.training
    model.eval()
    skipped_before = getattr(loader, "skipped", 0)
    # correct1, correct5, n, loss_sum, skipped (float64: exact integer counts up to 2^53)
    acc = torch.zeros(5, dtype=torch.float64, device=device)
    with iterating(loader) as batches:
        for i, (images, targets) in enumerate(batches):
            if max_batches is not None and i >= max_batches:
                break
            if channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            with autocast():
                logits = model(images)
            logits = logits.float()
            k = min(5, logits.shape[1])
            top = logits.topk(k, dim=1).indices
            hit = top.eq(targets.view(-1, 1))
            acc[0] += hit[:, :1].sum()
            acc[1] += hit.any(dim=1).sum()
            acc[2] += targets.numel()
            acc[3] += torch.nn.functional.cross_entropy(logits, targets, reduction="sum").double()
    acc[4] = getattr(loader, "skipped", 0) - skipped_before
    all_reduce_sum(acc)
    model.train(was_training)
    n = max(acc[2].item(), 1.0)
    return {
        "top1": 100.0 * acc[0].item() / n,
        "top5": 100.0 * acc[1].item() / n,
        "loss": acc[3].item() / n,
        "images": int(acc[2].item()),
        "skipped": int(acc[4].item()),
    }


@torch.no_grad()
def max_abs_diff(a: nn.Module, b: nn.Module, images: torch.Tensor) -> float:
    """Largest |a(x) - b(x)| on one batch, both in eval mode and fp32."""
    a.eval()
    b.eval()
    return (a(images).float() - b(images).float()).abs().max().item()


def fuse_tolerance(logits_scale: float) -> float:
    """Fusion changes only float rounding: allow 1e-3 absolute plus 1e-4 of the logits' magnitude."""
    return 1e-3 + 1e-4 * logits_scale


@torch.no_grad()
def throughput(model: nn.Module, *, batch_size: int, img_size: int, device: torch.device, warmup: int = 3,
               iters: int = 10, channels_last: bool = False,
               autocast: Callable[[], ContextManager] = contextlib.nullcontext, compile: bool = False,
               cuda_graph: bool = False, compile_backend: str = "inductor") -> float:
    """Images/s of forward passes on a random batch (the reference's method: eval mode, no autograd), optionally
    through torch.compile (the whole model) and/or replayed as one CUDA graph."""
    from ..models.compiling import compile_model, cuda_graph_step

    model.eval()
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    runner = compile_model(model, model, "whole", backend=compile_backend) if compile else model

    def forward(inp: torch.Tensor):
        with torch.inference_mode(), autocast():
            return runner(inp)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if cuda_graph:
        step = cuda_graph_step(forward, x, device, warmup=max(1, warmup))
    else:
        def step() -> None:
            forward(x)
    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(iters):
        step()
    sync()
    return batch_size * iters / max(time.perf_counter() - t0, 1e-9)
