"""Constants and helpers shared by the data-layer tests (fixtures live in conftest.py)."""
from __future__ import annotations

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NUM_CLASSES, PER_CLASS_TRAIN, PER_CLASS_VAL = 3, 10, 5  # 30 train, 15 val images
NO_AUG = dict(auto_augment=None, reprob=0.0)  # fast DALI pipelines (no RandAugment graph)


def loader_kwargs(**over) -> dict:
    """Keyword arguments of build_loaders for 32px images, batch 4 (override any)."""
    kw = dict(img_size=32, mean=MEAN, std=STD, crop_pct=0.875, interpolation="bicubic", batch_size=4,
              eval_batch_size=4, rank=0, world_size=1, device="cpu", seed=0)  # fmt: skip
    kw.update(over)
    return kw
