"""Batch random erasing (timm's distribution, on the device batch) and the synthetic loader."""
from __future__ import annotations

import pytest
import torch

from mobilemamba.data import DatasetError, build_loaders
from mobilemamba.data.erasing import BatchRandomErasing


def test_erasing_hits_about_p_of_the_images_with_boxes_of_2_to_33_percent():
    x = torch.full((2000, 3, 32, 32), 7.0)
    out = BatchRandomErasing(0.25, "pixel", seed=0)(x)
    changed = (out != 7.0).any(1)  # (B, H, W) erased pixels
    frac_images = changed.flatten(1).any(1).float().mean()
    assert 0.21 < frac_images < 0.29
    areas = changed.flatten(1).float().mean(1)
    areas = areas[areas > 0]
    assert areas.min() >= 0.015 and areas.max() <= 0.34
    noise = out[out != 7.0]
    assert abs(float(noise.mean())) < 0.05 and 0.9 < float(noise.std()) < 1.1  # per-pixel N(0, 1)
    assert torch.equal(x, torch.full_like(x, 7.0))  # the input is not modified


def test_erasing_modes_and_probability_zero():
    x = torch.ones(64, 3, 16, 16)
    assert BatchRandomErasing(0.0)(x) is x
    const = BatchRandomErasing(1.0, "const", seed=1)(x)
    assert set(const.unique().tolist()) == {0.0, 1.0}
    rand = BatchRandomErasing(1.0, "rand", seed=1)(x)
    per_image_channel = [rand[i, c][rand[i, c] != 1].unique().numel() for i in range(8) for c in range(3)]
    assert max(per_image_channel) <= 1  # one colour per channel
    with pytest.raises(ValueError, match="mode"):
        BatchRandomErasing(0.5, "blur")


def test_synthetic_loader_gives_fixed_device_batches_with_labels_in_range():
    cfg = dict(loader="synthetic", num_classes=10, synthetic_size=50, synthetic_val_size=13)
    kw = dict(img_size=16, mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=0.875, interpolation="bicubic",
              batch_size=8, eval_batch_size=5, world_size=2, device="cpu", seed=0)  # fmt: skip
    t0, v0 = build_loaders(cfg, {}, rank=0, **kw)
    t1, v1 = build_loaders(cfg, {}, rank=1, **kw)
    assert len(t0) == len(t1) == 3  # 25 images per rank → 3 full batches on both ranks
    x, y = next(iter(t0))
    assert x.shape == (8, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert 0 <= int(y.min()) and int(y.max()) < 10
    assert sum(len(y) for _, y in v0) + sum(len(y) for _, y in v1) == 13
    t0.set_epoch(1, start_batch=2)
    assert len(list(t0)) == 1
    with pytest.raises(DatasetError, match="num_classes"):
        build_loaders({"loader": "synthetic"}, {}, rank=0, **kw)
