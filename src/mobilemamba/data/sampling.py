"""Which sample indices each rank reads: one definition shared by the torch and DALI loaders.

Train: ``DistributedSampler`` semantics (a permutation seeded by ``seed + epoch``, truncated to a multiple of
``world_size``, rank ``r`` taking every ``world_size``-th index from ``r``), then cut into full batches
(drop_last). Val: rank ``r`` takes ``r::world_size``, no padding, so every image is evaluated exactly once.
"""
from __future__ import annotations

import torch

from .folder import DatasetError


def check_rank(rank: int, world_size: int) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise DatasetError(f"rank {rank} is not in [0, world_size={world_size})")


def train_batches_per_epoch(num_samples: int, batch_size: int, world_size: int) -> int:
    """Full batches per rank per epoch (drop_last)."""
    if batch_size < 1:
        raise DatasetError(f"batch_size must be >= 1, got {batch_size}")
    return (num_samples // world_size) // batch_size


def too_small_message(num_samples: int, batch_size: int, world_size: int) -> str:
    return (f"train split has {num_samples} images: fewer than one batch of {batch_size} per rank "
            f"({world_size} ranks)")  # fmt: skip


def train_rank_indices(num_samples: int, seed: int, epoch: int, rank: int, world_size: int) -> list[int]:
    """This rank's shuffled indices for ``epoch`` (same length on every rank)."""
    check_rank(rank, world_size)
    g = torch.Generator()
    g.manual_seed(int(seed) + int(epoch))
    perm = torch.randperm(num_samples, generator=g).tolist()
    total = (num_samples // world_size) * world_size
    return perm[rank:total:world_size]


def train_batches(
    num_samples: int, batch_size: int, seed: int, epoch: int, rank: int, world_size: int, start_batch: int = 0
) -> list[list[int]]:
    """The batches (lists of sample indices) this rank reads in ``epoch``, from ``start_batch`` on."""
    n_batches = train_batches_per_epoch(num_samples, batch_size, world_size)
    if not 0 <= start_batch <= n_batches:
        raise DatasetError(f"start_batch {start_batch} is not in [0, {n_batches}] (batches per epoch)")
    idx = train_rank_indices(num_samples, seed, epoch, rank, world_size)
    return [idx[b * batch_size : (b + 1) * batch_size] for b in range(start_batch, n_batches)]


def val_rank_indices(num_samples: int, rank: int, world_size: int) -> list[int]:
    """Exact val sharding: ranks together cover ``range(num_samples)`` once, sizes differ by at most one."""
    check_rank(rank, world_size)
    return list(range(rank, num_samples, world_size))


def val_batches(num_samples: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    if batch_size < 1:
        raise DatasetError(f"eval_batch_size must be >= 1, got {batch_size}")
    idx = val_rank_indices(num_samples, rank, world_size)
    return [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
