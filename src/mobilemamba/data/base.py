"""What every loader returned by ``build_loaders`` looks like to the engine."""
from __future__ import annotations

import os
from typing import Iterator

import numpy as np
import torch

from .folder import DatasetError


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
