"""Optimizer and per-update lr schedule (timm), with the reference's weight-decay rule and phase segments."""
from __future__ import annotations

from typing import Any

import torch
from omegaconf import DictConfig
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn

from .config import ConfigError, LrPlan, Phase, schedule_segments


def reference_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """The reference's rule: ndim <= 1 or a name ending '.bias' → no decay; all else decayed; frozen skipped.

    `model.no_weight_decay()` is deliberately NOT consulted: the reference's list matches nothing, so
    A_logs, dt_projs_bias, x_proj_weight and the scale modules are decayed.
    """
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 or name.endswith(".bias") else decay).append(p)
    groups = []
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    return groups


def build_optimizer(model: nn.Module, optim_cfg: DictConfig, lr: float) -> torch.optim.Optimizer:
    if str(optim_cfg.name).lower() != "adamw":
        raise ConfigError(f"optim.name: only adamw is configured in this project, got {optim_cfg.name!r}")
    wd = float(optim_cfg.weight_decay)
    fused = optim_cfg.get("fused", "auto")
    if fused not in ("auto", True, False):
        raise ConfigError(f"optim.fused must be auto, true or false, got {fused!r}")
    # the fused kernel (CUDA and CPU): one kernel per step instead of a chain of foreach ops (same update), and it
    # skips a non-finite update on the device (found_inf), which is what keeps the host out of the update loop
    extra = {"fused": True} if fused in ("auto", True) else {}
    return create_optimizer_v2(
        model,
        opt="adamw",
        lr=lr,
        weight_decay=wd,
        betas=tuple(float(b) for b in optim_cfg.betas),
        eps=float(optim_cfg.eps),
        param_group_fn=lambda m: reference_param_groups(m, wd),
        **extra,
    )


IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """`optimizer.load_state_dict(state)` keeping this optimizer's implementation (fused, foreach, capturable):
    torch's loader takes every group setting from the file, so a checkpoint of a fused run would otherwise turn
    a foreach optimizer fused (and back). Step counters move to where this implementation keeps them."""
    own = [{k: g[k] for k in IMPLEMENTATION_KEYS if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, keys in zip(optimizer.param_groups, own):
        group.update(keys)
        on_device = bool(group.get("fused") or group.get("capturable"))
        for p in group["params"]:
            st = optimizer.state.get(p)
            if st and isinstance(st.get("step"), torch.Tensor):
                st["step"] = st["step"].to(device=p.device if on_device else "cpu", dtype=torch.float32)


def build_cosine(
    optimizer: torch.optim.Optimizer, plan: LrPlan, *, total_updates: int, warmup_updates: int, cycle_limit: int = 1,
    warmup_prefix: bool = False,
) -> CosineLRScheduler:
    """timm cosine stepped per update (`step_update(n)`), t_initial = all updates of the segment."""
    return CosineLRScheduler(
        optimizer,
        t_initial=max(1, total_updates),
        lr_min=plan.min_lr,
        warmup_t=warmup_updates,
        warmup_lr_init=plan.warmup_lr,
        warmup_prefix=warmup_prefix,
        cycle_limit=cycle_limit,
        t_in_epochs=False,
    )


class PhasedSchedule:
    """One cosine per schedule segment: a segment starts at phase 0 and at every phase with schedule=restart,
    and spans the phases until the next restart. Stepped with the run's global update count.

    The lr is a pure function of (config, update count - `origin`); `state_dict` records both for the checkpoint.
    `origin` is 0 unless an epoch was restarted under another layout (engine/layout.py): then the run's update count
    carries on while the schedule's clock takes the epoch's start in the new layout.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, sched_cfg: DictConfig, plan: LrPlan, phases: list[Phase],
        updates_per_epoch: int,
    ):
        if str(sched_cfg.name).lower() != "cosine":
            raise ConfigError(f"sched.name: only cosine is configured in this project, got {sched_cfg.name!r}")
        self.optimizer = optimizer
        self.cfg = sched_cfg
        self.plan = plan
        self.phases = phases
        self.upe = updates_per_epoch
        self.phase_start = [0]
        for ph in phases:
            self.phase_start.append(self.phase_start[-1] + ph.epochs * updates_per_epoch)
        self.segments = self._segments()
        self._active: tuple[int, CosineLRScheduler] | None = None
        self.update = 0
        self.origin = 0

    def _segments(self) -> list[tuple[int, int, int, int]]:
        """(first phase, start update, updates, warmup updates) per segment."""
        segs = []
        for seg in schedule_segments(self.phases, self.cfg.warmup_epochs):
            begin, end = self.phase_start[seg.first], self.phase_start[seg.last + 1]
            segs.append((seg.first, begin, end - begin, int(round(seg.warmup_epochs * self.upe))))
        return segs

    def segment_of(self, phase_idx: int) -> int:
        return max(j for j, seg in enumerate(self.segments) if seg[0] <= phase_idx)

    def scheduler_for(self, phase_idx: int) -> CosineLRScheduler:
        j = self.segment_of(phase_idx)
        if self._active is None or self._active[0] != j:
            _, _, n, warm = self.segments[j]
            self._active = (
                j,
                build_cosine(
                    self.optimizer, self.plan, total_updates=n, warmup_updates=warm,
                    cycle_limit=int(self.cfg.get("cycle_limit", 1)), warmup_prefix=bool(self.cfg.get("warmup_prefix", False)),
                ),
            )
        return self._active[1]

    def step_update(self, update: int, phase_idx: int) -> None:
        """Set every group's lr for global update `update` inside phase `phase_idx` (lr_scale applied by timm)."""
        for group in self.optimizer.param_groups:
            group["lr_scale"] = self.phases[phase_idx].lr_scale
        sched = self.scheduler_for(phase_idx)
        sched.step_update(update - self.origin - self.segments[self.segment_of(phase_idx)][1])
        self.update = update

    def state_dict(self) -> dict[str, Any]:
        sd: dict[str, Any] = {"update": self.update, "origin": self.origin}
        if self._active is not None:
            sd["segment"] = self._active[0]
            sd["timm"] = {k: v for k, v in self._active[1].state_dict().items() if isinstance(v, (int, float, str, bool, list, tuple, type(None)))}
        return sd

    def load_state_dict(self, sd: dict[str, Any]) -> None:
        self.update = int(sd.get("update", 0))
        self.origin = int(sd.get("origin", 0))
