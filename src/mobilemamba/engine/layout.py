"""Resuming under another layout: the GPU count (ranks), data.batch_size, trainer.accum_steps or the epoch length
differ from those last.ckpt was written with.

A checkpoint's position is counted in updates (the lr schedule's clock) and in batches of its epoch. When an update
still takes as many images and an epoch as many updates, these units hold and the run carries on exactly where it
stopped: an epoch's samples are one shuffled order cut into global batches (data/sampling.py), so update u reads
the same images whatever the ranks and the batch split. In other units the count cannot simply carry on, so the
resume is refused unless `resume_layout=restart_epoch`: the interrupted epoch restarts under the new layout, the
update count carries on from the checkpoint (it never goes back) and the lr schedule is shifted so that the epoch
starts where it starts in a run of the new layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import ConfigError

RESUME_LAYOUTS = ("refuse", "restart_epoch")


@dataclass(frozen=True)
class Layout:
    world_size: int
    batch_size: int  # per rank
    accum_steps: int
    updates_per_epoch: int

    @property
    def images_per_update(self) -> int:
        return self.world_size * self.batch_size * self.accum_steps

    def same_units(self, other: "Layout") -> bool:
        return (self.images_per_update, self.updates_per_epoch) == (other.images_per_update, other.updates_per_epoch)

    def describe(self) -> str:
        return (f"{self.images_per_update} images per update ({self.world_size} rank(s) x data.batch_size="
                f"{self.batch_size} x trainer.accum_steps={self.accum_steps}) and {self.updates_per_epoch} updates per epoch")


def saved_layout(ck: dict[str, Any], current: Layout) -> Layout:
    """The layout `ck` was written with (a field it lacks is taken as unchanged)."""
    cfg = ck.get("config") or {}
    return Layout(
        world_size=int(ck.get("world_size") or current.world_size),
        batch_size=int((cfg.get("data") or {}).get("batch_size") or current.batch_size),
        accum_steps=int((cfg.get("trainer") or {}).get("accum_steps") or current.accum_steps),
        updates_per_epoch=int(ck.get("updates_per_epoch") or current.updates_per_epoch),
    )


def check_resume_layout(mode: Any) -> str:
    if mode not in RESUME_LAYOUTS:
        raise ConfigError(f"resume_layout must be one of {', '.join(RESUME_LAYOUTS)}, got {mode!r}")
    return str(mode)


def resume_batch(saved: Layout, current: Layout, batch: int, epoch: int, update: int, mode: str) -> int:
    """The batch of epoch `epoch` to resume at under `current` (batches per rank, as checkpoints count them): after
    the same updates when the units hold; with resume_layout=restart_epoch the epoch's first, or its end when all its
    updates were done (a stop before its evaluation); a one-line ConfigError otherwise."""
    updates_done = batch // saved.accum_steps
    if saved.same_units(current):
        return updates_done * current.accum_steps
    if mode == "restart_epoch":
        return current.updates_per_epoch * current.accum_steps if updates_done == saved.updates_per_epoch else 0
    raise ConfigError(
        f"last.ckpt (update {update}, epoch {epoch + 1}) was written with {saved.describe()}; this run has "
        f"{current.describe()}, so its update count and lr schedule would be in other units. Resume with the saved "
        f"layout, or add resume_layout=restart_epoch to restart epoch {epoch + 1} in this one (the update count "
        f"carries on from {update})"
    )
