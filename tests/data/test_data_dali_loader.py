"""data.loader=dali on the CPU (device_id=None): batches, exact sharding and epochs, resume, undecodable files.

Most tests switch RandAugment off (defining its DALI graph takes seconds); one test runs the full recipe.
"""
from __future__ import annotations

import pytest
import torch
from data_helpers import NO_AUG, NUM_CLASSES, PER_CLASS_TRAIN, PER_CLASS_VAL, loader_kwargs

from mobilemamba.data import DatasetError, build_loaders
from mobilemamba.data.check import check_dataset, write_exclude_file

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")


def dali_cfg(root, **over) -> dict:
    return {**dict(loader="dali", root=str(root), num_classes=NUM_CLASSES, dali_device="cpu", dali_threads=2), **over}


def check_batch(x, y, batch, size=32):
    assert x.shape == (batch, 3, size, size) and x.dtype == torch.float32
    assert y.shape == (batch,) and y.dtype == torch.int64
    assert 0 <= int(y.min()) and int(y.max()) < NUM_CLASSES
    assert -2.2 <= float(x.min()) and float(x.max()) <= 2.7  # ImageNet-normalized [0, 255] pixels


def test_val_pipeline_gives_normalized_centre_crops_and_a_short_last_batch(jpeg_folder):
    _, val = build_loaders(dali_cfg(jpeg_folder), NO_AUG, **loader_kwargs())
    batches = list(val)
    assert [len(y) for _, y in batches] == [4, 4, 4, 3] and len(val) == 4
    for x, y in batches:
        check_batch(x, y, len(y))


def test_the_prefetch_thread_delivers_the_same_batches(jpeg_folder):
    _, plain = build_loaders(dali_cfg(jpeg_folder, dali_thread=False), NO_AUG, **loader_kwargs())
    _, threaded = build_loaders(dali_cfg(jpeg_folder, dali_thread="true"), NO_AUG, **loader_kwargs())
    assert threaded.thread and not plain.thread
    pairs = list(zip(plain, threaded))
    assert len(pairs) == len(plain) and all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in pairs)
    with pytest.raises(DatasetError, match="data.dali_thread must be true or false .or auto., got 'sometimes'"):
        build_loaders(dali_cfg(jpeg_folder, dali_thread="sometimes"), NO_AUG, **loader_kwargs())


def test_dali_val_matches_the_torch_val_pipeline(jpeg_folder):
    """Same files, same labels, same order; pixels agree up to resize/JPEG-decoder differences."""
    _, dv = build_loaders(dali_cfg(jpeg_folder), NO_AUG, **loader_kwargs())
    _, tv = build_loaders({**dali_cfg(jpeg_folder), "loader": "torch", "workers": 0}, NO_AUG, **loader_kwargs())
    for (xd, yd), (xt, yt) in zip(dv, tv):
        assert torch.equal(yd, yt)
        assert (xd - xt).abs().mean() < 0.1


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_val_sharding_evaluates_every_image_exactly_once(jpeg_folder, world_size):
    total, per_class = 0, torch.zeros(NUM_CLASSES, dtype=torch.int64)
    for rank in range(world_size):
        _, val = build_loaders(dali_cfg(jpeg_folder), NO_AUG, **loader_kwargs(rank=rank, world_size=world_size))
        for _ in range(2):  # a second evaluation sees the same images again (no reader wrap-around)
            for _, y in val:
                total += len(y)
                per_class += torch.bincount(y, minlength=NUM_CLASSES)
    assert total == 2 * NUM_CLASSES * PER_CLASS_VAL
    assert per_class.tolist() == [2 * PER_CLASS_VAL] * NUM_CLASSES


@pytest.mark.parametrize("thread", [False, True], ids=["main-thread", "prefetch-thread"])
def test_train_epochs_are_exact_and_follow_the_torch_loader_order(jpeg_folder, thread):
    train, _ = build_loaders(dali_cfg(jpeg_folder, dali_thread=thread), NO_AUG, **loader_kwargs())
    torch_train, _ = build_loaders({**dali_cfg(jpeg_folder), "loader": "torch", "workers": 0}, NO_AUG, **loader_kwargs())
    assert len(train) == NUM_CLASSES * PER_CLASS_TRAIN // 4
    for epoch in (0, 1):
        train.set_epoch(epoch), torch_train.set_epoch(epoch)
        got = list(train)
        assert len(got) == len(train)
        for (x, y), (_, yt) in zip(got, torch_train):
            check_batch(x, y, 4)
            assert torch.equal(y, yt)


@pytest.mark.parametrize("thread", [False, True], ids=["main-thread", "prefetch-thread"])
def test_resume_and_early_stop_keep_epochs_exact(jpeg_folder, thread):
    train, _ = build_loaders(dali_cfg(jpeg_folder, dali_thread=thread), NO_AUG, **loader_kwargs())
    train.set_epoch(2)
    full = [y for _, y in train]
    train.set_epoch(2, start_batch=5)
    resumed = [y for _, y in train]
    assert len(resumed) == len(full) - 5 and all(torch.equal(a, b) for a, b in zip(resumed, full[5:]))
    train.set_epoch(2)
    for i, _ in enumerate(train):  # stop early: the in-flight batches must not leak into the next epoch
        if i == 1:
            break
    train.set_epoch(2)
    again = [y for _, y in train]
    assert all(torch.equal(a, b) for a, b in zip(again, full)) and len(again) == len(full)


@pytest.mark.parametrize("thread", [False, True], ids=["main-thread", "prefetch-thread"])
def test_undecodable_file_raises_an_error_naming_it(broken_folder, thread):
    train, _ = build_loaders(dali_cfg(broken_folder["root"], dali_thread=thread), NO_AUG, **loader_kwargs(batch_size=8))
    with pytest.raises(DatasetError, match=r"zz_(truncated|not_an_image)\.jpg"):
        for epoch in range(4):  # the bad files are in some batch of every epoch (33 files, 4 batches of 8)
            train.set_epoch(epoch)
            for _ in train:
                pass


@pytest.mark.parametrize("thread", [False, True], ids=["main-thread", "prefetch-thread"])
def test_unreadable_val_images_are_left_out_and_counted_as_the_torch_loader_does(broken_val_folder, thread):
    """Evaluation goes on without the files neither DALI nor PIL can decode (the failed pipeline is rebuilt), and
    every pass counts them, as the torch loader does; training still stops on such a file (the test above)."""
    _, val = build_loaders(dali_cfg(broken_val_folder["root"], dali_thread=thread), NO_AUG, **loader_kwargs())
    _, torch_val = build_loaders({**dali_cfg(broken_val_folder["root"]), "loader": "torch", "workers": 0}, NO_AUG,
                                 **loader_kwargs())  # fmt: skip
    expected = sorted(torch.cat([y for _, y in torch_val]).tolist())
    for passes in (1, 2):  # the second pass knows the files and leaves them out before DALI sees them
        labels = torch.cat([y for _, y in val])
        assert sorted(labels.tolist()) == expected and val.skipped == torch_val.skipped * passes == 2 * passes


def test_exclusion_list_from_the_check_makes_the_folder_usable(broken_folder, tmp_path):
    excluded = tmp_path / "exclude.txt"
    write_exclude_file(check_dataset(broken_folder["root"]), excluded)
    train, _ = build_loaders(dali_cfg(broken_folder["root"], exclude_file=str(excluded)), NO_AUG,
                             **loader_kwargs(batch_size=8))  # fmt: skip
    assert len(train.split) == NUM_CLASSES * PER_CLASS_TRAIN + 1  # the PNG stays: DALI decodes it on the CPU
    for epoch in range(2):
        train.set_epoch(epoch)
        assert len(list(train)) == len(train)


@pytest.mark.slow
@pytest.mark.parametrize("where", ["torch", "dali"])
def test_full_recipe_pipeline_with_randaugment_and_erasing(jpeg_folder, where):
    """timm's rand-m9-mstd0.5-inc1, batched in torch after DALI (default) or rebuilt in DALI, + random erasing."""
    cfg = dali_cfg(jpeg_folder, dali_randaug=where)
    train, _ = build_loaders(cfg, {}, **loader_kwargs(batch_size=8, channels_last=True))
    n = 0
    for x, y in train:
        assert x.shape == (8, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
        assert y.dtype == torch.int64 and int(y.max()) < NUM_CLASSES
        assert x.abs().max() < 10  # normalized pixels, N(0, 1) erasing noise
        n += 1
    assert n == len(train) == NUM_CLASSES * PER_CLASS_TRAIN // 8


def test_bad_dali_settings_are_named(jpeg_folder):
    with pytest.raises(DatasetError, match="dali_device=gpu"):
        build_loaders(dali_cfg(jpeg_folder, dali_device="gpu"), NO_AUG, **loader_kwargs())
    with pytest.raises(DatasetError, match="data.dali_randaug must be torch or dali, got 'gpu'"):
        build_loaders(dali_cfg(jpeg_folder, dali_randaug="gpu"), NO_AUG, **loader_kwargs())
    with pytest.raises(DatasetError, match="inc1"):
        train, _ = build_loaders(dali_cfg(jpeg_folder), {"auto_augment": "rand-m9-mstd0.5"}, **loader_kwargs())
        next(iter(train))


def test_a_train_split_smaller_than_a_batch_fails_only_when_iterated(jpeg_folder):
    train, val = build_loaders(dali_cfg(jpeg_folder, train_split="val"), NO_AUG, **loader_kwargs(batch_size=64))
    assert len(train) == 0 and sum(len(y) for _, y in val) == NUM_CLASSES * PER_CLASS_VAL
    with pytest.raises(DatasetError, match="fewer than one batch of 64"):
        next(iter(train))


def test_the_torch_tail_normalizes_uint8_batches_and_leaves_dalis_buffer_alone():
    """DALI hands over uint8 CHW; RandAugment, normalization and erasing follow in torch on the device batch."""
    from mobilemamba.data.batch_randaug import BatchRandAugment
    from mobilemamba.data.dali_loader import DeviceTrainTail
    from mobilemamba.data.randaug_spec import parse_rand_augment

    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    images = torch.randint(0, 256, (6, 3, 20, 24), dtype=torch.uint8)
    before = images.clone()
    plain = DeviceTrainTail(mean, std, channels_last=True)(images)
    expected = (images.float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    assert plain.dtype == torch.float32 and plain.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(plain, expected, rtol=1e-6, atol=1e-5)
    ra = BatchRandAugment(parse_rand_augment("rand-m9-mstd0.5-inc1-p1.0"), seed=0)  # every image changed
    augmented = DeviceTrainTail(mean, std, randaug=ra)(images)
    assert torch.equal(images, before) and not torch.equal(augmented, expected)
