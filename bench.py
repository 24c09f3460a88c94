"""Throughput benchmark: `python bench.py model=s6 mode=infer,train [batch=256] [amp=bf16|fp16|none] [fused=true]
[compile=false|true|regional] [compile_mode=default|reduce-overhead|max-autotune-no-cudagraphs] [cuda_graph=true]
[scan_backend=auto|triton|torch|...] [channels_last=true] [kd=true] [img_size=N] [out=DIR]`. Comma-separated values
give one row per combination (every option: `mobilemamba.benchmark.BenchConfig`). compile=true compiles the whole
model, compile=regional each block; cuda_graph=true (mode=infer, CUDA) replays the captured forward.
`model=` also takes any timm model, timed the same way: `model=s6,levit_256,efficientvit_m5 mode=infer,train`.
Multi-GPU training throughput: `torchrun --nproc_per_node=N bench.py mode=train ...` (DDP, img/s over all GPUs).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

from mobilemamba.benchmark import BenchError, check, expand, format_table, run_one, write_csv


def main(argv: list[str]) -> None:
    if any(arg in ("-h", "--help", "help") for arg in argv):
        print(__doc__.strip())
        return
    bad = [arg for arg in argv if "=" not in arg]
    if bad:
        sys.exit(f"bench.py: arguments are key=value, got {' '.join(bad)}")
    overrides = dict(arg.split("=", 1) for arg in argv)
    out = Path(overrides.pop("out", f"outputs/bench/{time.strftime('%Y-%m-%d_%H-%M-%S')}"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        local = int(os.environ["LOCAL_RANK"])
        torch.cuda.set_device(local)
        torch.distributed.init_process_group("nccl")
        overrides.setdefault("device", f"cuda:{local}")
    try:  # every configuration is checked before the first one runs
        cfgs = list(expand(overrides))
        for cfg in cfgs:
            check(cfg)
    except BenchError as err:
        sys.exit(f"bench.py: {err}")
    rows = []
    for cfg in cfgs:
        rows.append(run_one(cfg))
        if rank == 0:  # the table a row at a time, as each finishes (its 'x eager' against the rows above it)
            lines = format_table(rows).splitlines()
            print("\n".join(lines if len(rows) == 1 else lines[-1:]), flush=True)
            write_csv(rows, out / "bench.csv")  # after every row: a run cut short keeps the rows it finished
    if rank == 0:
        print(f"wrote {out / 'bench.csv'}")
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
