"""The training loop: phases of epochs of updates, with EMA, eval cadence, checkpoints, resume and fault handling.

Position bookkeeping (what a checkpoint records and a resume restores):
- `epoch`: 0-based index over the whole run of the epoch in progress (phases are consecutive epoch ranges);
- `batch`: train batches of that epoch already consumed (a multiple of accum_steps);
- `update`: optimizer updates done over the whole run (the lr schedule's clock; skipped non-finite updates count);
- `phase`: derived from `epoch`.
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from . import distributed as D
from . import faults
from .checkpoint import BEST, LAST, CheckpointLoadError, CheckpointSaveError, atomic_save, capture_rng, check_same_run, load_file, restore_rng
from ..models import count_params
from ..models.compiling import compile_model
from .config import (ConfigError, Phase, build_model, check_capture, compile_how, dataset_name, lr_plan, plain,
                     resolve_phases, should_evaluate, update_capturable)
from .ema import ModelEma
from .evaluate import evaluate, fuse_tolerance, fused_copy, ieee_fp32, iterating, max_abs_diff, rng_neutral_iter
from .layout import Layout, check_resume_layout, resume_batch, saved_layout
from .nonfinite import locate_nonfinite
from .ontrack import on_track
from .optim import PhasedSchedule, build_optimizer, load_optimizer_state
from .preempt import Preempted, PreemptionHandler
from .profiling import label, update_profiler
from .runlog import RunLogger, log_interval, plot_curves
from .step import BufferGuard, CapturedUpdate, DeviceUpdate, StepPlan, compiler_ready, read_back, resolve_step_plan

log = logging.getLogger("mobilemamba.engine")

EXIT_NONFINITE = 3


class NonFiniteError(RuntimeError):
    """trainer.max_nonfinite consecutive non-finite updates; last.ckpt holds the last good state."""


@contextlib.contextmanager
def preserved_rng():
    """Run a block (teacher or logger setup) without moving the python/numpy/torch RNG streams."""
    state = capture_rng()
    try:
        yield
    finally:
        restore_rng(state)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class Trainer:
    """Builds the parts from the config and runs all phases. One instance per process (rank)."""

    def __init__(self, cfg: DictConfig, run_dir: str | os.PathLike, env: D.DistEnv):
        self.cfg = cfg
        self.t = cfg.trainer
        self.run_dir = Path(run_dir)
        self.env = env
        self.device = env.device
        self.phases: list[Phase] = resolve_phases(cfg)
        self.plan = lr_plan(cfg, env.world_size)
        self.logger = RunLogger(self.run_dir, env.is_main, cfg.get("logger"))
        self.preempt = PreemptionHandler()
        # position and run state (all saved in checkpoints)
        self.epoch = 0
        self.batch = 0
        self.update = 0
        self.best: dict[str, dict[str, Any]] = {
            "raw": {"top1": None, "top5": None, "epoch": None},
            "ema": {"top1": None, "top5": None, "epoch": None},
        }
        self.last_eval: dict[str, Any] | None = None
        self.nonfinite_total = 0
        self.nonfinite_run = 0
        self.epoch_stats = self._empty_stats()
        self.status = "running"
        self.img_per_s_hist: list[float] = []
        self._teacher_cache: dict[str, tuple[Any, Any]] = {}
        self.teacher = None
        self.kd_loss = None
        self.ontrack = None  # set by build() for a run of a published variant
        self.phase_teachers: list[dict[str, Any] | None] = [None] * len(self.phases)  # identity, once a phase ran

    # ================================================================================== building
    def build(self) -> "Trainer":
        cfg, t, env = self.cfg, self.t, self.env
        D.set_deterministic(bool(t.deterministic), self.device)
        self._check_teacher_classes()
        D.seed_everything(int(cfg.seed))  # identical initial weights on every rank
        self.model = self._build_model()
        pc = dict(getattr(self.model, "pretrained_cfg", {}) or {})
        self.mean = tuple(pc.get("mean", (0.485, 0.456, 0.406)))
        self.std = tuple(pc.get("std", (0.229, 0.224, 0.225)))
        self.train_loader, self.val_loader = self._build_loaders(pc)
        self.n_batches = len(self.train_loader)
        if t.get("max_iters_per_epoch"):
            self.n_batches = min(self.n_batches, int(t.max_iters_per_epoch))
        self.accum = int(t.accum_steps)
        self.upe = self.n_batches // self.accum
        if self.upe == 0:
            raise ConfigError(
                f"data.batch_size={cfg.data.batch_size}: the train split gives {len(self.train_loader)} batches per rank, "
                f"fewer than trainer.accum_steps={self.accum} (0 updates per epoch)"
            )
        self.batches_used = self.upe * self.accum
        self.phase_epoch_start = [0]
        for ph in self.phases:
            self.phase_epoch_start.append(self.phase_epoch_start[-1] + ph.epochs)
        self.total_epochs = self.phase_epoch_start[-1]
        self.total_updates = self.total_epochs * self.upe
        self.read_back_every = max(1, int(t.log_every))
        self.record_every = log_interval(self.read_back_every, self.total_updates)
        self.ckpt_every = int(t.get("ckpt_every_iters") or 0)  # updates between periodic checkpoints (0: none)

        self.optimizer = build_optimizer(self.model, cfg.optim, self.plan.lr)
        self.schedule = PhasedSchedule(self.optimizer, cfg.sched, self.plan, self.phases, self.upe)
        self.amp_dtype = self._amp_dtype()
        self.scaler = torch.amp.GradScaler("cuda") if self.amp_dtype == torch.float16 else None
        self.ema = None
        if t.ema:
            # decay constant from the first update (step=None), params AND buffers (BN stats) averaged
            self.ema = ModelEma(self.model, decay=float(t.ema_decay), use_warmup=False, exclude_buffers=False)
        self.mixup, self.criterion = self._build_mixup_and_loss()
        self.ontrack = on_track(cfg, self.phases, self.plan.global_batch)
        if self.ontrack is not None and env.is_main:
            self.ontrack.announce(log)
        self.step_plan = self._step_plan()
        self.train_model = self._wrap_model()
        self._build_update()
        D.seed_everything(int(cfg.seed) + env.rank)  # per-rank streams for augmentation, drop-path, mixup
        return self

    def _build_model(self) -> nn.Module:
        model = build_model(self.cfg.model, int(self.cfg.data.num_classes))
        model.to(self.device)
        if self.t.sync_bn and self.env.distributed:
            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
            else:
                log.warning("trainer.sync_bn=true is ignored on CPU (SyncBatchNorm needs CUDA)")
        if self.t.channels_last:
            model.to(memory_format=torch.channels_last)
        return model

    def _build_loaders(self, pc: dict[str, Any]):
        from mobilemamba.data import build_loaders

        cfg = self.cfg
        train_loader, val_loader = build_loaders(
            cfg.data, cfg.aug, img_size=int(cfg.model.img_size), mean=self.mean, std=self.std,
            crop_pct=float(pc.get("crop_pct", 0.875)), interpolation=str(pc.get("interpolation", "bicubic")),
            batch_size=int(cfg.data.batch_size), eval_batch_size=int(cfg.data.eval_batch_size),
            rank=self.env.rank, world_size=self.env.world_size, device=self.device, seed=int(cfg.seed),
            channels_last=bool(self.t.channels_last),
        )
        found = getattr(train_loader, "num_classes", None)
        if found is not None and int(found) != int(cfg.data.num_classes):
            raise ConfigError(f"data.num_classes={cfg.data.num_classes} but the dataset has {found} classes")
        return train_loader, val_loader

    def _amp_dtype(self) -> torch.dtype | None:
        mode = str(self.t.amp)
        if mode == "none":
            return None
        if self.device.type != "cuda":
            if mode == "fp16":
                log.warning("trainer.amp=fp16 needs CUDA; running this CPU job in fp32")
                return None
            return torch.bfloat16
        return torch.float16 if mode == "fp16" else torch.bfloat16

    def autocast(self, cache: bool = True) -> ContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype, cache_enabled=cache)

    def _build_mixup_and_loss(self):
        a = self.cfg.aug
        smoothing = float(a.get("smoothing", 0.0) or 0.0)
        if float(a.get("mixup", 0) or 0) > 0 or float(a.get("cutmix", 0) or 0) > 0 or a.get("cutmix_minmax"):
            from timm.data import Mixup
            from timm.loss import SoftTargetCrossEntropy

            mix = Mixup(
                mixup_alpha=float(a.mixup), cutmix_alpha=float(a.cutmix),
                cutmix_minmax=plain(a.get("cutmix_minmax")), prob=float(a.mixup_prob),
                switch_prob=float(a.mixup_switch_prob), mode=str(a.mixup_mode), correct_lam=True,
                label_smoothing=smoothing, num_classes=int(self.cfg.data.num_classes),
            )
            return mix, SoftTargetCrossEntropy()
        return None, lambda logits, target: F.cross_entropy(logits, target, label_smoothing=smoothing)

    def _step_plan(self) -> StepPlan:
        """trainer.compile / compile_mode / capture resolved for this device (logged once, in the startup event)."""
        plan = resolve_step_plan(self.device.type, compile_how(self.t.get("compile")),
                                 str(self.t.get("compile_mode") or "auto"), check_capture(self.cfg),
                                 compiler_ready(self.device.type), update_capturable(self.cfg), self.env.distributed)
        if self.env.is_main:
            log.info("training step: %s", plan.describe())
        return plan

    def _wrap_model(self) -> nn.Module:
        model: nn.Module = self.model
        self.ddp = None
        if self.env.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            # a captured update records DDP's collectives: its buckets are made on a side stream (PyTorch's notes)
            side = self.device.type == "cuda" and self.step_plan.capture == "update"
            with torch.cuda.stream(torch.cuda.Stream(self.device)) if side else contextlib.nullcontext():
                # grads as views of the all-reduce buckets: no copy in or out of the buckets each step
                self.ddp = DDP(model, device_ids=ids, broadcast_buffers=True, gradient_as_bucket_view=True)
            if side:
                torch.cuda.synchronize(self.device)
            model = self.ddp
        how = self.step_plan.compile
        if how is not None:  # whole: one graph around DDP; regional: each block in place (faster to compile)
            model = compile_model(model, self.model, how, self.step_plan.mode,
                                  str(self.t.get("compile_backend") or "inductor"))
        return model

    def _build_update(self) -> None:
        """The update as device work (engine/step.py), run as is or captured whole (trainer.capture=update)."""
        self.device_update = DeviceUpdate(
            model=self.model, optimizer=self.optimizer, scaler=self.scaler, ema=self.ema, ddp=self.ddp,
            forward_loss=self._forward_loss, accum=self.accum, max_nonfinite=int(self.t.max_nonfinite), device=self.device,
        )
        self.captured = CapturedUpdate(self.device_update, self.device) if self.step_plan.capture == "update" else None
        self.run_update = self.captured or self.device_update
        self._queued: list[_Queued] = []  # updates queued on the device, not read back yet
        # trainer.debug.nan_at: the loss times this device scalar, NaN on the chosen updates (1 otherwise)
        debug = self.t.get("debug") or {}
        self._nan_at = {int(i) for i in (debug.get("nan_at") or [])}
        self._nan_rank = None if debug.get("nan_rank") is None else int(debug.nan_rank)
        self._poison = torch.ones((), device=self.device) if self._nan_at else None

    # ================================================================================== phases / teacher
    def phase_of(self, epoch: int) -> int:
        for p in range(len(self.phases)):
            if epoch < self.phase_epoch_start[p + 1]:
                return p
        return len(self.phases)

    def _enter_phase(self, p: int) -> None:
        ph = self.phases[p]
        key = json.dumps(ph.distill, sort_keys=True, default=str)
        if ph.distill is None:
            self.teacher, self.kd_loss = None, None
        else:
            if key not in self._teacher_cache:
                import distill

                with preserved_rng():
                    teacher = distill.build_teacher(
                        ph.distill, student_mean=self.mean, student_std=self.std,
                        student_img_size=int(self.cfg.model.img_size), device=self.device,
                        cuda_graphs=self.step_plan.capture != "update",  # no graph inside the update's graph
                    )
                    kd = distill.build_kd_loss(ph.distill)
                self._teacher_cache = {key: (teacher, kd)}  # keep one teacher in memory
            self.teacher, self.kd_loss = self._teacher_cache[key]
        self.phase_teachers[p] = self.teacher_identity()
        self.grad_clip = ph.grad_clip if ph.grad_clip is not None else self.t.get("grad_clip")
        if self.ema is not None:
            self.ema.decay = float(ph.ema_decay if ph.ema_decay is not None else self.t.ema_decay)
        self.device_update.set_phase(self.grad_clip)
        if self.captured is not None:
            self.captured.reset()  # the graph holds the teacher, the clip and the EMA decay of the phase before
        self.schedule.step_update(self.update, p)
        if self.epoch != self.phase_epoch_start[p] or self.batch != 0:
            return  # resumed inside the phase: its start was logged before the checkpoint
        self.logger.log("event", event="phase", phase=ph.name, phase_index=p, epoch=self.epoch, iteration=self.update,
                        distill=(ph.distill or {}).get("kind"), lr_scale=ph.lr_scale)
        log.info("phase %d/%d '%s': epochs %d-%d, distill=%s", p + 1, len(self.phases), ph.name,
                 self.phase_epoch_start[p] + 1, self.phase_epoch_start[p + 1], (ph.distill or {}).get("kind", "none"))

    def _check_teacher_classes(self) -> None:
        """A teacher predicting another number of classes than the student would fail at its first update."""
        import distill

        student = int(self.cfg.data.num_classes)
        for ph in self.phases:
            found = distill.teacher_num_classes(ph.distill) if ph.distill is not None else None
            if found is not None and found != student:
                raise distill.DistillConfigError(
                    f"distill.teacher {ph.distill.get('teacher')!r} predicts {found} classes, the student "
                    f"data.num_classes={student}: use a teacher trained on this dataset, or set "
                    f"distill.num_classes={student} (a timm teacher with a new head)"
                )

    def teacher_identity(self) -> dict[str, Any] | None:
        return getattr(self.teacher, "identity", None) if self.teacher is not None else None

    # ================================================================================== run
    def run(self) -> dict[str, Any]:
        self.preempt.install()
        try:
            self.resume()
            while self.epoch < self.total_epochs:
                p = self.phase_of(self.epoch)
                self._enter_phase(p)
                while self.epoch < self.phase_epoch_start[p + 1]:
                    self._train_epoch(p)
                    self._end_epoch(p)
            self.status = "finished"
            summary = self._finish()
            return summary
        except Preempted:
            self.status = "preempted"
            self._write_summary()
            raise
        except KeyboardInterrupt:  # a second Ctrl-C
            self.status = "interrupted"
            self._write_summary()
            raise
        except NonFiniteError:
            self.status = "stopped_nonfinite"
            self._write_summary()
            raise
        finally:
            self.preempt.uninstall()
            self.logger.close()
            for loader in (getattr(self, "train_loader", None), getattr(self, "val_loader", None)):
                if loader is not None:
                    loader.close()  # worker processes end here, not at the interpreter's exit

    # ---------------------------------------------------------------------------------- one epoch
    @staticmethod
    def _empty_stats() -> dict[str, float]:
        return {"loss_sum": 0.0, "kd_sum": 0.0, "updates": 0, "images": 0, "time": 0.0}

    def _train_epoch(self, p: int) -> None:
        self.train_loader.set_epoch(self.epoch, start_batch=self.batch)
        self.train_model.train()
        profile_updates = int(self.t.get("profile") or 0) if self.env.rank == 0 and not self._profiled else 0
        self._profiled = True  # the first epoch this process runs, only
        with iterating(self.train_loader) as it, update_profiler(profile_updates, self.run_dir, self.device) as tick:
            self._train_updates(p, it, tick)  # the loader is closed on a preemption too (see iterating)

    def _train_updates(self, p: int, it: Iterator, tick: Callable[[], None]) -> None:
        """The epoch's updates. Each is queued on the device (`_queue_update`, no host wait); the records are read
        back only where `_read_back_due` says, and a stop (signal, max_nonfinite) is decided there."""
        t, env = self.t, self.env
        bar = self._progress_bar(p)
        debug = t.get("debug") or {}
        self.device_update.restart_count(self.nonfinite_run)
        self._window_start = time.perf_counter()
        while self.batch < self.batches_used:
            queued = self._queue_update(it)
            self.batch += self.accum
            self.update += 1
            self.schedule.step_update(self.update, p)
            queued.lr = self.optimizer.param_groups[-1]["lr"]
            self._queued.append(queued)
            if float(debug.get("sleep") or 0) > 0:
                time.sleep(float(debug.sleep))
            if bar is not None:
                bar.update(1)
            if self._read_back_due():
                self._read_back(p, bar)
            if debug.get("stop_at") is not None and self.update == int(debug.stop_at):
                os.kill(os.getpid(), signal.SIGTERM)  # simulated preemption, handled like a real one
            if self._stop_requested:
                self._close_bar(bar)
                self._preempt_exit()
            tick()
            faults.after_update(self.update, env.rank)  # inert unless a MOBILEMAMBA_FAULT_* variable is set
            if self.ckpt_every and self.update % self.ckpt_every == 0 and self.batch < self.batches_used:
                self.save_checkpoint()
        self._close_bar(bar)
        # a signal that arrived during the last update of the epoch: stop before the (long) eval
        if self._agree_stop():
            self._preempt_exit()

    def _queue_update(self, it: Iterator) -> "_Queued":
        """Queue the next update on the device; its micro-batches are fetched (and mixed) as it consumes them."""
        update, rank = self.update + 1, self.env.rank
        injected = update in self._nan_at and (self._nan_rank is None or self._nan_rank == rank)
        if self._poison is not None:
            self._poison.fill_(float("nan") if injected else 1.0)
        self.device_update.stop.fill_(float(self.preempt.requested != 0))
        fetched = {"images": 0, "data_time": 0.0}

        def micro_batches() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for _ in range(self.accum):
                td = time.perf_counter()
                with label("data"):
                    images, targets = next(it)
                fetched["data_time"] += time.perf_counter() - td
                images = faults.poison_batch(images, update, rank)  # inert unless MOBILEMAMBA_FAULT_NAN_INPUT
                fetched["images"] += images.shape[0] * self.env.world_size
                if self.mixup is not None:
                    with label("mixup"):
                        images, targets = self.mixup(images, targets)
                self._last_inputs = images  # for locating a non-finite loss (no copy)
                yield images, targets

        record = self.run_update(micro_batches())
        return _Queued(update, record, fetched["images"], fetched["data_time"], injected)

    def _forward_loss(self, images: torch.Tensor, soft: torch.Tensor):
        """(loss, kd term or None) as device tensors: nothing here waits for the GPU."""
        # no autocast weight cache: a captured update cannot hold one (the same casts, redone)
        with self.autocast(cache=False), label("forward"):
            out = self.train_model(images)
            t_logits = self.teacher(images) if self.teacher is not None else None
        cls_out = out[0] if isinstance(out, (tuple, list)) else out
        loss = self.criterion(cls_out.float(), soft)  # the base loss in fp32
        kd = None
        if self.kd_loss is not None and t_logits is not None:
            loss, terms = self.kd_loss(out, t_logits.float(), loss)
            kd = terms.get("kd")
            kd = None if kd is None else torch.as_tensor(kd, dtype=torch.float32, device=loss.device).detach()
        if self._poison is not None:
            loss = loss * self._poison
        return loss, kd

    def _read_back_due(self) -> bool:
        """Where the queued records are read back: every trainer.log_every updates and the run's first, this
        process's first (its startup cost), each periodic checkpoint and the epoch's last (they hold everything up to
        them). A short run writes train records more often (`self.record_every`, runlog.log_interval), from the rows read
        back here, so it still never waits for the host between read-backs. The same updates on every rank, since a
        stop is decided there for all; only a single process, having no rank to agree with, also reads back at once
        after a signal."""
        u = self.update
        return (u % self.read_back_every == 0 or u == 1 or self._readbacks == 0
                or (self.ckpt_every > 0 and u % self.ckpt_every == 0) or self.batch >= self.batches_used
                or (not self.env.distributed and self.preempt.requested != 0))

    def _read_back(self, p: int, bar: Any) -> None:
        """The queued updates' records in one transfer, accounted for in order: epoch statistics, non-finite counts
        and events, train records at the log points (timing fields: averages over the updates read back together),
        the stop flags. Raises NonFiniteError (after last.ckpt) at trainer.max_nonfinite updates in a row."""
        queued, self._queued = self._queued, []
        if not queued:
            return
        with label("read_back"):
            rows = read_back(torch.stack([q.record for q in queued]))
        now = time.perf_counter()
        window_s, self._window_start = now - self._window_start, now
        images = sum(q.images for q in queued)
        timing = {"img_per_s": images / max(window_s, 1e-9), "data_time": sum(q.data_time for q in queued) / len(queued),
                  "step_time": window_s / len(queued)}
        self.img_per_s_hist.append(timing["img_per_s"])
        st = self.epoch_stats
        st["images"] += images
        st["time"] += window_s
        tripped: int | None = None  # the update that made max_nonfinite in a row; later ones were skipped (latch)
        stop = False
        for q, (loss, kd, bad, skipped, stop_any) in zip(queued, rows):
            if tripped is None and bad:
                self._count_nonfinite(q, loss, batch_at_hand=q is queued[-1])
                if self.nonfinite_run >= int(self.t.max_nonfinite):
                    tripped = q.update
            elif tripped is None and not skipped:
                self.nonfinite_run = 0
            if not skipped:
                st["loss_sum"] += loss
                st["kd_sum"] += kd
                st["updates"] += 1
            if q.update % self.record_every == 0 or q.update == 1:
                self.logger.log("train", phase=self.phases[p].name, epoch=self.epoch + 1, iteration=q.update,
                                loss=loss, kd=kd, lr=q.lr, skipped=bool(skipped), **timing)
            stop = stop or stop_any > 0
        self._last_inputs = None  # the batch is not held past its read-back
        self._stop_requested = stop or (not self.env.distributed and self.preempt.requested != 0)
        self._note_startup(window_s, len(queued))
        if bar is not None:
            remaining = (self.total_updates - self.update) * st["time"] / max(1, st["updates"])
            bar.set_postfix(loss=f"{rows[-1][0]:.4f}", lr=f"{queued[-1].lr:.2e}", ips=f"{timing['img_per_s']:.0f}",
                            data=f"{timing['data_time'] * 1e3:.0f}ms", step=f"{timing['step_time'] * 1e3:.0f}ms",
                            eta=_fmt_secs(remaining))
        if tripped is not None:
            self.save_checkpoint()
            raise NonFiniteError(
                f"trainer.max_nonfinite={self.t.max_nonfinite}: {self.nonfinite_run} consecutive non-finite "
                f"losses/gradients up to update {tripped}; last.ckpt holds the last good weights "
                f"(lower optim.lr or check the data, then rerun to resume)"
            )

    def _count_nonfinite(self, q: "_Queued", loss: float, batch_at_hand: bool) -> None:
        """A skipped non-finite update: counted, logged; the first non-finite loss of this process is traced to its
        module when its batch is still at hand (the last update read back)."""
        self.nonfinite_total += 1
        self.nonfinite_run += 1
        if batch_at_hand and not q.injected and not math.isfinite(loss):
            self._locate_nonfinite_once(q.update)
        self.logger.log("event", event="nonfinite", iteration=q.update, epoch=self.epoch + 1,
                        consecutive=self.nonfinite_run, total=self.nonfinite_total)
        log.warning("non-finite loss/grad at update %d: update skipped on all ranks (%d in a row, %d total)",
                    q.update, self.nonfinite_run, self.nonfinite_total)

    def _note_startup(self, window_s: float, updates: int) -> None:
        """This process's startup cost as an event, at its second read-back: its first update (compilation, CUDA
        graph capture, cuDNN's search, the loader's start) against the updates after it."""
        self._readbacks += 1
        if self._readbacks == 1:
            self._first_update = (self.update, window_s)
            return
        if self._readbacks > 2:
            return
        first, first_s = self._first_update
        per = window_s / updates
        capture_s = self.captured.capture_s if self.captured is not None else None
        self.logger.log("event", event="startup", iteration=self.update, first_update=first, resumed=first > 1,
                        first_update_s=first_s, update_s=per, startup_s=max(0.0, first_s - per), capture_s=capture_s,
                        compile=self.step_plan.compile or "none", compile_mode=self.step_plan.mode,
                        capture=self.step_plan.capture)
        if self.env.is_main:
            log.info("startup: first update %.1f s, then %.3f s per update (%s)", first_s, per, self.step_plan.describe())

    _stop_requested = False
    _profiled = False
    _last_inputs: torch.Tensor | None = None
    _located = False
    _readbacks = 0  # read-backs in this process
    _first_update: tuple[int, float] = (0, 0.0)  # (update, seconds) of this process's first

    def _locate_nonfinite_once(self, update: int) -> None:
        """At the first non-finite loss of this process, name the module whose output overflowed (fp16 > 65504?)
        by re-running the batch's forward with hooks: one line in the log and an event in metrics.jsonl."""
        if self._located or self._last_inputs is None:
            return
        self._located = True
        guard = BufferGuard(self.model)  # the rerun's train-mode forward moves BN statistics: put them back
        guard.snapshot()
        site = locate_nonfinite(self.model, self._last_inputs, self.autocast)
        guard.restore_where(torch.ones((), dtype=torch.bool, device=self.device))
        what = site.describe() if site is not None else "the forward is finite on a rerun (the loss or a kernel's nondeterminism?)"
        log.warning("non-finite loss at update %d on rank %d: %s", update, self.env.rank, what,
                    extra=D.RANK_SPECIFIC)
        self.logger.log("event", event="nonfinite_site", iteration=update, rank=self.env.rank,
                        **({"module": site.module, "module_class": site.module_class, "dtype": site.dtype,
                            "input_absmax": site.input_absmax, "inputs_finite": site.inputs_finite} if site else {}))

    def _sync_ema_buffers(self) -> None:
        """Rank 0's EMA BN statistics on every rank (each rank's EMA averages its own local BN stats between
        evaluations; rank 0's is the one checkpointed, so an evaluation uses it everywhere)."""
        if self.ema is not None:
            D.broadcast_buffers(self.ema.module)

    def _agree_stop(self) -> bool:
        flag = torch.tensor([float(self.preempt.requested != 0)], device=self.device)
        return bool(D.all_reduce_max(flag).item())

    def _preempt_exit(self) -> None:
        signum = self.preempt.requested or signal.SIGTERM
        self.save_checkpoint()
        self.logger.log("event", event="preempted", signal=signal.Signals(signum).name, iteration=self.update,
                        epoch=self.epoch + 1, batch=self.batch)
        log.warning("signal %s: checkpoint written at update %d; exiting", signal.Signals(signum).name, self.update)
        self.preempt.chain()
        raise Preempted(signum)

    # ---------------------------------------------------------------------------------- epoch end
    def _end_epoch(self, p: int) -> None:
        t = self.t
        e1 = self.epoch + 1
        last_of_phase = e1 == self.phase_epoch_start[p + 1]
        record: dict[str, Any] | None = None
        improved = False
        if should_evaluate(e1, last_of_phase, int(t.eval_every), int(t.eval_every_from)):
            record = self._evaluate_both()
            if self.ontrack is not None:
                record.update(self.ontrack.fields(e1, record))
            improved = self._update_best(record, e1)
            self.last_eval = {"epoch": e1, **record}
            self.logger.log("eval", phase=self.phases[p].name, epoch=e1, iteration=self.update, **record)
        st = self.epoch_stats
        train_loss = st["loss_sum"] / max(1, st["updates"])
        data_skipped = self._data_skipped()
        self.logger.log("event", event="epoch_end", epoch=e1, iteration=self.update, data_skipped=data_skipped,
                        train_loss=train_loss, img_per_s=st["images"] / max(st["time"], 1e-9))
        self.logger.epoch_row(
            epoch=e1, phase=self.phases[p].name, iteration=self.update, lr=self.optimizer.param_groups[-1]["lr"],
            train_loss=train_loss, train_kd=st["kd_sum"] / max(1, st["updates"]),
            img_per_s=st["images"] / max(st["time"], 1e-9), nonfinite_total=self.nonfinite_total,
            time=round(time.time(), 3), **({k: record.get(k) for k in ("top1", "top5", "ema_top1", "ema_top5")} if record else {}),
        )
        if self.env.is_main:
            msg = f"epoch {e1}/{self.total_epochs} loss {train_loss:.4f}"
            if record:
                msg += f" | top1 {record['top1']:.2f}" + (f" ema {record['ema_top1']:.2f}" if record.get("ema_top1") is not None else "")
                msg += self.ontrack.describe(record) if self.ontrack is not None else ""
            log.info(msg)
        self.epoch += 1
        self.batch = 0
        self.epoch_stats = self._empty_stats()
        names = [LAST]
        if improved:
            names.append(BEST)
        if record is not None and t.get("save_history"):
            names.append(f"epoch_{e1:04d}.ckpt")
        self.save_checkpoint(names)
        self._write_summary()

    def _data_skipped(self) -> int:
        """Unreadable train images replaced by the loader so far in this process (summed over ranks); warns."""
        local = float(getattr(self.train_loader, "skipped", 0) or 0)
        total = int(D.all_reduce_sum(torch.tensor([local], device=self.device)).item())
        if total and self.env.is_main:
            log.warning("%d unreadable train image(s) skipped so far (see the warnings above for their paths)", total)
        return total

    def _evaluate_both(self) -> dict[str, Any]:
        self._sync_ema_buffers()
        kw = dict(device=self.device, autocast=self.autocast, max_batches=self.t.get("eval_max_batches"),
                  channels_last=bool(self.t.channels_last))
        raw = evaluate(self.model, self.val_loader, **kw)
        out: dict[str, Any] = {"top1": raw["top1"], "top5": raw["top5"], "val_loss": raw["loss"], "images": raw["images"],
                               "skipped": raw["skipped"]}
        if self.ema is not None:
            ema = evaluate(self.ema.module, self.val_loader, **kw)
            out.update(ema_top1=ema["top1"], ema_top5=ema["top5"], ema_val_loss=ema["loss"])
        return out

    def _update_best(self, record: dict[str, Any], epoch: int) -> bool:
        """Track the best raw and EMA top-1; True when the max over both improved (→ best.ckpt)."""
        before = self.best_top1()
        for key, prefix in (("raw", ""), ("ema", "ema_")):
            v = record.get(f"{prefix}top1")
            if v is not None and (self.best[key]["top1"] is None or v > self.best[key]["top1"]):
                self.best[key] = {"top1": v, "top5": record.get(f"{prefix}top5"), "epoch": epoch}
        after = self.best_top1()
        return after is not None and (before is None or after > before)

    def best_top1(self) -> float | None:
        vals = [b["top1"] for b in self.best.values() if b["top1"] is not None]
        return max(vals) if vals else None

    # ================================================================================== checkpoints
    def _payload(self, rng_states: list[Any]) -> dict[str, Any]:
        return {
            "version": 1,
            "model": self.model.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "scheduler": self.schedule.state_dict(),
            "epoch": self.epoch,
            "iteration": self.update,
            "batch": self.batch,
            "phase": self.phase_of(self.epoch),
            "phase_name": self.phases[min(self.phase_of(self.epoch), len(self.phases) - 1)].name,
            "rng": {"world_size": self.env.world_size, "states": rng_states},
            "config": plain(self.cfg),
            "best": self.best,
            "last_eval": self.last_eval,
            "teacher": self.teacher_identity(),
            "phase_teachers": self.phase_teachers,
            "wandb_id": self.logger.wandb_id,
            "log_offsets": self.logger.offsets(),
            "nonfinite": {"total": self.nonfinite_total, "consecutive": self.nonfinite_run},
            "epoch_stats": dict(self.epoch_stats),
            "world_size": self.env.world_size,
            "global_batch": self.plan.global_batch,
            "updates_per_epoch": self.upe,
        }

    def save_checkpoint(self, names: list[str] | tuple[str, ...] = (LAST,)) -> None:
        """Collective: gathers every rank's RNG state, rank 0 writes atomically, all ranks learn the outcome."""
        rng_states = D.all_gather_object(capture_rng())
        error = None
        if self.env.is_main:
            payload = self._payload(rng_states)
            try:
                for name in names:
                    atomic_save(payload, self.run_dir / name)
            except CheckpointSaveError as exc:
                error = str(exc)
        error = D.broadcast_object(error)
        if error:
            raise CheckpointSaveError(error)

    def resume(self) -> None:
        """resume=auto: continue from <run dir>/last.ckpt if present; never: refuse an existing run; PATH: that file.
        Under another layout (batch size, GPU count, ...) see engine/layout.py and `resume_layout`."""
        mode = self.cfg.get("resume", "auto")
        layout_mode = check_resume_layout(self.cfg.get("resume_layout", "refuse"))
        last = self.run_dir / LAST
        if self.env.is_main:  # temp files of a save that was killed half-way (the real files are intact)
            for stale in self.run_dir.glob(".*.tmp-*"):
                stale.unlink(missing_ok=True)
        path: Path | None = None
        if mode in (None, False, "never", "false", "no"):
            if last.exists():
                raise ConfigError(f"resume=never but {last} exists; pick another hydra.run.dir or use resume=auto")
        elif mode in ("auto", True):
            path = last if last.exists() else None
        else:
            path = Path(str(mode))
            if not path.is_file():
                raise ConfigError(f"resume: checkpoint not found: {path}")
        if path is None:
            self.logger.truncate({"metrics.jsonl": 0, "metrics.csv": 0})  # leftovers of a run killed before its first ckpt
            self._start_logging(None)
            self.schedule.step_update(self.update, 0)
            return
        ck = load_file(path)
        for key in ("model", "optimizer", "epoch", "iteration", "config"):
            if key not in ck:
                raise CheckpointLoadError(f"{path} is not a training checkpoint of this project (no '{key}')")
        check_same_run(ck["config"], plain(self.cfg), self.run_dir)
        try:
            self.model.load_state_dict(ck["model"])
            if self.ema is not None and ck.get("ema") is not None:
                self.ema.module.load_state_dict(ck["ema"])
            load_optimizer_state(self.optimizer, ck["optimizer"])  # written by any path: fused, captured or not
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointLoadError(f"{path} does not fit this model/optimizer: {_first_line(exc)[:300]}") from exc
        if self.scaler is not None and ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.schedule.load_state_dict(ck.get("scheduler") or {})
        self.epoch, self.update, self.batch = int(ck["epoch"]), int(ck["iteration"]), int(ck.get("batch", 0))
        self.best = ck.get("best") or self.best
        self.last_eval = ck.get("last_eval")
        if len(ck.get("phase_teachers") or ()) == len(self.phases):
            self.phase_teachers = list(ck["phase_teachers"])
        nf = ck.get("nonfinite") or {}
        self.nonfinite_total, self.nonfinite_run = int(nf.get("total", 0)), int(nf.get("consecutive", 0))
        self.epoch_stats = {**self._empty_stats(), **(ck.get("epoch_stats") or {})}
        self._fit_layout(saved_layout(ck, self._layout()), layout_mode)
        self.total_updates = self.schedule.origin + self.total_epochs * self.upe
        self.logger.truncate(ck.get("log_offsets"))
        self._start_logging(ck.get("wandb_id"))
        self.logger.log("event", event="resume", checkpoint=str(path), epoch=self.epoch + 1, iteration=self.update,
                        batch=self.batch, phase=ck.get("phase"))
        log.info("resumed from %s: epoch %d, batch %d, update %d", path, self.epoch + 1, self.batch, self.update)
        self.schedule.step_update(self.update, min(self.phase_of(self.epoch), len(self.phases) - 1))
        # the RNG last: everything above may draw random numbers, the checkpointed stream continues from here
        rng = ck.get("rng") or {}
        states = rng.get("states") or []
        if rng.get("world_size") == self.env.world_size and self.env.rank < len(states):
            restore_rng(states[self.env.rank])
        else:
            D.seed_everything(int(self.cfg.seed) + self.env.rank + 1000 * self.update)

    def _layout(self) -> Layout:
        return Layout(self.env.world_size, int(self.cfg.data.batch_size), self.accum, self.upe)

    def _fit_layout(self, saved: Layout, mode: str) -> None:
        """The checkpoint's position in this run's layout (refused in other units unless resume_layout says); the
        update count carries on, the schedule's clock is the position in this layout (`PhasedSchedule.origin`)."""
        now = self._layout()
        if saved == now:
            return
        self.batch = resume_batch(saved, now, self.batch, self.epoch, self.update, mode)
        self.schedule.origin = self.update - (self.epoch * self.upe + self.batch // self.accum)
        if saved.same_units(now):
            log.info("resuming with %s (saved: %s): the same units", now.describe(), saved.describe())
            return
        log.warning("resume_layout=restart_epoch: epoch %d %s with %s (saved: %s); the update count carries on from %d",
                    self.epoch + 1, "restarts" if self.batch == 0 else "ends", now.describe(), saved.describe(),
                    self.update)
        if self.batch == 0:
            self.epoch_stats = self._empty_stats()

    def _start_logging(self, wandb_id: str | None) -> None:
        with preserved_rng():
            self.logger.start_wandb(plain(self.cfg), wandb_id, str(self.cfg.name))

    # ================================================================================== the end
    def _finish(self) -> dict[str, Any]:
        final = self._final_eval() if self.t.get("final_eval", True) else None
        summary = self._write_summary(final)
        if self.env.is_main:
            try:
                plot_curves(self.run_dir)
            except Exception as exc:  # noqa: BLE001 - a plot never fails a finished run
                log.warning("curves.png not written: %s", exc)
        self.logger.log("event", event="finished", iteration=self.update, epoch=self.epoch)
        return summary

    def _final_eval(self) -> dict[str, Any]:
        """Unfused vs fused (model.fuse()) on the val set for raw and EMA weights, in IEEE fp32; they must agree."""
        kw = dict(device=self.device, autocast=contextlib.nullcontext, max_batches=self.t.get("eval_max_batches"))
        self._sync_ema_buffers()
        images, _ = next(rng_neutral_iter(self.val_loader))
        out: dict[str, Any] = {}
        for key, model in (("raw", self.model), ("ema", self.ema.module if self.ema is not None else None)):
            if model is None:
                continue
            with ieee_fp32():  # not TF32: fused and unfused must agree on every image
                unfused = evaluate(model, self.val_loader, **kw)
                with preserved_rng():
                    fused = fused_copy(model)
                diff = max_abs_diff(model, fused, images)
                with torch.no_grad():
                    scale = model(images).float().abs().max().item()
                fused_res = evaluate(fused, self.val_loader, **kw)
            agree = diff <= fuse_tolerance(scale)
            out[key] = {"top1": unfused["top1"], "top5": unfused["top5"], "fused_top1": fused_res["top1"],
                        "fused_top5": fused_res["top5"], "fused_max_abs_diff": diff, "fused_agree": agree,
                        "images": unfused["images"], "skipped": unfused["skipped"]}
            self.logger.log("event", event="final_eval", epoch=self.epoch, iteration=self.update, weights=key,
                            **{k: v for k, v in out[key].items()})
            if not agree:
                log.error("fused %s model disagrees with the unfused one: max |diff| %.3g", key, diff)
            elif self.env.is_main:
                log.info("final %s: top1 %.2f (fused %.2f, max |diff| %.2e)", key, unfused["top1"], fused_res["top1"], diff)
        return out

    def _write_summary(self, final: dict[str, Any] | None = None) -> dict[str, Any]:
        params = count_params(self.model) if hasattr(self, "model") else None  # the published basis, as info
        last = self.last_eval or {}
        summary = {
            "status": self.status,
            "name": self.cfg.name,
            "model": self.cfg.model.name,
            "img_size": int(self.cfg.model.img_size),
            "params": params,
            "flops": _flops(self.cfg),
            "best_top1_raw": self.best["raw"]["top1"],
            "best_top1_ema": self.best["ema"]["top1"],
            "best": self.best,
            "last_top1": last.get("top1"),
            "last_top1_ema": last.get("ema_top1"),
            "images": last.get("images"),  # val images the last evaluation counted ...
            "skipped": last.get("skipped"),  # ... and the unreadable ones it left out
            "epochs": self.total_epochs if hasattr(self, "total_epochs") else None,
            "epochs_done": self.epoch,
            "iterations": self.update,
            "phases": [{"name": ph.name, "epochs": ph.epochs, "distill": (ph.distill or {}).get("kind"), "teacher": teacher}
                       for ph, teacher in zip(self.phases, self.phase_teachers)],
            "world_size": self.env.world_size,
            "global_batch": self.plan.global_batch,
            "lr": self.plan.lr,
            "train_img_per_s": float(np.median(self.img_per_s_hist[-200:])) if self.img_per_s_hist else None,
            "nonfinite_total": self.nonfinite_total,
            # the teacher of the last distillation phase run so far (each phase's is in `phases`)
            "teacher": next((t for t in reversed(self.phase_teachers) if t is not None), None),
            "dataset": {"name": dataset_name(self.cfg.data), "num_classes": int(self.cfg.data.num_classes),
                        "val_split": self.cfg.data.get("val_split")},
            "model_kwargs": plain(self.cfg.model.get("kwargs")) or {},
            "published": self.ontrack.summary(self.last_eval) if self.ontrack is not None else None,
        }
        if final is not None:
            summary["final"] = final
        self.logger.write_json("run.json", summary)
        return summary

    # ================================================================================== progress
    def _progress_bar(self, p: int):
        if not (self.env.is_main and self.t.get("progress", True)):
            return None
        return progress_bar(self.upe, self.batch // self.accum, f"[{self.phases[p].name}] epoch {self.epoch + 1}/{self.total_epochs}")

    @staticmethod
    def _close_bar(bar) -> None:
        if bar is not None:
            bar.close()


# tqdm's own layout without its `<remaining` time, which covers only the epoch: the postfix's eta covers the run
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {rate_fmt}{postfix}]"


def progress_bar(total: int, initial: int, desc: str, file: Any = None):
    """The epoch's bar (rank 0): in a log file a line every 30 s instead of a redraw every second."""
    import sys

    from tqdm import tqdm

    tty = (file or sys.stderr).isatty()
    return tqdm(total=total, initial=initial, desc=desc, file=file, leave=not tty, dynamic_ncols=True,
                mininterval=1.0 if tty else 30.0, bar_format=BAR_FORMAT)


@dataclass
class _Queued:
    """An update queued on the device, until its record (step.RECORD) is read back."""

    update: int
    record: torch.Tensor
    images: int  # over all ranks
    data_time: float
    injected: bool  # trainer.debug.nan_at made its loss NaN
    lr: float = 0.0  # the lr after it, as the train records have it


def _fmt_secs(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


_FLOPS_CACHE: dict[str, Any] = {}


def _flops(cfg: DictConfig) -> Any:
    """MACs per image (mobilemamba.info.count_macs on a meta-device copy: the README convention for MobileMamba,
    a generic count for other models); None if n/a."""
    kwargs = plain(cfg.model.get("kwargs")) or {}
    key = f"{cfg.model.name}@{cfg.model.img_size}:{json.dumps(kwargs, sort_keys=True)}:{cfg.data.num_classes}"
    if key in _FLOPS_CACHE:
        return _FLOPS_CACHE[key]
    value = None
    try:
        from mobilemamba.info import count_macs

        with preserved_rng(), torch.device("meta"):
            model = build_model(cfg.model, int(cfg.data.num_classes), scan_backend="torch")
        value = count_macs(model, int(cfg.model.img_size))
    except Exception as exc:  # noqa: BLE001 - a summary field never fails a run
        log.debug("flops not counted: %s", exc)
    _FLOPS_CACHE[key] = value
    return value
