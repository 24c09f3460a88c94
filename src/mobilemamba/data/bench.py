"""Loader throughput with the recipe's train transform (RandAugment + erasing on), as a markdown table.

    python -m mobilemamba.data.bench ROOT [--loaders torch,dali,dali-cpu] [--batch 256] [--img-size 224]
                                          [--iters 50] [--warmup 5] [--workers N] [--threads N] [--device cuda]
                                          [--variants full,no-erasing,no-randaug,decode-only]
                                          [--hw-load 0.0,0.65,0.9,1.0] [--set KEY=VALUE ...]
                                          [--torch-img-s N] [--out FILE.md]

``dali`` decodes on the GPU (nvJPEG, ``mixed``) when the device is CUDA; ``dali-cpu`` decodes on the CPU.

Ablations (DALI loaders; ``torch`` and ``synthetic`` always run the full recipe once), one table row each:

- ``--variants``: ``full`` (the recipe), ``no-erasing``, ``no-randaug``, ``decode-only`` (decode + random crop +
  resize + normalize: no flip, RandAugment or erasing). A variant may carry data-config overrides after ``+``,
  e.g. ``full+dali_prefetch=3`` or ``decode-only+dali_roi_decode=false``.
- ``--hw-load``: runs every GPU-decoding variant once per value of ``data.dali_hw_decoder_load``.
- ``--set KEY=VALUE``: data-config overrides for every DALI row (e.g. ``dali_zero_copy=false``).

Images/s counts the batches delivered on the device after ``--warmup`` batches (pipeline build excluded) and
never spans an epoch restart: when the timed batches run past the end of an epoch, the first batch of the next
epoch (delivered after the pipeline refilled its prefetch queue) only restarts the clock. On CUDA the batches are
timed with CUDA events on torch's stream (a device-wide sync would stall DALI's own streams). The table also gives
the time to the first batch (pipeline build), the GPU memory in use (all processes, after the run) and, for DALI,
the CPU cores the process kept busy while timed (CPU time of all its threads / wall time: near the core count
means the CPU threads are the bottleneck).
``--out`` writes the table to a file row by row (a crash keeps the rows measured so far); ``--torch-img-s`` is the
torch loader's img/s for the ``vs torch`` column when ``torch`` is not among the loaders.
"""
from __future__ import annotations

import argparse
import gc
import os
import time
from dataclasses import fields
from typing import Any, Optional

import torch
import yaml

from . import DatasetError, build_loaders
from .config import DataParams
from .folder import load_folder_dataset

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# aug overrides of each ablation variant (the recipe's aug config is {})
VARIANTS: dict[str, dict[str, Any]] = {
    "full": {},
    "no-erasing": {"reprob": 0.0},
    "no-randaug": {"auto_augment": None},
    "decode-only": {"auto_augment": None, "reprob": 0.0, "hflip": 0.0},
}
COLUMNS = ("loader", "img/s", "vs torch", "variant", "hw load", "ms/batch", "setup s", "GPU GiB", "CPU cores", "notes")
_DATA_KEYS = {f.name for f in fields(DataParams)} | {"prefetch"}


def parse_overrides(items: list[str], what: str) -> dict[str, Any]:
    """``["key=value", ...]`` as data-config overrides (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DatasetError(f"{what}: expected KEY=VALUE, got {item!r}")
        if key not in _DATA_KEYS:
            raise DatasetError(f"{what}: {key!r} is not a data config key (e.g. dali_prefetch, dali_roi_decode)")
        out[key] = yaml.safe_load(value) if value.strip() else None
    return out


def parse_variant(spec: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``name[+key=value...]`` → (aug overrides, data overrides)."""
    name, *items = spec.strip().split("+")
    if name not in VARIANTS:
        raise DatasetError(f"unknown variant {name!r}: expected one of {', '.join(VARIANTS)} (+KEY=VALUE overrides)")
    return dict(VARIANTS[name]), parse_overrides(items, f"variant {spec!r}")


class _Clock:
    """Marks: a CUDA event on torch's current stream (on CUDA), the host clock and this process's CPU time."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def mark(self) -> tuple:
        ev = None
        if self.cuda:
            ev = torch.cuda.Event(enable_timing=True)
            ev.record()
        t = os.times()
        return ev, time.perf_counter(), t.user + t.system

    def seconds(self, start: tuple, end: tuple) -> float:
        if self.cuda:
            end[0].synchronize()
            return start[0].elapsed_time(end[0]) / 1e3
        return end[1] - start[1]

    @staticmethod
    def cpu_and_wall(start: tuple, end: tuple) -> tuple[float, float]:
        """CPU seconds of all of this process's threads (DALI's included) and host seconds in between."""
        return end[2] - start[2], end[1] - start[1]


def _release_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
    try:
        from nvidia.dali.backend import ReleaseUnusedMemory

        ReleaseUnusedMemory()
    except Exception:  # DALI not installed, or an older one
        pass


def bench_loader(
    root: str, loader: str, *, batch: int, img_size: int, iters: int, warmup: int, workers: int, device: torch.device,
    threads: Optional[int] = None, variant: str = "full", hw_load: Optional[float] = None,
    data_overrides: Optional[dict] = None,
) -> dict:  # fmt: skip
    """Time ``iters`` train batches of one loader (cycling epochs if the folder is small, see the module doc)."""
    dali = loader.startswith("dali")
    aug_cfg, variant_data = parse_variant(variant) if dali else ({}, {})
    data_cfg = dict(loader="dali" if dali else loader, root=root, workers=workers,
                    dali_device="cpu" if loader == "dali-cpu" else "auto", dali_threads=threads,
                    synthetic_size=batch * (iters + warmup), num_classes=None if loader != "synthetic" else 1000)  # fmt: skip
    if dali:
        data_cfg.update(data_overrides or {})
        data_cfg.update(variant_data)
        if hw_load is not None:
            data_cfg["dali_hw_decoder_load"] = hw_load
    params = DataParams.from_cfg(data_cfg)
    gpu_decode = dali and device.type == "cuda" and params.dali_device != "cpu"
    clock = _Clock(device)
    t0 = time.perf_counter()
    train, _ = build_loaders(
        data_cfg, aug_cfg, img_size=img_size, mean=MEAN, std=STD, crop_pct=0.875, interpolation="bicubic",
        batch_size=batch, eval_batch_size=batch, rank=0, world_size=1, device=device, seed=0,
    )  # fmt: skip
    per_epoch = len(train)
    restart_excluded = per_epoch > 1  # with one batch per epoch every batch follows a restart
    seen = timed = segments = epoch = 0
    elapsed, cpu_s, wall_s, setup_s, start, last = 0.0, 0.0, 0.0, None, None, None
    while timed < iters:
        train.set_epoch(epoch)
        end, n = None, 0
        if restart_excluded:
            start = None
        batches = iter(train)
        for images, targets in batches:
            seen += 1
            if setup_s is None:
                setup_s = time.perf_counter() - t0
            if seen <= warmup:
                if seen == warmup:
                    start = clock.mark()  # the last warmup batch opens the first timed segment
                continue
            if start is None:
                start = clock.mark()  # the first batch of an epoch only (re)starts the clock
                continue
            n += 1
            end = clock.mark()
            last = (images, targets)
            if timed + n == iters:
                break
        if hasattr(batches, "close"):  # a DALI epoch left early: drain its in-flight batches now, not in gc
            batches.close()
        if n:
            elapsed += clock.seconds(start, end)
            cpu, wall = clock.cpu_and_wall(start, end)
            cpu_s, wall_s = cpu_s + cpu, wall_s + wall
            timed += n
            segments += 1
            if not restart_excluded:
                start = end
        epoch += 1
        if epoch > iters + warmup + 1:  # pragma: no cover - an epoch that yields nothing would loop forever
            raise DatasetError(f"{loader}: the train loader yields no batches")
    images, targets = last
    notes = []
    if not bool(torch.isfinite(images).all()) or int(targets.min()) < 0:
        notes.append("BAD BATCH (non-finite pixels or labels)")
    if segments > 1:
        notes.append(f"{segments} epochs, refills excluded")
    gpu_gib = None
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        gpu_gib = (total - free) / 2**30
    hw = params.dali_hw_decoder_load if gpu_decode else None
    row = dict(loader=loader, variant=variant if dali else "full", hw_load=hw,
               img_s=timed * batch / elapsed, shape=tuple(images.shape), setup_s=setup_s, gpu_gib=gpu_gib,
               cpu_cores=cpu_s / wall_s if dali and wall_s > 0 else None,
               batches_per_epoch=per_epoch, segments=segments, notes="; ".join(notes))  # fmt: skip
    del train, images, targets, last
    _release_memory(device)
    return row


def _fmt_row(r: dict, base: Optional[float], batch: int) -> str:
    if r.get("error"):
        cells = [r["loader"], "-", "-", r["variant"], _fmt_load(r["hw_load"]), "-", "-", "-", "-",
                 f"error: {r['error']}"]  # fmt: skip
    else:
        rel = f"{r['img_s'] / base:.1f}x" if base else "-"
        gib = f"{r['gpu_gib']:.1f}" if r["gpu_gib"] is not None else "-"
        cores = f"{r['cpu_cores']:.1f}" if r.get("cpu_cores") is not None else "-"
        cells = [r["loader"], f"{r['img_s']:,.0f}", rel, r["variant"], _fmt_load(r["hw_load"]),
                 f"{1e3 * batch / r['img_s']:.1f}", f"{r['setup_s']:.1f}", gib, cores, r["notes"] or ""]  # fmt: skip
    return "| " + " | ".join(cells) + " |"


def _fmt_load(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:g}"


def _plan(loaders: list[str], variants: list[str], hw_loads: list[Optional[float]], device: torch.device,
          overrides: dict) -> list[tuple[str, str, Optional[float]]]:  # fmt: skip
    """(loader, variant, hw load) of every row, in order."""
    runs = []
    for loader in loaders:
        if not loader.startswith("dali"):
            runs.append((loader, "full", None))
            continue
        for variant in variants:
            _, vdata = parse_variant(variant)
            cpu = loader == "dali-cpu" or device.type != "cuda" or {**overrides, **vdata}.get("dali_device") == "cpu"
            for hw in [None] if cpu else hw_loads:
                runs.append((loader, variant, hw))
    return runs


def _header(args, device: torch.device, overrides: dict) -> str:
    try:
        train, _ = load_folder_dataset(args.root)
        n, classes = len(train), train.num_classes
        per_epoch = n // args.batch
        folder = f"{n:,} train images in {classes} classes, {per_epoch} batches of {args.batch} per epoch"
        if 0 < per_epoch < args.warmup + args.iters:
            folder += (f" (warmup + iters = {args.warmup + args.iters} batches span several epochs: each epoch's "
                       "first batch, after the pipeline refill, is left out of the timing)")  # fmt: skip
    except DatasetError as e:
        folder = f"no image folder ({e})"
    sets = ", ".join(f"{k}={v}" for k, v in overrides.items())
    return (f"{args.root}: {folder}. batch {args.batch}, {args.img_size}px, device {device}, "
            f"{args.workers} torch workers, DALI threads {args.threads or 'all cores'}, "
            f"{args.warmup} warmup + {args.iters} timed batches"
            + (f", data overrides: {sets}" if sets else ""))  # fmt: skip


def _floats(text: Optional[str]) -> list[Optional[float]]:
    if not text:
        return [None]
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise DatasetError(f"--hw-load: expected comma-separated numbers, got {text!r}") from None


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
    ap.add_argument("--variants", default="full", help=f"DALI ablations: comma list of {', '.join(VARIANTS)}, "
                    "each optionally +KEY=VALUE (data config overrides)")  # fmt: skip
    ap.add_argument("--hw-load", default=None, help="comma list of data.dali_hw_decoder_load values (GPU decoding)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="data override for DALI rows")
    ap.add_argument("--torch-img-s", type=float, default=None, help="torch img/s for 'vs torch' without a torch row")
    ap.add_argument("--out", default=None, help="also write the table to this markdown file (row by row)")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    try:
        overrides = parse_overrides(args.set, "--set")
        hw_loads = _floats(args.hw_load)
        variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        plan = _plan([x.strip() for x in args.loaders.split(",") if x.strip()], variants, hw_loads, device, overrides)
    except DatasetError as e:
        print(f"error: {e}")
        return 2
    header = _header(args, device, overrides)
    table_head = ["| " + " | ".join(COLUMNS) + " |", "|---|---:|---:|---|---:|---:|---:|---:|---:|---|"]
    print(header, flush=True)
    if args.out:
        with open(args.out, "w") as f:
            f.write(header + "\n\n" + "\n".join(table_head) + "\n")
    rows: list[dict] = []
    base = args.torch_img_s
    for loader, variant, hw in plan:
        label = f"{loader} {variant}" + (f" hw_load={hw:g}" if hw is not None else "")
        print(f"[{time.strftime('%H:%M:%S')}] {label} ...", flush=True)  # to line up with e.g. nvidia-smi dmon
        try:
            r = bench_loader(args.root, loader, batch=args.batch, img_size=args.img_size, iters=args.iters,
                             warmup=args.warmup, workers=args.workers, device=device, threads=args.threads,
                             variant=variant, hw_load=hw, data_overrides=overrides)  # fmt: skip
            print(f"[{time.strftime('%H:%M:%S')}] {label}: {r['img_s']:.0f} img/s (setup {r['setup_s']:.1f}s)",
                  flush=True)  # fmt: skip
        except Exception as e:  # one failed configuration (e.g. DALI's) must not lose the others
            msg = next((ln.strip() for ln in str(e).splitlines() if ln.strip()), type(e).__name__)[:200]
            print(f"{label}: error: {type(e).__name__}: {msg}", flush=True)
            r = dict(loader=loader, variant=variant, hw_load=hw, error=f"{type(e).__name__}: {msg}".replace("|", "/"))
            _release_memory(device)
        rows.append(r)
        if loader == "torch" and not r.get("error") and base is None:
            base = r["img_s"]
        if args.out:
            with open(args.out, "a") as f:
                f.write(_fmt_row(r, base, args.batch) + "\n")
    if not any(not r.get("error") for r in rows):
        return 1
    print("\n" + "\n".join(table_head))
    for r in rows:
        print(_fmt_row(r, base, args.batch))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
