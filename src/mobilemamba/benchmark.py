"""Throughput of MobileMamba: inference of the (fused) model and the training step, as one table.

Every configuration is timed the same way: warm-up, then `repeats` timed runs of `iters` steps each, timed with
device events after a synchronisation (host clock on CPU); the table shows the median img/s and peak memory.
"""
from __future__ import annotations

import contextlib
import csv
import itertools
import os
import statistics
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn

from .models import VARIANTS, create_model

SHORT_NAMES = {name.split("_")[-1]: name for name in VARIANTS}


@dataclass
class BenchConfig:
    model: str = "mobilemamba_s6"
    mode: str = "infer"  # infer | train
    batch: int = 256
    amp: str = "bf16"  # bf16 | fp16 | none
    fused: bool = True  # inference only: the BN-folded model
    compile: bool = False
    channels_last: bool = True
    kd: bool = False  # train only: add a frozen teacher forward (distill.build_teacher) to the step
    teacher: str = "tresnet_v2_l"
    data: str = "synthetic"
    scan_backend: str = "auto"
    wavelet: str = "auto"  # pytorch_wavelets | conv | auto (conv when compiling: pywt breaks Dynamo's graphs)
    img_size: int = 0  # 0: the variant's own resolution
    warmup: int = 15
    iters: int = 20
    repeats: int = 5
    device: str = "auto"
    model_kwargs: str = ""  # e.g. "embed_dim=16-32-48,depth=1-1-1" for tiny smoke runs


@dataclass
class BenchResult:
    model: str
    mode: str
    img_size: int
    batch: int
    amp: str
    fused: bool
    compile: bool
    channels_last: bool
    kd: bool
    scan_backend: str
    world_size: int
    img_per_s: float
    img_per_s_min: float
    img_per_s_max: float
    peak_mem_gib: float
    device_name: str


def resolve_name(name: str) -> str:
    name = SHORT_NAMES.get(name, name)
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(VARIANTS)} or {', '.join(SHORT_NAMES)}")
    return name


def _parse_model_kwargs(text: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=", 1)
        out[key] = tuple(int(v) for v in value.split("-")) if "-" in value else int(value)
    return out


def _autocast(device: torch.device, amp: str):
    if amp == "none":
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]
    return torch.autocast(device.type, dtype=dtype)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_runs(step: Callable[[], None], cfg: BenchConfig, device: torch.device) -> list[float]:
    """Seconds per run of cfg.iters steps, for cfg.repeats runs after cfg.warmup steps."""
    for _ in range(cfg.warmup):
        step()
    _sync(device)
    times = []
    for _ in range(cfg.repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(cfg.iters):
                step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            for _ in range(cfg.iters):
                step()
            times.append(time.perf_counter() - t0)
    return times


def _inference_step(model: nn.Module, x: torch.Tensor, cfg: BenchConfig, device: torch.device) -> Callable[[], None]:
    def step() -> None:
        with torch.inference_mode(), _autocast(device, cfg.amp):
            model(x)
    return step


def _train_step(model: nn.Module, x: torch.Tensor, num_classes: int, cfg: BenchConfig, device: torch.device,
                teacher: nn.Module | None) -> Callable[[], None]:
    """AdamW + AMP (GradScaler for fp16) + soft-target cross-entropy (+ the recipe's KD), on random data."""
    from timm.loss import SoftTargetCrossEntropy

    from distill import KDLoss  # top-level package of this repo

    fused_adam = device.type == "cuda"
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05, fused=fused_adam)
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    targets = torch.softmax(torch.randn(x.shape[0], num_classes, device=device), dim=-1)
    base_loss, kd_loss = SoftTargetCrossEntropy(), KDLoss(kind="soft", alpha=5.0, tau=1.0)

    def step() -> None:
        with _autocast(device, cfg.amp):
            out = model(x)
        loss = base_loss(out.float(), targets)
        if teacher is not None:
            loss, _ = kd_loss(out, teacher(x), loss)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0, foreach=True)
        scaler.step(opt)
        scaler.update()
    return step


def _build_teacher(cfg: BenchConfig, model: nn.Module, img_size: int, device: torch.device) -> nn.Module:
    from distill import build_teacher  # top-level package of this repo
    tcfg = dict(kind="soft", teacher=cfg.teacher, pretrained=False, compile=cfg.compile)
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    return build_teacher(tcfg, student_mean=mean, student_std=std, student_img_size=img_size, device=device)


def run_one(cfg: BenchConfig) -> BenchResult:
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    if cfg.data != "synthetic":
        raise ValueError(f"bench data={cfg.data!r}: only 'synthetic' is measured here (see mobilemamba.data.bench "
                         "for the loaders)")
    if cfg.mode not in ("infer", "train"):
        raise ValueError(f"bench mode must be infer|train, got {cfg.mode!r}")
    if cfg.amp not in ("bf16", "fp16", "none"):
        raise ValueError(f"bench amp must be bf16|fp16|none, got {cfg.amp!r}")
    torch.backends.cudnn.benchmark = True
    name = resolve_name(cfg.model)
    img_size = cfg.img_size or VARIANTS[name].img_size
    model = create_model(name, scan_backend=cfg.scan_backend, **_parse_model_kwargs(cfg.model_kwargs)).to(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    model.set_wavelet_impl(("conv" if cfg.compile else "pytorch_wavelets") if cfg.wavelet == "auto" else cfg.wavelet)
    x = torch.randn(cfg.batch, 3, img_size, img_size, device=device).to(memory_format=memory_format)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if cfg.mode == "infer":
        model = model.fuse() if cfg.fused else model.eval()
        runner = torch.compile(model) if cfg.compile else model
        step = _inference_step(runner, x, cfg, device)
    else:
        model.train()
        teacher = _build_teacher(cfg, model, img_size, device) if cfg.kd else None
        num_classes = model.num_classes
        if world > 1:
            model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
        runner = torch.compile(model) if cfg.compile else model
        step = _train_step(runner, x, num_classes, cfg, device, teacher)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = _time_runs(step, cfg, device)
    rates = [world * cfg.batch * cfg.iters / t for t in times]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return BenchResult(name, cfg.mode, img_size, cfg.batch, cfg.amp, cfg.fused and cfg.mode == "infer", cfg.compile,
                       cfg.channels_last, cfg.kd, cfg.scan_backend, world, statistics.median(rates), min(rates),
                       max(rates), peak, torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu")


def expand(overrides: dict[str, str]) -> Iterator[BenchConfig]:
    """One BenchConfig per combination of comma-separated values (`model=t2,s6 mode=infer,train`)."""
    types = {f.name: f.type for f in fields(BenchConfig)}
    unknown = set(overrides) - set(types)
    if unknown:
        raise ValueError(f"unknown bench option(s) {', '.join(sorted(unknown))}; known: {', '.join(types)}")
    keys = list(overrides)
    lists = [overrides[k].split(",") if k != "model_kwargs" else [overrides[k]] for k in keys]
    for combo in itertools.product(*lists):
        values: dict[str, Any] = {}
        for key, raw in zip(keys, combo):
            kind = types[key]
            if kind in ("bool", bool):
                values[key] = raw.lower() in ("1", "true", "yes")
            elif kind in ("int", int):
                values[key] = int(raw)
            else:
                values[key] = raw
        yield BenchConfig(**values)


def format_table(rows: list[BenchResult]) -> str:
    head = f"{'model':<15}{'mode':<6}{'res':>5}{'batch':>6}{'amp':>6}{'fused':>6}{'comp':>5}{'cl':>4}{'kd':>4}" \
           f"{'scan':>8}{'gpus':>5}{'img/s':>10}{'min':>9}{'max':>9}{'mem GiB':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.model:<15}{r.mode:<6}{r.img_size:>5}{r.batch:>6}{r.amp:>6}{str(r.fused)[0]:>6}"
                     f"{str(r.compile)[0]:>5}{str(r.channels_last)[0]:>4}{str(r.kd)[0]:>4}{r.scan_backend:>8}"
                     f"{r.world_size:>5}{r.img_per_s:>10.0f}{r.img_per_s_min:>9.0f}{r.img_per_s_max:>9.0f}"
                     f"{r.peak_mem_gib:>9.2f}")
    return "\n".join(lines)


def write_csv(rows: list[BenchResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(BenchResult)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
