"""Throughput of MobileMamba: inference of the (fused) model and the training step, as one table.

Every configuration is timed the same way: warm-up, then `repeats` timed runs of `iters` steps each, timed with
device events after a synchronisation (host clock on CPU); the table shows the median img/s and peak memory, and
the set-up time (compilation, CUDA-graph capture and warm-up steps).

Speed-ups: `compile=true` compiles the whole model (torch.compile), `compile=regional` each of its blocks
(`MobileMamba.regions()`), with `compile_mode` passed to torch.compile; `cuda_graph=true` (inference) captures the
forward (fused, eager or compiled) once in a CUDA graph and replays it. `gpu_lock=FILE` lets several bench processes
run at once (benchmarks/gpu_speed.sh): they compile concurrently and take turns on the GPU.
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
from typing import Any, Callable, Iterator, Optional

import torch
import torch.nn as nn

from .models import VARIANTS, create_model
from .models.compiling import COMPILE_MODES, COMPILED_WAVELET, compile_model, cuda_graph_step

SHORT_NAMES = {name.split("_")[-1]: name for name in VARIANTS}
COMPILE_CHOICES = ("false", "true", "regional")  # none | the whole model | each block
_TRUE, _FALSE = ("1", "true", "yes", "whole"), ("0", "false", "no", "none")


class BenchError(ValueError):
    """A configuration that cannot run (bench.py prints it as one line)."""


@dataclass
class BenchConfig:
    model: str = "mobilemamba_s6"
    mode: str = "infer"  # infer | train
    batch: int = 256
    amp: str = "bf16"  # bf16 | fp16 | none
    fused: bool = True  # inference only: the BN-folded model
    compile: str = "false"  # false | true (the whole model) | regional (each block, compiled separately)
    compile_mode: str = "default"  # torch.compile's mode: default | reduce-overhead | max-autotune-no-cudagraphs
    compile_backend: str = "inductor"  # torch.compile's backend (eager / aot_eager for CPU checks)
    cuda_graph: bool = False  # inference only: capture the forward in a CUDA graph, replay it in the timed loop
    channels_last: bool = True
    kd: bool = False  # train only: add a frozen teacher forward (distill.build_teacher) to the step
    teacher: str = "tresnet_v2_l"
    data: str = "synthetic"
    scan_backend: str = "auto"
    # pytorch_wavelets | conv | shuffle | auto (shuffle when compiling: pywt breaks Dynamo's graphs)
    wavelet: str = "auto"
    img_size: int = 0  # 0: the variant's own resolution
    warmup: int = 15
    iters: int = 20
    repeats: int = 5
    device: str = "auto"
    model_kwargs: str = ""  # e.g. "embed_dim=16-32-48,depth=1-1-1" for tiny smoke runs
    gpu_lock: str = ""  # a file shared by bench processes run at once: they compile concurrently, use the GPU in turn

    def __post_init__(self) -> None:
        text = str(self.compile).lower()
        self.compile = "true" if text in _TRUE else "false" if text in _FALSE else text
        if self.compile not in COMPILE_CHOICES:
            raise BenchError(f"bench compile must be true|false|regional, got {self.compile!r}")
        if self.compile_mode not in COMPILE_MODES:
            raise BenchError(f"bench compile_mode must be one of {'|'.join(COMPILE_MODES)}, got {self.compile_mode!r}")
        if self.mode not in ("infer", "train"):
            raise BenchError(f"bench mode must be infer|train, got {self.mode!r}")
        if self.amp not in ("bf16", "fp16", "none"):
            raise BenchError(f"bench amp must be bf16|fp16|none, got {self.amp!r}")
        if self.cuda_graph and self.mode != "infer":
            raise BenchError("bench cuda_graph=true is for mode=infer only (the train step is not captured)")
        if self.cuda_graph and self.compiling and self.compile_mode == "reduce-overhead":
            raise BenchError("bench cuda_graph=true with compile_mode=reduce-overhead would capture CUDA graphs "
                             "twice; use one of them")

    @property
    def compiling(self) -> bool:
        return self.compile != "false"


@dataclass
class BenchResult:
    model: str
    mode: str
    img_size: int
    batch: int
    amp: str
    fused: bool
    compile: str
    compile_mode: str
    cuda_graph: bool
    channels_last: bool
    kd: bool
    scan_backend: str
    world_size: int
    img_per_s: float
    img_per_s_min: float
    img_per_s_max: float
    peak_mem_gib: float
    setup_s: float  # model compilation, graph capture and warm-up steps, wall clock
    device_name: str
    wavelet: str = "-"  # the Haar step's formulation (models/wavelet.py); '-' in CSVs written before it was recorded


def resolve_name(name: str) -> str:
    name = SHORT_NAMES.get(name, name)
    if name not in VARIANTS:
        raise BenchError(f"unknown model {name!r}; expected one of {', '.join(VARIANTS)} or {', '.join(SHORT_NAMES)}")
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


def _warm_up(step: Callable[[], None], cfg: BenchConfig, device: torch.device, steps: int) -> None:
    for _ in range(steps):
        step()
    _sync(device)


class _GpuLock:
    """An exclusive lock on the file `path` (nothing when `path` is empty), held while this process uses the GPU and
    let go while Dynamo compiles (and AOTAutograd compiles a lazy backward): bench processes run at once compile
    concurrently and time one at a time. The holder also has the first two CPU cores to itself (where the machine
    has 8 or more): the compiling processes, and the compile workers they start, run on the others, so a host-bound
    timed loop does not compete with them. `waited`: the seconds spent waiting for the lock."""

    def __init__(self, path: str):
        self.path, self.waited = path, 0.0
        self._file: Any = None
        self._let_go = False
        cpus = sorted(os.sched_getaffinity(0)) if path and hasattr(os, "sched_getaffinity") else []
        self._all_cpus = set(cpus)
        self._gpu_cpus, self._other_cpus = (set(cpus[:2]), set(cpus[2:])) if len(cpus) >= 8 else (set(), set())

    @staticmethod
    def _pin(cpus: set[int]) -> None:
        if cpus:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(0, cpus)

    def _acquire(self) -> None:
        import fcntl  # POSIX only, like the multi-process runs this serves

        t0 = time.perf_counter()
        fcntl.flock(self._file, fcntl.LOCK_EX)
        self.waited += time.perf_counter() - t0
        self._pin(self._gpu_cpus)

    def _release(self) -> None:
        import fcntl

        self._pin(self._other_cpus)
        fcntl.flock(self._file, fcntl.LOCK_UN)

    def _on_compile_start(self, args: Any = None) -> None:
        trigger = getattr(getattr(args, "callback_trigger", None), "name", "DYNAMO")
        if trigger in ("DYNAMO", "LAZY_BACKWARD") and not self._let_go:  # not CUDA-graph recording: GPU work
            self._let_go = True
            self._release()

    def _on_compile_end(self, args: Any = None) -> None:
        if self._let_go:
            self._acquire()
            self._let_go = False

    @contextlib.contextmanager
    def held(self) -> Iterator["_GpuLock"]:
        if not self.path:
            yield self
            return
        try:  # Dynamo's compile callbacks (private API): without them compilation holds the lock too
            from torch._dynamo.callback import callback_handler
        except ImportError:
            callback_handler = None
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+") as self._file:
            self._pin(self._other_cpus)
            self._acquire()
            if callback_handler is not None:
                callback_handler.register_start_callback(self._on_compile_start)
                callback_handler.register_end_callback(self._on_compile_end)
            try:
                yield self
            finally:
                if callback_handler is not None:
                    callback_handler.remove_start_callback(self._on_compile_start)
                    callback_handler.remove_end_callback(self._on_compile_end)
                if not self._let_go:
                    self._release()
                self._pin(self._all_cpus)


def _time_runs(step: Callable[[], None], cfg: BenchConfig, device: torch.device) -> list[float]:
    """Seconds per run of cfg.iters steps, for cfg.repeats runs (after `_warm_up`)."""
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


def _compile(module: nn.Module, cfg: BenchConfig, model: Optional[nn.Module] = None) -> nn.Module:
    """`module` compiled as cfg says (see mobilemamba.models.compiling); `model` is the MobileMamba inside it."""
    how = "whole" if cfg.compile == "true" else "regional"
    # the Haar implementation was set from cfg.wavelet (COMPILED_WAVELET unless one is asked for)
    return compile_model(module, model or module, how, cfg.compile_mode, cfg.compile_backend, wavelet=None)


def _forward_fn(model: nn.Module, cfg: BenchConfig, device: torch.device) -> Callable[[torch.Tensor], Any]:
    def forward(x: torch.Tensor) -> Any:
        with torch.inference_mode(), _autocast(device, cfg.amp):
            return model(x)
    return forward


def _inference_step(forward: Callable[[torch.Tensor], Any], x: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        forward(x)
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
    tcfg = dict(kind="soft", teacher=cfg.teacher, pretrained=False, compile=cfg.compiling)
    mean, std = model.pretrained_cfg["mean"], model.pretrained_cfg["std"]
    return build_teacher(tcfg, student_mean=mean, student_std=std, student_img_size=img_size, device=device)


def resolve_device(cfg: BenchConfig) -> torch.device:
    """The device `cfg` runs on; raises BenchError when the configuration cannot run there."""
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
    if cfg.data != "synthetic":
        raise BenchError(f"bench data={cfg.data!r}: only 'synthetic' is measured here (see mobilemamba.data.bench "
                         "for the loaders)")
    if cfg.cuda_graph and device.type != "cuda":
        raise BenchError(f"bench cuda_graph=true needs a CUDA device, got '{device}'")
    return device


def run_one(cfg: BenchConfig) -> BenchResult:
    device = resolve_device(cfg)
    torch.backends.cudnn.benchmark = True
    name = resolve_name(cfg.model)
    img_size = cfg.img_size or VARIANTS[name].img_size
    model = create_model(name, scan_backend=cfg.scan_backend, **_parse_model_kwargs(cfg.model_kwargs)).to(device)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    wavelet = (COMPILED_WAVELET if cfg.compiling else "pytorch_wavelets") if cfg.wavelet == "auto" else cfg.wavelet
    model.set_wavelet_impl(wavelet)
    x = torch.randn(cfg.batch, 3, img_size, img_size, device=device).to(memory_format=memory_format)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_setup = time.perf_counter()

    def prepare() -> Callable[[], None]:
        """The timed step, after its first call (compilation, cuDNN's algorithm search, graph capture)."""
        nonlocal model
        if cfg.mode == "infer":
            model = model.fuse().set_wavelet_impl(wavelet) if cfg.fused else model.eval()  # fuse() picks conv
            forward = _forward_fn(_compile(model, cfg) if cfg.compiling else model, cfg, device)
            step = cuda_graph_step(forward, x, device) if cfg.cuda_graph else _inference_step(forward, x)
        else:
            model.train()
            teacher = _build_teacher(cfg, model, img_size, device) if cfg.kd else None
            num_classes = model.num_classes
            if cfg.compile == "regional":
                model = _compile(model, cfg)
            inner = model
            if world > 1:
                model = nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
            runner = _compile(model, cfg, inner) if cfg.compile == "true" else model
            step = _train_step(runner, x, num_classes, cfg, device, teacher)
        step()
        _sync(device)
        return step

    with _GpuLock(cfg.gpu_lock).held() as lock:
        step = prepare()
        _warm_up(step, cfg, device, cfg.warmup - 1)
        setup_s = time.perf_counter() - t_setup - lock.waited
        times = _time_runs(step, cfg, device)
    rates = [world * cfg.batch * cfg.iters / t for t in times]
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    return BenchResult(name, cfg.mode, img_size, cfg.batch, cfg.amp, cfg.fused and cfg.mode == "infer", cfg.compile,
                       cfg.compile_mode if cfg.compiling else "-", cfg.cuda_graph, cfg.channels_last, cfg.kd,
                       cfg.scan_backend, world, statistics.median(rates), min(rates), max(rates), peak, setup_s,
                       torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", wavelet)


def expand(overrides: dict[str, str]) -> Iterator[BenchConfig]:
    """One BenchConfig per combination of comma-separated values (`model=t2,s6 mode=infer,train`)."""
    types = {f.name: f.type for f in fields(BenchConfig)}
    unknown = set(overrides) - set(types)
    if unknown:
        raise BenchError(f"unknown bench option(s) {', '.join(sorted(unknown))}; known: {', '.join(types)}")
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


_SHORT_MODES = {"default": "default", "reduce-overhead": "red-ovh", "max-autotune-no-cudagraphs": "max-at-ncg",
                "max-autotune": "max-at", "-": "-"}


_SHORT_HAAR = {"pytorch_wavelets": "pt_wav"}


def _baseline_key(r: BenchResult) -> tuple:
    return r.model, r.mode, r.img_size, r.batch, r.amp, r.fused, r.channels_last, r.kd, r.scan_backend, r.world_size


def format_table(rows: list[BenchResult]) -> str:
    """One line per row; 'x eager': img/s over that of the eager row (no compile, no CUDA graph) of the same
    model and settings in `rows`, where there is one."""
    eager = {_baseline_key(r): r.img_per_s for r in rows if r.compile == "false" and not r.cuda_graph}
    head = f"{'model':<15}{'mode':<6}{'res':>5}{'batch':>6}{'amp':>6}{'fused':>6}{'compile':>9}{'cmode':>11}" \
           f"{'graph':>6}{'cl':>4}{'kd':>4}{'scan':>8}{'haar':>9}{'gpus':>5}{'img/s':>10}{'min':>9}{'max':>9}{'x eager':>8}" \
           f"{'mem GiB':>9}{'setup s':>9}"
    lines = [head, "-" * len(head)]
    for r in rows:
        comp = {"false": "-", "true": "whole"}.get(r.compile, r.compile)
        base = eager.get(_baseline_key(r))
        ratio = f"{r.img_per_s / base:.2f}" if base else "-"
        lines.append(f"{r.model:<15}{r.mode:<6}{r.img_size:>5}{r.batch:>6}{r.amp:>6}{str(r.fused)[0]:>6}"
                     f"{comp:>9}{_SHORT_MODES.get(r.compile_mode, r.compile_mode):>11}{str(r.cuda_graph)[0]:>6}"
                     f"{str(r.channels_last)[0]:>4}{str(r.kd)[0]:>4}{r.scan_backend:>8}"
                     f"{_SHORT_HAAR.get(r.wavelet, r.wavelet):>9}"
                     f"{r.world_size:>5}{r.img_per_s:>10.0f}{r.img_per_s_min:>9.0f}{r.img_per_s_max:>9.0f}"
                     f"{ratio:>8}{r.peak_mem_gib:>9.2f}{r.setup_s:>9.1f}")
    return "\n".join(lines)


def read_csv(path: Path) -> list[BenchResult]:
    """The rows `write_csv` wrote."""
    types = {f.name: f.type for f in fields(BenchResult)}
    convert = {"bool": lambda v: v == "True", "int": int, "float": float, "str": str}
    with open(path, newline="") as f:
        return [BenchResult(**{k: convert[types[k]](v) for k, v in row.items()}) for row in csv.DictReader(f)]


def write_csv(rows: list[BenchResult], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=[fl.name for fl in fields(BenchResult)])
        writer.writeheader()
        writer.writerows(asdict(r) for r in rows)
