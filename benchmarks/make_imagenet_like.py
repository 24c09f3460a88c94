"""Write a folder of ImageNet-like JPEGs (≈500×375, quality 90, smooth structure plus texture) for loader
benchmarks on machines without ImageNet: `python benchmarks/make_imagenet_like.py ROOT [--classes 100 --per-class 50]`.
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image


def _image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = int(rng.integers(400, 560)), int(rng.integers(300, 420))
    coarse = rng.uniform(0, 255, size=(6, 8, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), dtype=np.float32)
    texture = rng.normal(0, 18, size=(h, w, 3))
    return Image.fromarray(np.clip(base + texture, 0, 255).astype(np.uint8))


def _write(args: tuple[Path, int]) -> None:
    path, seed = args
    _image(seed).save(path, quality=90)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("root")
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--val-per-class", type=int, default=5)
    args = ap.parse_args()
    jobs = []
    for split, n in (("train", args.per_class), ("val", args.val_per_class)):
        for c in range(args.classes):
            folder = Path(args.root) / split / f"n{c:08d}"
            folder.mkdir(parents=True, exist_ok=True)
            offset = 0 if split == "train" else 10**8
            jobs += [(folder / f"img_{i:05d}.JPEG", offset + c * 10**5 + i) for i in range(n)]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    with ProcessPoolExecutor(max(1, cores)) as pool:
        list(pool.map(_write, jobs, chunksize=64))
    print(f"wrote {len(jobs)} JPEGs under {args.root}")


if __name__ == "__main__":
    main()
