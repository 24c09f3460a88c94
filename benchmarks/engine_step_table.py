"""One Markdown table: bench.py's compiled training step against train.py's default path, per run, from the files
benchmarks/engine_step.sh leaves in OUT (OUT/bench_MODEL/bench.csv, OUT/train_RUN/{metrics.jsonl,
profile_summary.txt}; RUN is MODEL or MODEL_jpegs, compared with bench_MODEL).

    python benchmarks/engine_step_table.py OUT [--names s6,s6_jpegs,t2,b1,s6_kd]

train.py's img/s is that of its last train record (the updates after the profiler's window); data wait is the share
of the step the loop waited for batches over the records after the first two; compile is the startup event's first
update (compilation, CUDA-graph capture) less a steady update.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path


def bench_row(path: Path) -> dict:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {"img_per_s": float(rows[-1]["img_per_s"]), "setup_s": float(rows[-1]["setup_s"])} if rows else {}


def train_row(run: Path) -> dict:
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    train = [r for r in recs if r.get("kind") == "train"]
    startup = next((r for r in recs if r.get("event") == "startup"), {})
    late = train[2:] or train
    out = {"img_per_s": train[-1]["img_per_s"], "step_ms": 1e3 * train[-1]["step_time"],
           "data_wait": sum(r["data_time"] for r in late) / max(sum(r["step_time"] for r in late), 1e-9),
           "startup_s": startup.get("startup_s"), "capture_s": startup.get("capture_s"),
           "path": f"{startup.get('compile')}/{startup.get('compile_mode')}/{startup.get('capture')}"}
    summary = run / "profile_summary.txt"
    if summary.exists():
        text = summary.read_text()
        wall = re.search(r"([\d.]+) ms wall per update", text)
        kernel = re.search(r"device kernel time ([\d.]+) ms", text)
        out.update(prof_wall_ms=float(wall.group(1)) if wall else None, kernel_ms=float(kernel.group(1)) if kernel else None)
    return out


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--names", default="s6,s6_jpegs,t2,t2_jpegs,b1,b1_jpegs,s6_kd,s6_kd_jpegs")
    args = ap.parse_args(argv)
    lines = ["| step | bench.py img/s (setup s) | train.py img/s | × bench | ms/update (kernels, profiled wall) | "
             "data wait | compile + capture s | path |", "|---|---:|---:|---:|---:|---:|---:|---|"]
    for name in args.names.split(","):
        bench_csv, run = args.out / f"bench_{name.removesuffix('_jpegs')}" / "bench.csv", args.out / f"train_{name}"
        b = bench_row(bench_csv) if bench_csv.exists() else {}
        t = train_row(run) if (run / "metrics.jsonl").exists() else {}
        if not (b or t):
            continue
        ratio = t["img_per_s"] / b["img_per_s"] if b and t else None
        lines.append(f"| {name} | {fmt(b.get('img_per_s'), ',.0f')} ({fmt(b.get('setup_s'), '.0f')}) | "
                     f"{fmt(t.get('img_per_s'), ',.0f')} | {fmt(ratio, '.2f')} | {fmt(t.get('step_ms'), '.1f')} "
                     f"({fmt(t.get('kernel_ms'), '.1f')}, {fmt(t.get('prof_wall_ms'), '.1f')}) | "
                     f"{fmt(t.get('data_wait') and 100 * t['data_wait'], '.1f')} % | {fmt(t.get('startup_s'), '.0f')} | "
                     f"{t.get('path', '-')} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
