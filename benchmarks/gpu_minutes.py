"""GPU minutes a reproduction's training took, from its timings.tsv (one row per train.py launch).

    python benchmarks/gpu_minutes.py WORK/timings.tsv

Rows are: name, seconds, GPU count, exit code, epochs[, start (unix s), GPU ids]. Runs that shared one GPU (lanes
side by side) overlap in time; a GPU's minutes are the union of its busy intervals, not the sum over runs. Rows
written before the last two columns existed count seconds x GPUs.
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path


def busy_seconds(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def gpu_seconds(rows: list[list[str]]) -> float:
    per_gpu: dict[str, list[tuple[float, float]]] = defaultdict(list)
    untimed = 0.0
    for row in rows:
        seconds, count = float(row[1]), int(row[2])
        if len(row) >= 7 and row[5] and row[6]:
            start = float(row[5])
            for gpu in row[6].split(","):
                per_gpu[gpu].append((start, start + seconds))
        else:
            untimed += seconds * max(count, 1)
    return untimed + sum(busy_seconds(iv) for iv in per_gpu.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("timings", type=Path)
    args = ap.parse_args(argv)
    rows = [line.split("\t") for line in args.timings.read_text().splitlines() if line.strip()]
    print(f"GPU minutes for training so far: {gpu_seconds(rows) / 60:.1f} (runs sharing a GPU counted once)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
