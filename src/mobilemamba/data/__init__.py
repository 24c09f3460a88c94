"""The data layer: folder datasets, the torch / DALI / synthetic loaders, dataset preparation and checks.

``build_loaders`` is the one entry point the engine uses (contract in ``docs/interfaces.md``).
"""
from __future__ import annotations

from typing import Any, Sequence

import torch

from .base import BatchLoader
from .config import AugParams, DataParams
from .folder import DatasetError, FolderSplit, load_folder_dataset

__all__ = ["build_loaders", "DatasetError", "BatchLoader", "load_folder_dataset", "FolderSplit"]


def build_loaders(
    data_cfg: Any,
    aug_cfg: Any,
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
    device: torch.device | str,
    seed: int,
    channels_last: bool = False,
) -> tuple[BatchLoader, BatchLoader]:
    """``(train_loader, val_loader)`` for ``data_cfg.loader`` in ``torch`` (alias ``folder``), ``dali``,
    ``synthetic`` or ``auto`` (``dali`` on a CUDA device when DALI is installed, else ``torch``); both iterate ``(images float32 (B,3,H,W) normalized, targets int64)`` on ``device``.

    ``data_cfg`` keys: loader, root, train_split, val_split (``test`` is used when ``val`` is absent),
    num_classes (checked against the folder), workers, pin_memory, exclude_file (default
    ``ROOT/.mobilemamba_exclude.txt`` if present), max_per_class, synthetic_size / train_size,
    synthetic_val_size / val_size, dali_device (auto|gpu|cpu), dali_threads, dali_prefetch (alias prefetch),
    dali_hw_decoder_load, dali_preallocate_width_hint, dali_preallocate_height_hint, dali_roi_decode,
    dali_zero_copy, dali_randaug (torch|dali), dali_thread (auto|true|false), randaug_kernels
    (auto|triton|torch) (see ``conf/data/imagenet.yaml``).
    ``aug_cfg`` keys: auto_augment, reprob, remode, recount, train_interpolation, hflip, scale, ratio
    (missing keys take the published recipe's values).
    """
    data = DataParams.from_cfg(data_cfg)
    aug = AugParams.from_cfg(aug_cfg)
    device = torch.device(device)
    if data.loader == "synthetic":
        return _synthetic(data, img_size, batch_size, eval_batch_size, rank, world_size, device, seed, channels_last)
    train, val = load_folder_dataset(
        data.root,
        data.train_split,
        data.val_split,
        num_classes=data.num_classes,
        exclude_file=data.exclude_file,
        max_per_class=data.max_per_class,
    )
    common = dict(
        img_size=img_size,
        mean=tuple(mean),
        std=tuple(std),
        crop_pct=crop_pct,
        interpolation=interpolation,
        batch_size=batch_size,
        eval_batch_size=eval_batch_size,
        rank=rank,
        world_size=world_size,
        device=device,
        seed=seed,
        channels_last=channels_last,
    )
    if data.loader == "dali" or (data.loader == "auto" and device.type == "cuda" and _dali_installed()):
        from .dali_loader import build_dali_loaders

        return build_dali_loaders(train, val, aug, **data.dali_options(), **common)
    from .torch_loader import build_torch_loaders

    return build_torch_loaders(train, val, aug, workers=data.workers, pin_memory=data.pin_memory, **common)


def _dali_installed() -> bool:
    from .dali_loader import dali_available

    return dali_available()


def _synthetic(data: DataParams, img_size, batch_size, eval_batch_size, rank, world_size, device, seed, channels_last):
    from .synthetic import SyntheticLoader

    if data.num_classes is None:
        raise DatasetError("data.num_classes must be set for data.loader=synthetic")
    val_size = data.synthetic_val_size or max(eval_batch_size * world_size, data.synthetic_size // 10)
    common = dict(
        num_classes=data.num_classes, img_size=img_size, device=device, channels_last=channels_last,
        rank=rank, world_size=world_size,
    )
    train = SyntheticLoader(data.synthetic_size, batch_size, seed=seed, drop_last=True, **common)
    val = SyntheticLoader(val_size, eval_batch_size, seed=seed + 1, drop_last=False, **common)
    return train, val
