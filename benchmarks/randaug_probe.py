"""The batched RandAugment on one GPU, torch ops against the Triton kernels, side by side in one run: host time per
call (what the loader's thread or the training loop pays), GPU span per call, and how far the two batches differ
(same seed, same random choices). Also the whole DALI tail (RandAugment, normalize, erasing).

    python benchmarks/randaug_probe.py [--batch 256] [--size 224] [--calls 30]
"""
from __future__ import annotations

import argparse
import time

import torch

from mobilemamba.data.batch_randaug import BatchRandAugment
from mobilemamba.data.dali_loader import DeviceTrainTail
from mobilemamba.data.erasing import BatchRandomErasing
from mobilemamba.data.randaug_spec import parse_rand_augment

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def natural_batch(batch: int, size: int) -> torch.Tensor:
    """Smooth colour fields with some noise: every op changes them, histograms are not flat."""
    g = torch.Generator(device="cuda").manual_seed(0)
    field = torch.rand(batch, 3, 7, 7, device="cuda", generator=g)
    field = torch.nn.functional.interpolate(field, size=(size, size), mode="bicubic", align_corners=False)
    noise = torch.rand(batch, 3, size, size, device="cuda", generator=g) - 0.5
    return (40 + 170 * field.clamp(0, 1) + 24 * noise).round().clamp(0, 255).to(torch.uint8)


def time_calls(fn, x: torch.Tensor, calls: int) -> tuple[float, float]:
    """Median host ms and median GPU ms per call."""
    for _ in range(5):
        fn(x)
    torch.cuda.synchronize()
    host, gpu = [], []
    for _ in range(calls):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        t0 = time.perf_counter()
        start.record()
        fn(x)
        end.record()
        host.append(time.perf_counter() - t0)
        end.synchronize()
        gpu.append(start.elapsed_time(end))
    host.sort()
    gpu.sort()
    return 1e3 * host[calls // 2], gpu[calls // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--calls", type=int, default=30)
    args = ap.parse_args()
    x = natural_batch(args.batch, args.size)
    spec = parse_rand_augment("rand-m9-mstd0.5-inc1")
    print(f"{torch.cuda.get_device_name()}, batch {args.batch} x 3 x {args.size}^2 uint8, rand-m9-mstd0.5-inc1\n")
    print("| what | kernels | host ms / call | GPU ms / call |")
    print("|---|---|---:|---:|")
    for kernels in ("torch", "triton"):
        ra = BatchRandAugment(spec, seed=0, kernels=kernels)
        host, gpu = time_calls(ra, x, args.calls)
        print(f"| RandAugment | {kernels} | {host:.2f} | {gpu:.2f} |")
    for kernels in ("torch", "triton"):
        tail = DeviceTrainTail(MEAN, STD, randaug=BatchRandAugment(spec, seed=0, kernels=kernels),
                               erasing=BatchRandomErasing(0.25, "pixel", 1, seed=0))  # fmt: skip
        host, gpu = time_calls(tail, x, args.calls)
        print(f"| RandAugment + normalize + erasing | {kernels} | {host:.2f} | {gpu:.2f} |")
    same = [BatchRandAugment(spec, seed=3, kernels=k)(x) for k in ("torch", "triton")]
    diff = (same[0].int() - same[1].int()).abs()
    print(f"\ntorch vs triton batch (seed 3): max diff {int(diff.max())} levels, "
          f"{100 * float((diff > 0).float().mean()):.4f}% of values differ")  # fmt: skip


if __name__ == "__main__":
    main()
