"""`trainer.profile=N`: a torch.profiler window over N training updates of the run's first epoch, on rank 0.

Why: an end-to-end step can be much slower than the model's bare step (the engine's extras, host syncs, the data
side); the profile says where the time goes. The window opens after `PROFILE_SKIP` updates (compilation, CUDA graph
capture, cuDNN autotuning) and two warm-up updates. Written to the run directory:
- `profile_summary.txt`: per update, wall time, device kernel time (GPU busy share) and the host time of each labelled
  part of the step (`data`, `mixup`, `forward`, `backward`, `optimizer`, `ema`, `replay` (the captured update),
  `read_back`: see `Trainer._train_updates` and engine/step.py);
- `profile_ops.txt`: the top ops by self device time and by self host time;
- `profile_trace.json.gz`: the Chrome / Perfetto trace.
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch.profiler import ProfilerActivity, profile, record_function, schedule

log = logging.getLogger("mobilemamba.engine")

PROFILE_SKIP = 10  # updates before the window: compile, CUDA graph capture, autotuning
PROFILE_WARMUP = 2
STEP_PARTS = ("data", "mixup", "forward", "backward", "optimizer", "ema", "replay", "read_back")

label = record_function  # the step's parts, named in the trace (near-free when no profiler runs)


def kernel_us(events) -> float:
    """Device time of the kernels and copies (not of the user annotations spanning them), as torch's tables count it."""
    from torch.autograd import DeviceType

    return sum(float(e.self_device_time_total) for e in events
               if e.device_type == DeviceType.CUDA and not getattr(e, "is_user_annotation", False))


def summarize(events, updates: int, wall_s: float, device: bool) -> str:
    """Per-update wall, kernel (with ``device``) and labelled host times from a finished window's ``key_averages()``."""
    per = lambda us: us / 1e3 / max(updates, 1)  # noqa: E731  (µs over the window → ms per update)
    wall_ms = wall_s * 1e3 / max(updates, 1)
    lines = [f"{updates} updates profiled: {wall_ms:.2f} ms wall per update"]
    if device:
        kernel_ms = per(kernel_us(events))
        lines.append(f"device kernel time {kernel_ms:.2f} ms per update ({100 * kernel_ms / wall_ms if wall_ms else 0:.0f}% "
                     f"of wall; kernels of overlapping streams count twice)")
    parts: dict[str, float] = {}  # host time of each part (its device-side twin, a span on the GPU, has none)
    for e in events:
        if e.key in STEP_PARTS:
            parts[e.key] = max(parts.get(e.key, 0.0), float(e.cpu_time_total))
    for name in STEP_PARTS:
        if name in parts:
            lines.append(f"  host {name:<10} {per(parts[name]):7.2f} ms per update")
    return "\n".join(lines) + "\n"


def _write(prof: profile, out: Path, updates: int, wall_s: float, device: bool) -> None:
    events = prof.key_averages()  # aggregated once, for the summary and both tables
    summary = summarize(events, updates, wall_s, device)
    (out / "profile_summary.txt").write_text(summary)
    tables = []
    if device:
        tables.append(events.table(sort_by="self_cuda_time_total", row_limit=40))
    tables.append(events.table(sort_by="self_cpu_time_total", row_limit=40))
    (out / "profile_ops.txt").write_text("\n\n".join(tables) + "\n")
    prof.export_chrome_trace(str(out / "profile_trace.json.gz"))
    log.info("profile of %d updates written to %s:\n%s", updates, out, summary.rstrip())


@contextlib.contextmanager
def update_profiler(updates: int, out_dir: str | Path, device: torch.device) -> Iterator[Callable[[], None]]:
    """A callable to call after each update; profiles updates PROFILE_SKIP + PROFILE_WARMUP + [1, updates].

    ``updates`` <= 0 yields a no-op. Leaving early (a short epoch) writes what the window holds so far, if anything.
    """
    if updates <= 0:
        yield lambda: None
        return
    out = Path(out_dir)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    # step() is called after each update; call i moves the schedule to step i + 1, so the window opens at this call
    start = PROFILE_SKIP + PROFILE_WARMUP - 1
    marks: list[float] = []  # host time at each call
    written: list[bool] = []

    def ready(prof: profile) -> None:
        done = min(len(marks) - 1 - start, updates)
        _write(prof, out, max(done, 0), marks[start + done] - marks[start] if done > 0 else 0.0, device.type == "cuda")
        written.append(True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    sched = schedule(wait=PROFILE_SKIP, warmup=PROFILE_WARMUP, active=updates, repeat=1)
    with profile(activities=activities, schedule=sched, on_trace_ready=ready) as prof:
        def step() -> None:
            if len(marks) in (start, start + updates):
                sync()  # the window's edges on finished work; no sync inside it
            marks.append(time.perf_counter())
            prof.step()

        try:
            yield step
        finally:
            if start < len(marks) < start + updates + 1:
                sync()  # left inside the window: its end is the last update's, on finished work
                marks[-1] = time.perf_counter()
    if not written:
        log.warning("trainer.profile=%d: the epoch ended after %d updates, before the profile window "
                    "(updates %d-%d)", updates, len(marks), start + 2, start + 1 + updates)
