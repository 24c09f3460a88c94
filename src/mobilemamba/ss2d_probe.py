"""SS2D's scan core per stage of a variant, in its two forms side by side: the channel-major path with the
one-direction Triton kernel ('triton') and the token-major path with the two-direction kernel ('triton_bidir', at
several tile sizes). Times inference and forward + backward (eager, bf16 autocast, channels_last) and says how far
the outputs of the two forms differ.

    python -m mobilemamba.ss2d_probe [--variant s6] [--batch 256] [--tiles 64x2048,32x1024] [--out DIR]

A tile size is `MAX_BLOCK_L x TILE_ELEMENTS` of ops/scan/triton_bidir.py.
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from unittest import mock

import torch

from .models import create_model
from .models.layers import randomize_batchnorm
from .models.ss2d import SS2D
from .ops.scan import triton_bidir


def core_shapes(variant: str, batch: int, **overrides: Any) -> list[tuple[int, ...]]:
    """The distinct input shapes (B, d_inner, H, W) of SS2D.forward_core in `variant`, in model order (meta device:
    shapes only)."""
    shapes: list[tuple[int, ...]] = []

    def record(self: SS2D, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape) not in shapes:
            shapes.append(tuple(x.shape))
        return x

    with torch.device("meta"):
        model = create_model(variant, scan_backend="torch", **overrides).eval()
        img = model.pretrained_cfg["input_size"][-1]
        with mock.patch.object(SS2D, "forward_core", record), torch.no_grad():
            model(torch.empty(batch, 3, img, img))
    return shapes


@contextlib.contextmanager
def tiles(size: tuple[int, int] | None) -> Iterator[None]:
    """The two-direction kernel's tiles set to `size` (MAX_BLOCK_L, TILE_ELEMENTS) inside; None: left as they are."""
    saved = triton_bidir.MAX_BLOCK_L, triton_bidir.TILE_ELEMENTS
    if size is not None:
        triton_bidir.MAX_BLOCK_L, triton_bidir.TILE_ELEMENTS = size
    try:
        yield
    finally:
        triton_bidir.MAX_BLOCK_L, triton_bidir.TILE_ELEMENTS = saved


def _ms_per_call(fn: Callable[[], Any], device: torch.device, iters: int, repeats: int) -> float:
    """Median over `repeats` of the mean time of `iters` calls, after two warm-up calls (Triton compiles there)."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - t0) / iters * 1e3)
    return statistics.median(times)


def probe(variant: str = "mobilemamba_s6", batch: int = 256, tile_sizes: tuple[tuple[int, int], ...] = ((64, 2048),),
          device: str = "cuda", iters: int = 20, repeats: int = 5, **overrides: Any) -> list[dict[str, Any]]:
    """One row per SS2D core shape, backend and tile size: ms per call (inference; forward + backward) and the
    largest |difference| of the output from the 'triton' row's, relative to its largest |value|."""
    dev = torch.device(device)
    amp = torch.autocast(dev.type, dtype=torch.bfloat16)
    configs = [("triton", None), *(("triton_bidir", size) for size in tile_sizes)]
    rows = []
    for shape in core_shapes(variant, batch, **overrides):
        torch.manual_seed(0)
        module = randomize_batchnorm(SS2D(shape[1] // 2)).to(dev)
        x = torch.randn(shape, device=dev).to(torch.bfloat16, memory_format=torch.channels_last)

        def infer() -> torch.Tensor:
            with torch.inference_mode(), amp:
                return module.forward_core(x)

        def train() -> None:
            inp = x.detach().requires_grad_()
            with amp:
                out = module.forward_core(inp)
            out.float().square().mean().backward()

        reference = None
        for backend, size in configs:
            module.scan_backend = backend
            with tiles(size):
                out = infer().float()
                reference = out if reference is None else reference
                rows.append(dict(shape="x".join(map(str, shape)), backend=backend,
                                 tiles="x".join(map(str, size)) if size else "-",
                                 infer_ms=_ms_per_call(infer, dev, iters, repeats),
                                 train_ms=_ms_per_call(train, dev, iters, repeats),
                                 rel_diff=((out - reference).abs().max() / reference.abs().max()).item()))
    return rows


def format_rows(rows: list[dict[str, Any]]) -> str:
    """A markdown table; 'x' columns: the 'triton' row's time of the same shape over this row's."""
    base = {r["shape"]: r for r in rows if r["backend"] == "triton"}
    lines = ["| SS2D core input | backend | tiles | infer ms | x | fwd+bwd ms | x | rel. diff |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        b = base[r["shape"]]
        lines.append(f"| {r['shape']} | {r['backend']} | {r['tiles']} | {r['infer_ms']:.3f} | "
                     f"{b['infer_ms'] / r['infer_ms']:.2f} | {r['train_ms']:.3f} | "
                     f"{b['train_ms'] / r['train_ms']:.2f} | {r['rel_diff']:.1e} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variant", default="s6")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--tiles", default="64x2048,32x1024,128x4096,64x4096")
    ap.add_argument("--iters", type=int, default=20)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    variant = args.variant if args.variant.startswith("mobilemamba_") else f"mobilemamba_{args.variant}"
    tile_sizes = tuple(tuple(int(v) for v in t.split("x")) for t in args.tiles.split(","))
    text = format_rows(probe(variant, args.batch, tile_sizes, args.device, args.iters))
    device = torch.cuda.get_device_name() if args.device == "cuda" else args.device
    header = f"{variant}, batch {args.batch}, bf16 autocast, channels_last, eager; {device}"
    print(header + "\n\n" + text)
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "scan_probe.md").write_text(header + "\n\n" + text + "\n")


if __name__ == "__main__":
    main()
