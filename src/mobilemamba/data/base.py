"""What every loader returned by ``build_loaders`` looks like to the engine."""
from __future__ import annotations

import contextlib
import os
import signal
from typing import Iterator

import numpy as np
import torch

from .folder import DatasetError

# What a job controller sends to end a run: SLURM and container runtimes (SIGTERM, SIGUSR1, SIGUSR2 under
# submitit), `timeout` (SIGTERM), a terminal's Ctrl-C (SIGINT). Most send it to the whole process group.
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGINT", "SIGUSR1", "SIGUSR2") if hasattr(signal, name))


@contextlib.contextmanager
def stop_signals_blocked() -> Iterator[None]:
    """Start a loader's worker processes inside this block: they inherit the blocked signal mask and never see the
    stop signals, which the trainer alone answers (it finishes the update, writes last.ckpt, then ends them).

    A worker killed by a signal to the process group would end the run with DataLoader's "worker killed" error
    instead. The mask is inherited at fork, so there is no window in which a fresh worker can die of the signal; a
    signal arriving inside the block stays pending and reaches the trainer when the block ends.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity: what a container or `taskset` grants, not the machine's)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


class BatchLoader:
    """Iterates ``(images, targets)`` already on ``device``.

    ``len(loader)`` is the number of batches in a full epoch on this rank. ``set_epoch(e, start_batch=k)``
    makes the *next* iteration the one of epoch ``e`` starting at batch ``k`` (it yields ``len - k`` batches;
    skipped batches are never decoded); later iterations without ``set_epoch`` repeat epoch ``e`` from 0.
    """

    num_classes: int
    skipped: int
    batch_size: int
    num_samples: int  # images this rank reads in a full epoch

    def __len__(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Default for loaders without an order (val, synthetic): nothing to reshuffle."""
        if start_batch:
            raise DatasetError(f"{type(self).__name__} has no order to resume inside; start_batch must be 0")

    def close(self) -> None:
        """Release what outlives an iteration (worker processes); the loader can iterate again after."""


def host_to_device(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """A small host array (sampled augmentation parameters) on ``device`` without blocking the host: through
    pinned memory (PyTorch's caching host allocator keeps it until the copy is done) when ``device`` is a GPU."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def to_device(
    images: torch.Tensor, targets: torch.Tensor, device: torch.device, channels_last: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Move a batch to ``device`` without blocking the host; NHWC memory format when asked."""
    images = images.to(device, non_blocking=True)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images, targets.to(device=device, dtype=torch.int64, non_blocking=True)
