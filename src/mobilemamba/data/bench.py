"""Loader throughput with the recipe's train transform (RandAugment + erasing on), as a markdown table.

    python -m mobilemamba.data.bench ROOT [--loaders torch,dali,dali-cpu] [--batch 256] [--img-size 224]
                                          [--iters 50] [--warmup 5] [--workers N] [--device cuda]

``dali`` decodes on the GPU (nvJPEG, ``mixed``) when the device is CUDA; ``dali-cpu`` decodes on the CPU.
Images/s counts batches delivered on the device after ``--warmup`` batches (pipeline build excluded).
"""
from __future__ import annotations

import argparse
import os
import time
from typing import Optional

import torch

from . import DatasetError, build_loaders

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_loader(
    root: str, loader: str, *, batch: int, img_size: int, iters: int, warmup: int, workers: int, device: torch.device,
    threads: Optional[int] = None,
) -> dict:  # fmt: skip
    """Time ``iters`` train batches of one loader (cycling epochs if the folder is small)."""
    data_cfg = dict(loader="dali" if loader.startswith("dali") else loader, root=root, workers=workers,
                    dali_device="cpu" if loader == "dali-cpu" else "auto", dali_threads=threads,
                    synthetic_size=batch * (iters + warmup), num_classes=None if loader != "synthetic" else 1000)  # fmt: skip
    t0 = time.perf_counter()
    train, _ = build_loaders(
        data_cfg, {}, img_size=img_size, mean=MEAN, std=STD, crop_pct=0.875, interpolation="bicubic",
        batch_size=batch, eval_batch_size=batch, rank=0, world_size=1, device=device, seed=0,
    )  # fmt: skip
    done, start, epoch = 0, None, 0
    while done < warmup + iters:
        train.set_epoch(epoch)
        for images, _ in train:
            done += 1
            if done == warmup:
                _sync(device)
                start = time.perf_counter()
            if done == warmup + iters:
                break
        epoch += 1
    _sync(device)
    elapsed = time.perf_counter() - (start if start is not None else t0)
    return dict(loader=loader, img_s=iters * batch / elapsed, shape=tuple(images.shape), setup_s=start - t0)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mobilemamba.data.bench", description=__doc__.split("\n")[0])
    ap.add_argument("root")
    ap.add_argument("--loaders", default="torch,dali", help="comma list of torch, dali, dali-cpu, synthetic")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--img-size", type=int, default=224)
    ap.add_argument("--iters", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--threads", type=int, default=None, help="DALI CPU threads (default: all cores)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for name in args.loaders.split(","):
        try:
            rows.append(bench_loader(args.root, name.strip(), batch=args.batch, img_size=args.img_size,
                                     iters=args.iters, warmup=args.warmup, workers=args.workers, device=device,
                                     threads=args.threads))  # fmt: skip
        except DatasetError as e:
            print(f"{name}: error: {e}")
            continue
        r = rows[-1]
        print(f"{name}: {r['img_s']:.0f} img/s (setup {r['setup_s']:.1f}s)", flush=True)
    if not rows:
        return 1
    print(f"\n{args.root}, batch {args.batch}, {args.img_size}px, train transform, device {device}, "
          f"{args.workers} workers/threads\n")  # fmt: skip
    print("| loader | img/s | vs torch |")
    print("|---|---:|---:|")
    base = next((r["img_s"] for r in rows if r["loader"] == "torch"), None)
    for r in rows:
        rel = f"{r['img_s'] / base:.1f}x" if base else "-"
        print(f"| {r['loader']} | {r['img_s']:,.0f} | {rel} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
