"""The stem's first convolution (3 input channels, 3x3 stride 2) in each memory layout, on one GPU.

A 3-channel NHWC convolution has no tensor-core kernel in cuDNN; in a profile of the compiled S6 training step it ran
in a generic kernel for 11.5 % of kernel time (docs/results.md#s6-compiled-kernels). This times the candidates side by
side for each variant's first conv, batch 256: NHWC as the model runs it, NCHW, and NHWC with the input and weight
zero-padded to 4 or 8 channels (the same function: the padded channels are zero), forward only (inference) and
forward + weight gradient (training; the image needs no gradient).

    python3 benchmarks/stem_conv.py [--out FILE.csv]
"""
from __future__ import annotations

import argparse
import csv
import sys

import torch
import torch.nn.functional as F

VARIANTS = {"t2": (18, 192), "s6": (24, 224), "b1": (25, 256)}  # first conv's output channels, input side


def padded(x: torch.Tensor, channels: int) -> torch.Tensor:
    return F.pad(x, (0, 0, 0, 0, 0, channels - x.shape[1])) if channels > x.shape[1] else x


def memory_format(layout: str) -> torch.memory_format:
    return torch.channels_last if layout == "nhwc" else torch.contiguous_format


def stem_conv(layout: str, channels: int, image: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The first conv with image and weight in `layout`, zero-padded to `channels` input channels."""
    fmt = memory_format(layout)
    return F.conv2d(padded(image, channels).contiguous(memory_format=fmt), padded(weight, channels), stride=2, padding=1)


def candidate(layout: str, channels: int, image: torch.Tensor, weight: torch.Tensor, train: bool):
    w = weight.detach().contiguous(memory_format=memory_format(layout)).requires_grad_(train)

    def run() -> None:
        y = stem_conv(layout, channels, image, w)
        if train:
            y.backward(torch.ones_like(y))
    return run


def time_ms(fn, iters: int = 50) -> float:
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None)
    parser.add_argument("--batch", type=int, default=256)
    args = parser.parse_args()
    torch.backends.cudnn.benchmark = True
    rows = []
    for variant, (cout, side) in VARIANTS.items():
        for train, dtype in ((False, torch.bfloat16), (True, torch.float16)):
            image = torch.randn(args.batch, 3, side, side, device="cuda", dtype=dtype).contiguous(
                memory_format=torch.channels_last)
            weight = torch.randn(cout, 3, 3, 3, device="cuda", dtype=dtype)
            for layout, pad in (("nhwc", 3), ("nchw", 3), ("nhwc", 4), ("nhwc", 8)):
                ms = time_ms(candidate(layout, pad, image, weight, train))
                rows.append(dict(variant=variant, step="train" if train else "infer", layout=layout, in_channels=pad,
                                 ms=round(ms, 4)))
                print(rows[-1], flush=True)
    with open(args.out, "w", newline="") if args.out else sys.stdout as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


if __name__ == "__main__":
    main()
