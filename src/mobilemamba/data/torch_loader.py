"""``data.loader=torch``: the reference's pipeline (timm ``create_transform`` + PIL) on a torch DataLoader.

Corrupt or unreadable files never end an epoch; the dataset logs the file and ``loader.skipped`` counts it. Train:
the next readable sample takes its place (the batch keeps its size). Val: it is left out (the batch is shorter), so
an accuracy is never computed on a substituted image.
"""
from __future__ import annotations

import logging
import math
from typing import Callable, Iterator, Optional, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler, default_collate

from .base import BatchLoader, stop_signals_blocked, to_device, usable_cpus
from .config import AugParams
from .folder import DatasetError, FolderSplit
from .sampling import too_small_message, train_batches, train_batches_per_epoch, val_batches

log = logging.getLogger(__name__)

MAX_CONSECUTIVE_BAD = 32


def _size_tuple(img_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(img_size, int):
        return (img_size, img_size)
    h, w = (int(s) for s in img_size[-2:])
    return (h, w)


def eval_resize_size(img_size: int, crop_pct: float) -> int:
    """Shorter side before the centre crop: ``int(size / crop_pct)`` (224 → 256, 192 → 219, 384 → 438)."""
    return int(math.floor(img_size / crop_pct))


def build_train_transform(
    img_size: int | Sequence[int], aug: AugParams, mean: Sequence[float], std: Sequence[float]
) -> Callable:
    """timm's train transform: RandomResizedCrop, flip, RandAugment, normalize, RandomErasing (per image)."""
    from timm.data import create_transform

    return create_transform(
        input_size=_size_tuple(img_size),
        is_training=True,
        scale=tuple(aug.scale),
        ratio=tuple(aug.ratio),
        hflip=aug.hflip,
        color_jitter=aug.color_jitter,
        auto_augment=aug.auto_augment,
        interpolation=aug.train_interpolation,
        mean=tuple(mean),
        std=tuple(std),
        re_prob=aug.reprob,
        re_mode=aug.remode,
        re_count=aug.recount,
    )


def build_eval_transform(
    img_size: int | Sequence[int], mean: Sequence[float], std: Sequence[float], crop_pct: float, interpolation: str
) -> Callable:
    """Resize the shorter side to ``int(size / crop_pct)``, centre crop ``size``, normalize."""
    from timm.data import create_transform

    return create_transform(
        input_size=_size_tuple(img_size),
        is_training=False,
        interpolation=interpolation,
        mean=tuple(mean),
        std=tuple(std),
        crop_pct=crop_pct,
    )


def load_rgb(path: str) -> Image.Image:
    """Decode fully (``convert`` forces the decode, so truncated files fail here, not in the transform)."""
    with open(path, "rb") as f:
        img = Image.open(f)
        return img.convert("RGB")


class SafeImageDataset(Dataset):
    """``(image, label, n_skipped)``. An unreadable file is replaced by the next readable sample, or with
    ``replace=False`` (evaluation) the item is None: :func:`collate_readable` leaves it out of its batch."""

    def __init__(self, samples: Sequence[tuple[str, int]], transform: Optional[Callable], replace: bool = True):
        if len(samples) == 0:
            raise DatasetError("dataset has no samples")
        self.samples = list(samples)
        self.transform = transform
        self.replace = replace

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        n = len(self.samples)
        for attempt in range(min(MAX_CONSECUTIVE_BAD, n) if self.replace else 1):
            path, label = self.samples[(index + attempt) % n]
            try:
                img = load_rgb(path)
            except Exception as e:  # PIL raises OSError, ValueError, SyntaxError, DecompressionBombError...
                log.warning("skipping unreadable image %s (%s: %s)", path, type(e).__name__, e,
                            extra={"rank_specific": True})  # engine.distributed.RANK_SPECIFIC: each rank's shard
                continue
            if self.transform is not None:
                img = self.transform(img)
            return img, label, attempt
        if not self.replace:
            return None
        raise DatasetError(f"{MAX_CONSECUTIVE_BAD} consecutive unreadable images starting at {self.samples[index][0]}")


def collate_readable(items: list) -> tuple[Optional[torch.Tensor], Optional[torch.Tensor], int]:
    """``(images, labels, unreadable files met)`` of a batch; the None items (left-out files) are not in it, and a
    batch of nothing but left-out files is ``(None, None, n)``."""
    readable = [item for item in items if item is not None]
    skipped = sum(item[2] for item in readable) + len(items) - len(readable)
    if not readable:
        return None, None, skipped
    images, labels, _ = default_collate(readable)
    return images, labels, skipped


class EpochBatchSampler(Sampler):
    """Deterministic per-(seed, epoch) shuffled, rank-sharded full batches; ``start_batch`` skips batches."""

    def __init__(self, num_samples: int, batch_size: int, seed: int, rank: int, world_size: int):
        self.num_samples, self.batch_size = num_samples, batch_size
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.epoch, self.start_batch = 0, 0
        self.num_batches = train_batches_per_epoch(num_samples, batch_size, world_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if not 0 <= start_batch <= self.num_batches:
            raise DatasetError(f"start_batch {start_batch} is not in [0, {self.num_batches}] (batches per epoch)")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def batches(self) -> list[list[int]]:
        """The batches the next iteration yields."""
        return train_batches(
            self.num_samples, self.batch_size, self.seed, self.epoch, self.rank, self.world_size, self.start_batch
        )

    def __iter__(self) -> Iterator[list[int]]:
        if self.num_batches == 0:  # raised here, not at build: eval-only jobs build a train loader they never use
            raise DatasetError(too_small_message(self.num_samples, self.batch_size, self.world_size))
        batches = self.batches()
        self.start_batch = 0  # resume applies to one iteration only
        return iter(batches)

    def __len__(self) -> int:
        return self.num_batches - self.start_batch


class FixedBatchSampler(Sampler):
    def __init__(self, batches: list[list[int]]):
        self._batches = batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._batches)

    def __len__(self) -> int:
        return len(self._batches)


class TorchLoader(BatchLoader):
    """A DataLoader over a :class:`SafeImageDataset`, yielding device batches and counting skipped files."""

    def __init__(
        self,
        dataset: SafeImageDataset,
        batch_sampler: Sampler,
        *,
        num_classes: int,
        batch_size: int,
        num_samples: int,
        device: torch.device,
        channels_last: bool,
        workers: int,
        pin_memory: bool,
        seed: int,
    ):
        self.dataset, self.batch_sampler = dataset, batch_sampler
        self.num_classes, self.batch_size, self.skipped = num_classes, batch_size, 0
        self.device, self.channels_last = device, channels_last
        self._full_len = len(batch_sampler)
        self.num_samples = num_samples
        g = torch.Generator()
        g.manual_seed(int(seed))
        self._loader = DataLoader(
            dataset,
            batch_sampler=batch_sampler,
            num_workers=workers,
            pin_memory=pin_memory and device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            generator=g,
            collate_fn=collate_readable,
        )

    def __len__(self) -> int:
        return self._full_len

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        if isinstance(self.batch_sampler, EpochBatchSampler):
            self.batch_sampler.set_epoch(epoch, start_batch)
        else:
            super().set_epoch(epoch, start_batch)

    def close(self) -> None:
        """Stop the worker processes now. They persist across epochs (the DataLoader keeps its iterator), and left to
        the interpreter's exit, multiprocessing would end them with SIGTERM, which they block (stop_signals_blocked),
        and then wait for them forever."""
        workers = getattr(self._loader, "_iterator", None)  # DataLoader's persistent iterator (persistent_workers)
        if workers is not None:
            workers._shutdown_workers()
            self._loader._iterator = None

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        with stop_signals_blocked():  # the worker processes, started (or woken) here, leave them to the trainer
            batches = iter(self._loader)
        for images, targets, skipped in batches:
            self.skipped += skipped
            if images is not None:
                yield to_device(images, targets, self.device, self.channels_last)


def build_torch_loaders(
    train: FolderSplit,
    val: FolderSplit,
    aug: AugParams,
    *,
    img_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    crop_pct: float,
    interpolation: str,
    batch_size: int,
    eval_batch_size: int,
    rank: int,
    world_size: int,
    device: torch.device,
    seed: int,
    channels_last: bool,
    workers: int,
    pin_memory: bool,
) -> tuple[TorchLoader, TorchLoader]:
    cpus = usable_cpus()
    if workers > cpus:  # more would only compete for the same cores (PyTorch warns about it)
        log.info("data.workers=%d, but this process may run on %d CPUs: %d loader workers", workers, cpus, cpus)
        workers = cpus
    train_ds = SafeImageDataset(train.samples, build_train_transform(img_size, aug, mean, std))
    val_ds = SafeImageDataset(val.samples, build_eval_transform(img_size, mean, std, crop_pct, interpolation),
                              replace=False)
    common = dict(num_classes=train.num_classes, device=device, channels_last=channels_last, pin_memory=pin_memory)
    train_sampler = EpochBatchSampler(len(train_ds), batch_size, seed, rank, world_size)
    val_sampler = FixedBatchSampler(val_batches(len(val_ds), eval_batch_size, rank, world_size))
    train_loader = TorchLoader(
        train_ds,
        train_sampler,
        batch_size=batch_size,
        num_samples=len(train_sampler) * batch_size,
        workers=workers,
        seed=seed * 1000 + rank,
        **common,
    )
    val_loader = TorchLoader(
        val_ds,
        val_sampler,
        batch_size=eval_batch_size,
        num_samples=sum(len(b) for b in val_sampler),
        workers=min(workers, 4),
        seed=seed,
        **common,
    )
    return train_loader, val_loader
