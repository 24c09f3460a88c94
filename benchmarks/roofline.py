"""Bytes and FLOPs per stage of MobileMamba: the floors a faster implementation can aim at.

For each variant at its own resolution, counted on the meta device (shapes only, seconds on a CPU):

- GFLOP: tensor FLOPs (2 x MACs) of convs and matmuls (torch's FlopCounterMode) plus the selective scan's
  (2 x (9·L·D·N + L·D), the published convention);
- eager MB: the bytes eager PyTorch moves: every aten op reads its inputs and writes its outputs (views are free;
  the selective scan is one kernel reading u, delta, B, C and writing y, as the triton and mamba_ssm kernels do);
- fused MB: the floor of perfect fusion: each stage reads its input and its weights and writes its output once;
- ops: the aten ops that move bytes, about the number of kernels eager PyTorch launches;
- floors in ms at the H200's HBM bandwidth (4.8 TB/s) and dense bf16 rate (989 TFLOP/s).

    python benchmarks/roofline.py [--variants mobilemamba_t2,mobilemamba_s6] [--batch 256] [--fused] [--dtype bf16]

Compare the ms columns with a measured batch time (bench.py): eager-bytes ms is what the memory system needs to
run this exact op sequence; fused-bytes ms is how fast any implementation could be if memory bound.
"""
from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
import mobilemamba.models.ss2d as ss2d_module  # noqa: E402
from mobilemamba.models import VARIANTS, create_model  # noqa: E402

HBM_BYTES_PER_S = 4.8e12
BF16_FLOPS_PER_S = 989e12
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def _nbytes(tree) -> int:
    leaves, _ = tree_flatten(tree)
    return sum(t.numel() * t.element_size() for t in leaves if isinstance(t, torch.Tensor))


def _is_view(func) -> bool:
    """Ops returning an alias that they do not write (view, reshape, permute, detach, ...) move no bytes."""
    returns = func._schema.returns
    return bool(returns) and all(r.alias_info is not None and not r.alias_info.is_write for r in returns)


class ByteCounter(TorchDispatchMode):
    """Adds each op's input + output bytes to the region (stage) currently running."""

    def __init__(self):
        super().__init__()
        self.region, self.paused = "other", False
        self.bytes: dict[str, int] = {}
        self.ops: dict[str, int] = {}

    def add(self, n: int) -> None:
        self.bytes[self.region] = self.bytes.get(self.region, 0) + n
        self.ops[self.region] = self.ops.get(self.region, 0) + 1

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused and not _is_view(func):
            self.add(_nbytes(args) + _nbytes(kwargs) + _nbytes(out))
        return out


@contextmanager
def _scan_as_one_kernel(counter: ByteCounter, scan_flops: dict[str, int]) -> Iterator[None]:
    """Replace the scan by an empty result whose cost is its I/O bytes and its published FLOPs."""
    real = ss2d_module.selective_scan

    def counted(u, delta, A, B, C, D=None, delta_bias=None, **_):
        counter.paused = True
        y = torch.empty_like(u)
        counter.paused = False
        counter.add(_nbytes((u, delta, A, B, C, D, delta_bias, y)))
        channels, length = u.shape[1], u.shape[2]
        n_state = B.shape[-2] if B.dim() == 4 else B.shape[1]
        macs = u.shape[0] * (9 * length * channels * n_state + length * channels)
        scan_flops[counter.region] = scan_flops.get(counter.region, 0) + 2 * macs
        return y

    ss2d_module.selective_scan = counted
    try:
        yield
    finally:
        ss2d_module.selective_scan = real


def _regions(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [("stem", model.patch_embed), *((f"stage{i + 1}", s) for i, s in enumerate(model.stages)), ("head", model.head)]


@torch.no_grad()
def stage_table(name: str, batch: int, dtype: torch.dtype, fused: bool) -> list[dict]:
    with torch.device("meta"):
        model = create_model(name, scan_backend="torch").eval()
    if fused:
        model.fuse()
    model.to(dtype)
    img = VARIANTS[name].img_size
    counter, scan_flops, io = ByteCounter(), {}, {}
    handles = []
    for region, module in _regions(model):
        def pre(m, args, region=region):
            counter.region = region

        def post(m, args, out, region=region):
            weights = sum(p.numel() * p.element_size() for p in m.parameters())
            io[region] = _nbytes(args) + _nbytes(out) + weights
            counter.region = "other"  # the pooling between the last stage and the head

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    flop_mode = FlopCounterMode(display=False)
    x = torch.empty(batch, 3, img, img, device="meta", dtype=dtype)
    with _scan_as_one_kernel(counter, scan_flops), flop_mode, counter:
        model(x)
    for h in handles:
        h.remove()
    per_module = flop_mode.get_flop_counts()
    rows = []
    for region, module in _regions(model):
        key = next((k for k in per_module if k.endswith("." + _attr_path(model, module))), None)
        flops = sum(per_module.get(key, {}).values()) + scan_flops.get(region, 0)
        rows.append(dict(variant=name, region=region, gflop=flops / 1e9, eager_mb=counter.bytes.get(region, 0) / 1e6,
                         fused_mb=io.get(region, 0) / 1e6, ops=counter.ops.get(region, 0)))
    rows.append(dict(variant=name, region="pool", gflop=0.0, eager_mb=counter.bytes.get("other", 0) / 1e6, fused_mb=0.0,
                     ops=counter.ops.get("other", 0)))
    return rows


def _attr_path(root: nn.Module, module: nn.Module) -> str:
    return next(n for n, m in root.named_modules() if m is module)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    ap.add_argument("--unfused", action="store_true", help="count the model before BN folding")
    args = ap.parse_args(argv)
    print(f"batch {args.batch}, {args.dtype}, {'unfused' if args.unfused else 'fused'} inference; floors at "
          f"{HBM_BYTES_PER_S / 1e12:.1f} TB/s and {BF16_FLOPS_PER_S / 1e12:.0f} TFLOP/s\n")
    print("| variant | part | ops | GFLOP | eager MB | fused MB | eager-bytes ms | fused-bytes ms | flops ms |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in args.variants.split(","):
        name = name if name.startswith("mobilemamba_") else f"mobilemamba_{name}"
        rows = stage_table(name, args.batch, DTYPES[args.dtype], fused=not args.unfused)
        total = dict(variant=name, region="**total**", gflop=sum(r["gflop"] for r in rows),
                     eager_mb=sum(r["eager_mb"] for r in rows), fused_mb=sum(r["fused_mb"] for r in rows),
                     ops=sum(r["ops"] for r in rows))
        for r in rows + [total]:
            ms = lambda b: b * 1e6 / HBM_BYTES_PER_S * 1e3  # noqa: E731
            print(f"| {r['variant'].removeprefix('mobilemamba_')} | {r['region']} | {r['ops']} | {r['gflop']:,.1f} | "
                  f"{r['eager_mb']:,.0f} | {r['fused_mb']:,.0f} | {ms(r['eager_mb']):.2f} | {ms(r['fused_mb']):.2f} | "
                  f"{r['gflop'] * 1e9 / BF16_FLOPS_PER_S * 1e3:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
