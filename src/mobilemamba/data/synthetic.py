"""``data.loader=synthetic``: random normalized tensors already on the device (benchmarks the model alone).

One batch is generated per loader (N(0, 1), i.e. already "normalized") and yielded every step, so the loader
costs nothing; targets are random in ``[0, num_classes)``. Sizes are whole-job image counts split over ranks.
"""
from __future__ import annotations

from typing import Iterator

import torch

from .base import BatchLoader
from .folder import DatasetError


class SyntheticLoader(BatchLoader):
    def __init__(
        self,
        num_images: int,
        batch_size: int,
        *,
        num_classes: int,
        img_size: int,
        device: torch.device,
        channels_last: bool,
        seed: int,
        drop_last: bool,
        rank: int = 0,
        world_size: int = 1,
    ):
        if num_classes is None or int(num_classes) < 1:
            raise DatasetError(f"data.num_classes must be set (>= 1) for data.loader=synthetic, got {num_classes}")
        # train (drop_last): the same batch count on every rank, or DDP would hang; val: exact sharding
        per_rank = int(num_images) // world_size if drop_last else len(range(rank, int(num_images), world_size))
        self.num_classes, self.batch_size, self.skipped = int(num_classes), batch_size, 0
        if drop_last:
            self._sizes = [batch_size] * (per_rank // batch_size)
        else:
            self._sizes = [min(batch_size, per_rank - i) for i in range(0, per_rank, batch_size)]
        if not self._sizes:
            raise DatasetError(
                f"synthetic dataset of {num_images} images is smaller than one batch of {batch_size} per rank"
            )
        self.num_samples = sum(self._sizes)
        g = torch.Generator(device="cpu")
        g.manual_seed(int(seed) * 1000 + rank)
        images = torch.randn(batch_size, 3, img_size, img_size, generator=g)
        targets = torch.randint(0, self.num_classes, (batch_size,), generator=g)
        images = images.to(device)
        if channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        self._images, self._targets = images, targets.to(device)
        self._start = 0

    def __len__(self) -> int:
        return len(self._sizes)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= len(self._sizes):
            raise DatasetError(f"start_batch {start_batch} is not in [0, {len(self._sizes)}] (batches per epoch)")
        self._start = start_batch

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        start, self._start = self._start, 0
        for n in self._sizes[start:]:
            yield self._images[:n], self._targets[:n]
