"""Throughput benchmark: `python bench.py model=s6 mode=infer,train [batch=256] [amp=bf16|fp16|none] [fused=true]
[compile=true] [channels_last=true] [kd=true] [out=DIR]`. Comma-separated values give one row per combination.
Multi-GPU training throughput: `torchrun --nproc_per_node=N bench.py mode=train ...` (DDP, img/s over all GPUs).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from mobilemamba.benchmark import expand, format_table, run_one, write_csv


def main(argv: list[str]) -> None:
    overrides = dict(arg.split("=", 1) for arg in argv)
    out = Path(overrides.pop("out", f"outputs/bench/{time.strftime('%Y-%m-%d_%H-%M-%S')}"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        torch.distributed.init_process_group("nccl")
        overrides.setdefault("device", f"cuda:{local}")
    rows = []
    for cfg in expand(overrides):
        rows.append(run_one(cfg))
        if rank == 0:
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
    if rank == 0:
        print(format_table(rows))
        write_csv(rows, out / "bench.csv")
        print(f"wrote {out / 'bench.csv'}")
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
