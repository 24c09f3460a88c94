"""The training update as device work only, and how it is run: eager, with a compiled model, or captured whole.

Nothing in an update waits for the host. A non-finite loss or gradient is found on the device (found_inf-style): the
fused AdamW step is masked by the flag (its kernel leaves weights, moments and step count as they were), BN buffers
are put back where the update is skipped and the EMA left as it was. Each update returns a small record on the
device (`RECORD`); the loop reads the records back in one transfer every `trainer.log_every` updates (and at
checkpoints, epoch ends and its first update), through `read_back`.

Running it (`resolve_step_plan`, `trainer.compile` / `compile_mode` / `capture`):
- eager, or the model compiled by torch.compile (`trainer.compile=true|regional`; `auto`, the default, compiles the
  whole model on CUDA and stays eager on CPU), with `trainer.capture=model` CUDA graphs of the model alone
  (`reduce-overhead`). The rest of the update is a few eager multi-tensor kernels around the model's graphs. With DDP, torch.compile splits the wrapped model's graph at
  DDP's bucket boundaries (DDPOptimizer), each piece its own CUDA graph, and the reducer launches each bucket's
  all-reduce between them as the backward reaches it: the overlap eager DDP has, with DDP's bucketing unchanged.
- `trainer.capture=update` (CUDA; what `auto` picks for a compiled model on one process): the whole update, forward, backward, unscale, clip, the masked fused AdamW step,
  the scaler update, the BN restore and the EMA lerp, captured once as one CUDA graph (`CapturedUpdate`) and replayed;
  mixup and the loader stay outside and feed static input buffers. With DDP the gradient all-reduces are recorded in
  the same graph on NCCL's stream, as the reducer launches them bucket by bucket during the backward, so they overlap
  the backward on replay as they do eagerly (PyTorch's documented whole-network capture with DDP).
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from . import distributed as D
from .profiling import label

RECORD = ("loss", "kd", "bad", "skipped", "stop")  # one update's device record, in this order
WARMUP_UPDATES = 3  # rehearsals before a capture: cuDNN's algorithm search, compilation, lazy optimizer state
WARMUP_UPDATES_DDP = 11  # DDP needs this many before its collectives can be captured (PyTorch CUDA graphs notes)


def read_back(values: Tensor) -> Any:
    """The update loop's one device-to-host read (`values.tolist()`), named so its calls can be counted."""
    return values.tolist()


# ----------------------------------------------------------------------------------------------- the plan
@dataclass(frozen=True)
class StepPlan:
    """How updates run: `compile` None (eager) | whole | regional, torch.compile's `mode`, `capture` model | update
    (auto resolved)."""

    compile: str | None
    mode: str
    capture: str
    why: str

    def describe(self) -> str:
        what = "eager" if self.compile is None else f"compiled ({self.compile}, mode {self.mode})"
        graph = "; the whole update captured as one CUDA graph" if self.capture == "update" else ""
        return f"{what}{graph}: {self.why}"


def resolve_step_plan(device_type: str, compile: str | None, mode: str, capture: str,
                      compiler_ready: bool = True, update_capturable: bool = True, distributed: bool = False) -> StepPlan:
    """The plan for `trainer.compile` (`compile_how`'s answer: None | whole | regional | auto), `compile_mode`
    (a torch.compile mode or auto) and `capture` (auto | model | update) on a device of `device_type`;
    `compiler_ready`: torch.compile can generate code here (Dynamo supports this Python, Triton is there for CUDA);
    `update_capturable`: one micro-batch per update and the fused AdamW (`config.update_capturable`).

    auto compiles the whole model on CUDA and is eager on CPU, where compiling costs minutes and gains little. The
    auto capture on CUDA, for a compiled model on one process, is the whole update as one CUDA graph: S6 on an H200
    ran at 97 % of bench.py's bare compiled step that way, against 96 % with graphs of the model alone, with a host
    time per update of 4 ms instead of 15 (docs/results.md#engine-step); compiling and capturing cost 84 s before
    the first update instead of 29. Elsewhere (eager, accumulation, a non-fused optimizer, DDP, whose all-reduces in
    one graph are not measured on several GPUs) it is the model's graphs (`reduce-overhead`); a graph cannot be
    captured inside another, so a captured update compiles without them.
    """
    why = f"trainer.compile={compile or 'false'}"
    if compile == "auto":
        if device_type != "cuda":
            compile, why = None, "trainer.compile=auto is eager on CPU"
        elif not compiler_ready:
            compile, why = None, ("trainer.compile=auto: torch.compile cannot generate code here (Python unsupported "
                                  "by Dynamo, or Triton missing); eager")
        else:
            compile, why = "whole", "trainer.compile=auto on CUDA"
    if capture == "auto":
        whole_update = device_type == "cuda" and compile is not None and update_capturable and not distributed
        capture = "update" if whole_update else "model"
    graphs = device_type == "cuda" and capture == "model"
    if mode == "auto":
        mode = "reduce-overhead" if graphs else "default"
    elif capture == "update" and mode in ("reduce-overhead", "max-autotune"):
        mode = "default" if mode == "reduce-overhead" else "max-autotune-no-cudagraphs"
    return StepPlan(compile, mode, capture, why)


def compiler_ready(device_type: str) -> bool:
    """torch.compile's default backend can run here (Dynamo supports this Python; Triton for CUDA code)."""
    if not torch._dynamo.is_dynamo_supported():
        return False
    if device_type != "cuda":
        return True
    from torch.utils._triton import has_triton

    return has_triton()


# ----------------------------------------------------------------------------------------------- parts
class BufferGuard:
    """The model's buffers (BN running statistics and counters) saved before an update's forward passes and put back
    where the update is skipped (a NaN batch poisons BN statistics), on the device: per dtype, one flat copy and one
    multi-tensor copy back, whatever the number of BN layers. Persistent buffers only: the model's state (constants
    such as the Haar filters are not written by a forward)."""

    def __init__(self, model: nn.Module):
        params = {id(p) for p in model.parameters()}
        groups: dict[torch.dtype, list[Tensor]] = {}
        for b in model.state_dict(keep_vars=True).values():
            if isinstance(b, Tensor) and id(b) not in params:
                groups.setdefault(b.dtype, []).append(b.view(-1))  # views: copies into them land in the buffers
        self.flat = list(groups.values())
        self.sizes = [[b.numel() for b in group] for group in self.flat]
        self.saved: list[Tensor] = []

    @torch.no_grad()
    def snapshot(self) -> None:
        self.saved = [torch.cat(group) for group in self.flat]

    @torch.no_grad()
    def restore_where(self, skip: Tensor) -> None:
        """Buffers as snapshotted where `skip` (a bool scalar) is set, as they are otherwise."""
        for saved, group, sizes in zip(self.saved, self.flat, self.sizes):
            torch._foreach_copy_(group, list(torch.where(skip, saved, torch.cat(group)).split(sizes)))


def masked_step(optimizer: torch.optim.Optimizer, skip: Tensor) -> None:
    """`optimizer.step()` unless `skip` (a 0/1 float on the device) is 1. The fused AdamW decides on the device
    (found_inf: the kernel leaves weights, moments and step count untouched); other optimizers (optim.fused=false)
    need the flag on the host, one read-back per update."""
    if all(group.get("fused") for group in optimizer.param_groups):
        optimizer.found_inf = skip
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif not read_back(skip):
        optimizer.step()


# ----------------------------------------------------------------------------------------------- the update
ForwardLoss = Callable[[Tensor, Tensor], "tuple[Tensor, Tensor | None]"]


class DeviceUpdate:
    """One optimizer update, all on the device: forward and backward over the micro-batches (`forward_loss(images,
    soft_targets) -> (loss, kd or None)`), unscale, clip, the skip decision (a non-finite loss, or gradient without a
    scaler, on ANY rank: one all-reduced flag, with this rank's stop request), the masked AdamW step, the scaler update,
    BN buffers put back where skipped, the EMA updated where not. Returns the record (`RECORD`) on the device.

    The latch: from the update that makes `max_nonfinite` consecutive non-finite ones, every update is skipped until
    the host reads the records back and stops the run, so last.ckpt holds the last good state whenever that is. The
    host sets the count (`restart_count`) where it left it; a trip never outlives a read-back (the run stops there).
    """

    def __init__(self, *, model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any, ema: Any, ddp: Any,
                 forward_loss: ForwardLoss, accum: int, max_nonfinite: int, device: torch.device):
        self.model, self.optimizer, self.scaler, self.ema, self.ddp = model, optimizer, scaler, ema, ddp
        self.forward_loss, self.accum, self.max_nonfinite = forward_loss, accum, float(max_nonfinite)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.buffers = BufferGuard(model)
        self.clip = float("inf")  # the phase's grad_clip (inf: off)
        self.consecutive = torch.zeros((), device=device)  # non-finite updates in a row
        self.tripped = torch.zeros((), device=device)  # 1 once they reached max_nonfinite: the latch
        self.stop = torch.zeros((), device=device)  # written by the host before each update: a signal arrived here

    def set_phase(self, clip: float | None) -> None:
        self.clip = float(clip) if clip else float("inf")

    def restart_count(self, consecutive: int) -> None:
        """The count as the host last read it back (a checkpoint's, at a resume), the latch open."""
        self.consecutive.fill_(float(consecutive))
        self.tripped.zero_()

    def __call__(self, batches: Iterable[tuple[Tensor, Tensor]], rehearse: bool = False) -> Tensor:
        """`batches`: the update's `accum` micro-batches (an iterator: each is fetched when it is used).
        `rehearse`: compute everything and change nothing (skip forced; the caller restores RNG and scaler)."""
        self.buffers.snapshot()
        loss_sum = kd_sum = None
        for micro, (images, soft) in enumerate(batches):
            loss, kd = self.forward_loss(images, soft)
            last = micro == self.accum - 1
            with (self.ddp.no_sync() if self.ddp is not None and not last else contextlib.nullcontext()), label("backward"):
                (self.scaler.scale(loss / self.accum) if self.scaler is not None else loss / self.accum).backward()
            part = loss.detach().float() / self.accum
            loss_sum = part if loss_sum is None else loss_sum + part
            if kd is not None:
                kd_sum = kd / self.accum if kd_sum is None else kd_sum + kd / self.accum
        assert loss_sum is not None, "an update needs at least one micro-batch"
        return self._finish(loss_sum, kd_sum, rehearse)

    def _finish(self, loss_sum: Tensor, kd_sum: Tensor | None, rehearse: bool) -> Tensor:
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        grads_finite = torch.isfinite(torch.nn.utils.clip_grad_norm_(self.params, self.clip))
        bad = ~torch.isfinite(loss_sum)
        if self.scaler is None:  # fp16: inf grads with a finite loss are the scaler's business (no step, lower scale)
            bad = bad | ~grads_finite
        bad_any, stop_any = D.all_reduce_max(torch.stack([bad.float(), self.stop]))
        skip = torch.ones_like(bad_any) if rehearse else torch.maximum(bad_any, self.tripped)
        if not rehearse:
            self.consecutive.copy_(torch.where(bad_any > 0, self.consecutive + 1, 0.0))
            self.tripped.copy_(torch.maximum(self.tripped, (self.consecutive >= self.max_nonfinite).float()))
        with label("optimizer"):
            masked_step(self.optimizer, torch.maximum(skip, (~grads_finite).float()))
            self.optimizer.zero_grad(set_to_none=True)
            if self.scaler is not None:
                self.scaler.update()
        self.buffers.restore_where(skip > 0)
        if self.ema is not None:
            with label("ema"):
                self.ema.update_unless(self.model, skip)
        kd = kd_sum if kd_sum is not None else torch.zeros_like(loss_sum)
        return torch.stack([loss_sum, kd.float(), bad_any, skip, stop_any])


# ----------------------------------------------------------------------------------------------- the capture
class CapturedUpdate:
    """`trainer.capture=update`: the DeviceUpdate of one micro-batch captured once as a CUDA graph and replayed.

    The first call copies its batch into static buffers, rehearses the update a few times on a side stream (cuDNN's
    algorithm search, torch.compile's compilation, the optimizer's lazy state, DDP's buckets; state restored: the
    rehearsals change nothing), captures one update and replays it for that batch; later calls copy the batch in and
    replay. The lr of each param group is a device tensor the graph reads, refreshed from the schedule before every
    replay. On CPU there is no graph: the same buffers and rehearsals, then plain calls (the plumbing, testable).
    `reset()` drops the graph (a new phase: another teacher, clip or EMA decay); the next call captures again.
    """

    def __init__(self, update: DeviceUpdate, device: torch.device):
        self.update, self.device = update, device
        self.warmup = WARMUP_UPDATES_DDP if update.ddp is not None else WARMUP_UPDATES
        self.static: tuple[Tensor, Tensor] | None = None
        self.graph: Any = None
        self.record: Tensor | None = None
        self.lrs: list[Tensor] = []
        self.capture_s: float | None = None  # host seconds of the last rehearsal + capture

    def reset(self) -> None:
        self.static = self.graph = self.record = None

    def __call__(self, batches: Iterable[tuple[Tensor, Tensor]]) -> Tensor:
        (images, soft), = batches  # one micro-batch per update (config validation)
        if self.static is None:
            self.static = (images.clone(), soft.clone())
            self._prepare()
        else:
            self.static[0].copy_(images)
            self.static[1].copy_(soft)
        if self.graph is None:
            return self.update([self.static])
        for lr, group in zip(self.lrs, self.update.optimizer.param_groups):
            lr.fill_(group["lr"])
        with label("replay"):
            self.graph.replay()
        return self.record.clone()

    def _prepare(self) -> None:
        t0 = time.perf_counter()
        with self._neutral(), self._side_stream():
            for _ in range(self.warmup):
                self.update([self.static], rehearse=True)
        if self.device.type == "cuda":
            self.graph = torch.cuda.CUDAGraph()
            with self._capturable_optimizer(), torch.cuda.graph(self.graph):
                self.record = self.update([self.static])
            torch.cuda.synchronize(self.device)
        self.capture_s = time.perf_counter() - t0

    @contextlib.contextmanager
    def _neutral(self) -> Iterator[None]:
        """Rehearsals leave the RNG streams and the scaler (scale, growth tracker) as they found them; all else they
        touch is masked on the device (weights, moments, BN buffers, EMA)."""
        devices = [self.device] if self.device.type == "cuda" else []
        scaler = self.update.scaler
        state = scaler.state_dict() if scaler is not None else None
        with torch.random.fork_rng(devices=devices):
            yield
        if scaler is not None:
            scaler.load_state_dict(state)

    @contextlib.contextmanager
    def _side_stream(self) -> Iterator[None]:
        if self.device.type != "cuda":
            yield
            return
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            yield
        torch.cuda.current_stream(self.device).wait_stream(side)

    @contextlib.contextmanager
    def _capturable_optimizer(self) -> Iterator[None]:
        """During the capture: each group's lr as a device tensor (the graph reads it at every replay) and the
        `capturable` flag AdamW checks; both put back after, so the optimizer's state_dict is the eager one's."""
        groups = self.update.optimizer.param_groups
        saved = [(g["lr"], g.get("capturable", False)) for g in groups]
        self.lrs = [torch.tensor(float(g["lr"]), device=self.device) for g in groups]
        for g, lr in zip(groups, self.lrs):
            g["lr"], g["capturable"] = lr, True
        try:
            yield
        finally:
            for g, (lr, capturable) in zip(groups, saved):
                g["lr"], g["capturable"] = lr, capturable
