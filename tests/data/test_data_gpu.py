"""GPU paths (skipped without CUDA): DALI nvJPEG decoding into CUDA tensors, the torch loader with pinned memory."""
from __future__ import annotations

import pytest
import torch
from data_helpers import NO_AUG, NUM_CLASSES, PER_CLASS_VAL, loader_kwargs

from mobilemamba.data import build_loaders

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.mark.slow
@pytest.mark.parametrize("aug", [NO_AUG, {}], ids=["no-aug", "recipe"])
def test_dali_gpu_decoding_gives_cuda_batches_and_exact_val(jpeg_folder, aug):
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    cfg = dict(loader="dali", root=str(jpeg_folder), num_classes=NUM_CLASSES, dali_device="gpu", dali_threads=4)
    train, val = build_loaders(cfg, aug, **loader_kwargs(device="cuda", channels_last=True))
    for epoch in (0, 1):
        train.set_epoch(epoch)
        batches = list(train)
        assert len(batches) == len(train)
        for x, y in batches:
            assert x.is_cuda and y.is_cuda and x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
            assert x.is_contiguous(memory_format=torch.channels_last) and int(y.max()) < NUM_CLASSES
            assert torch.isfinite(x).all()
    assert sum(len(y) for _, y in val) == NUM_CLASSES * PER_CLASS_VAL


def test_torch_loader_moves_pinned_batches_to_the_gpu(jpeg_folder):
    cfg = dict(loader="torch", root=str(jpeg_folder), num_classes=NUM_CLASSES, workers=0, pin_memory=True)
    train, _ = build_loaders(cfg, {}, **loader_kwargs(device="cuda"))
    x, y = next(iter(train))
    assert x.is_cuda and y.is_cuda and y.dtype == torch.int64


@pytest.mark.slow
def test_dali_zero_copy_batches_equal_copied_ones_while_all_are_held(jpeg_folder):
    """Zero-copy outputs are views of DALI's buffers: holding every batch of an epoch must not let DALI reuse
    (overwrite) one of them; the val pipeline is deterministic, so both paths give the same pixels."""
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    epochs = {}
    for zero_copy in (True, False):
        cfg = dict(loader="dali", root=str(jpeg_folder), num_classes=NUM_CLASSES, dali_device="gpu", dali_threads=4,
                   dali_zero_copy=zero_copy)
        _, val = build_loaders(cfg, NO_AUG, **loader_kwargs(device="cuda"))
        epochs[zero_copy] = [(x, y) for x, y in val] + [(x, y) for x, y in val]  # two passes, all held
    torch.cuda.synchronize()
    assert len(epochs[True]) == len(epochs[False])
    for (xa, ya), (xb, yb) in zip(epochs[True], epochs[False]):
        assert torch.equal(ya, yb) and torch.equal(xa, xb)


@pytest.mark.parametrize("loader", ["torch", "dali"])
def test_unreadable_val_images_are_left_out_and_counted_on_the_gpu(broken_val_folder, loader):
    """nvJPEG (mixed) decoding with zero-copy outputs and the prefetch thread, or pinned torch batches: the files
    are left out of the val batches and counted, in every pass."""
    if loader == "dali":
        pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    cfg = dict(loader=loader, root=str(broken_val_folder["root"]), num_classes=NUM_CLASSES, dali_device="gpu",
               dali_threads=4, dali_thread=True, workers=2, pin_memory=True)
    _, val = build_loaders(cfg, NO_AUG, **loader_kwargs(device="cuda"))
    for passes in (1, 2):
        batches = list(val)
        assert all(x.is_cuda and torch.isfinite(x).all() for x, _ in batches)
        assert sum(len(y) for _, y in batches) == NUM_CLASSES * PER_CLASS_VAL - 2 and val.skipped == 2 * passes
