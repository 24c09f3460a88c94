"""CPU inference benchmark of the fused model: batch-1 latency and batch-8 throughput per runtime.

    python -m mobilemamba.export.bench_cpu [--variants t2,s6,b1] [--runtimes sequential,torch,chunked,onnxruntime]
                                           [--repeats 7] [--warmup 2] [--threads N] [--json PATH]

Runtimes: eager PyTorch with each scan backend — 'sequential' (the textbook loop, `selective_scan_ref` in float32:
the baseline), 'torch' (logcumsumexp in float64), 'chunked' (the export scan) — then 'onnxruntime' (the exported
ONNX graph, CPU provider) and 'compile' (torch.compile of the chunked model; opt-in, as inductor compiles for
minutes on a small CPU). Each runtime is warmed up, then all are timed in turn, `repeats` rounds; the table shows
medians (and best), the speed-up of batch-1 latency over the sequential baseline, and each runtime's max relative
difference to it.
Besides wall-clock time it records the process CPU time of a batch-1 forward (all threads): on a machine shared
with other work the wall clock is inflated by waiting for a core, the CPU time much less.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn

from ..models import VARIANTS, create_model
from .core import export_onnx, max_rel_diff, set_scan_backend

EAGER = ("sequential", "torch", "chunked")
RUNTIMES = EAGER + ("onnxruntime", "compile")
DEFAULT_RUNTIMES = EAGER + ("onnxruntime",)
Runner = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Row:
    variant: str
    img_size: int
    runtime: str
    setup_s: float  # export / compile time before the first timed call (0 for eager)
    latency_ms: float  # batch 1, median
    latency_min_ms: float
    cpu_ms: float  # process CPU time of one batch-1 forward, median
    throughput: float  # batch 8 images per second, median
    throughput_best: float
    speedup: float  # batch-1 latency of the sequential baseline / this one
    max_rel_diff: float  # to the sequential baseline's output on the same input


def _eager(model: nn.Module, backend: str) -> Runner:
    def run(x: torch.Tensor) -> torch.Tensor:
        set_scan_backend(model, backend)
        with torch.inference_mode():
            return model(x)
    return run


def _onnxruntime(model: nn.Module, img_size: int, workdir: str, threads: int, exporter: str) -> Runner:
    import onnxruntime as ort
    path = os.path.join(workdir, "model.onnx")
    set_scan_backend(model, "chunked")
    export_onnx(model, path, img_size, exporter=exporter)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: torch.from_numpy(session.run(None, {name: x.numpy()})[0])


def _compiled(model: nn.Module) -> Runner:
    set_scan_backend(model, "chunked")
    compiled = torch.compile(model)

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return compiled(x)
    return run


def _times(fn: Runner, x: torch.Tensor, repeats: int) -> tuple[list[float], list[float]]:
    """Wall-clock and process-CPU seconds of `repeats` calls."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(x)
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def _make_runner(runtime: str, model: nn.Module, size: int, workdir: str, threads: int, exporter: str) -> Runner:
    if runtime in EAGER:
        return _eager(model, runtime)
    if runtime == "onnxruntime":
        return _onnxruntime(model, size, workdir, threads, exporter)
    return _compiled(model)


def bench_variant(name: str, runtimes: tuple[str, ...], *, repeats: int, warmup: int, threads: int,
                  exporter: str, img_size: int | None = None, log: Callable[[str], None] = print) -> list[Row]:
    """Time every runtime on one variant's fused model (random weights) at its resolution.

    The runtimes are timed in turn within each repeat (round robin), so that a burst of other load on the machine
    slows them all alike rather than one of them.
    """
    size = img_size or VARIANTS[name].img_size
    torch.manual_seed(0)
    model = create_model(name, scan_backend="sequential").fuse()
    x1 = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    x8 = torch.randn(8, 3, size, size, generator=torch.Generator().manual_seed(2))
    baseline = _eager(model, "sequential")(x1)
    runners, setup, diff = {}, {}, {}
    lat: dict[str, list[float]] = {r: [] for r in runtimes}
    cpu: dict[str, list[float]] = {r: [] for r in runtimes}
    thr: dict[str, list[float]] = {r: [] for r in runtimes}
    with tempfile.TemporaryDirectory() as workdir:
        for runtime in runtimes:
            start = time.perf_counter()
            runners[runtime] = _make_runner(runtime, model, size, workdir, threads, exporter)
            diff[runtime] = max_rel_diff(runners[runtime](x1), baseline)  # compiles the batch-1 graph, if any
            setup[runtime] = 0.0 if runtime in EAGER else round(time.perf_counter() - start, 1)
            for _ in range(warmup):
                runners[runtime](x1), runners[runtime](x8)
        for _ in range(repeats):
            for runtime, fn in runners.items():
                (wall,), (cpu_s,) = _times(fn, x1, 1)
                (wall8,), _ = _times(fn, x8, 1)
                lat[runtime].append(wall), cpu[runtime].append(cpu_s), thr[runtime].append(8 / wall8)
    rows = [Row(name, size, r, setup[r], 1e3 * statistics.median(lat[r]), 1e3 * min(lat[r]),
                1e3 * statistics.median(cpu[r]), statistics.median(thr[r]), max(thr[r]), 0.0, diff[r])
            for r in runtimes]
    base = next((r.latency_ms for r in rows if r.runtime == "sequential"), None)
    for r in rows:
        r.speedup = base / r.latency_ms if base else float("nan")
        log(f"  {name} {r.runtime}: {r.latency_ms:.1f} ms (batch 1; CPU time {r.cpu_ms:.1f} ms), "
            f"{r.throughput:.1f} img/s (batch 8)")
    return rows


def format_table(rows: list[Row]) -> str:
    """Markdown table of the rows."""
    head = ("| model | px | runtime | batch-1 latency ms (median / best) | batch-1 CPU time ms "
            "| batch-8 img/s (median / best) | latency vs sequential | setup s | max rel diff |\n"
            "|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in rows:
        lines.append(f"| {r.variant.split('_')[-1].upper()} | {r.img_size} | {r.runtime} | {r.latency_ms:.1f} / "
                     f"{r.latency_min_ms:.1f} | {r.cpu_ms:.1f} | {r.throughput:.1f} / {r.throughput_best:.1f} | "
                     f"{r.speedup:.2f}x | {r.setup_s:g} | {r.max_rel_diff:.1e} |")
    return "\n".join(lines)


def _names(text: str, known: tuple[str, ...], what: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in items if t not in known]
    if bad or not items:
        raise SystemExit(f"bench_cpu: unknown {what} {', '.join(bad) or '(none)'}; expected some of {', '.join(known)}")
    return items


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobilemamba.export.bench_cpu", description=__doc__.split("\n")[0])
    parser.add_argument("--variants", default="t2,s6,b1")
    parser.add_argument("--runtimes", default=",".join(DEFAULT_RUNTIMES))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--img-size", type=int, default=None, help="override every variant's resolution")
    parser.add_argument("--exporter", default="auto", help="ONNX exporter for the onnxruntime runtime")
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    short = tuple(n.split("_")[-1] for n in VARIANTS)
    variants = [f"mobilemamba_{v}" for v in _names(args.variants, short, "variant")]
    runtimes = _names(args.runtimes, RUNTIMES, "runtime")
    if args.repeats < 1:
        raise SystemExit("bench_cpu: --repeats must be ≥ 1")
    torch.set_num_threads(args.threads)
    print(f"CPU benchmark: torch {torch.__version__}, {args.threads} threads, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}; median of {args.repeats} after {args.warmup} warm-up")
    rows: list[Row] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in variants:
            rows += bench_variant(name, runtimes, repeats=args.repeats, warmup=args.warmup, threads=args.threads,
                                  exporter=args.exporter, img_size=args.img_size)
    print(format_table(rows))
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
