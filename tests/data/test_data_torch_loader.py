"""data.loader=torch: batches, exact val sharding, resume inside an epoch, corrupt files skipped and counted."""
from __future__ import annotations

import pytest
import torch
from data_helpers import NUM_CLASSES, PER_CLASS_TRAIN, PER_CLASS_VAL, loader_kwargs

from mobilemamba.data import DatasetError, build_loaders
from mobilemamba.data.config import AugParams
from mobilemamba.data.torch_loader import build_eval_transform, build_train_transform, eval_resize_size


def torch_cfg(root, **over) -> dict:
    return {**dict(loader="torch", root=str(root), num_classes=NUM_CLASSES, workers=0, pin_memory=False), **over}


def test_train_batches_are_normalized_float_images_with_int64_labels(jpeg_folder):
    train, val = build_loaders(torch_cfg(jpeg_folder), {}, **loader_kwargs())  # the recipe's full augmentation
    assert len(train) == NUM_CLASSES * PER_CLASS_TRAIN // 4 and train.num_classes == NUM_CLASSES
    batches = list(train)
    assert len(batches) == len(train)
    for x, y in batches:
        assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32
        assert y.dtype == torch.int64 and 0 <= y.min() and y.max() < NUM_CLASSES
        assert -3.0 < x.mean() < 3.0 and x.min() >= -2.2 - 4.0  # normalized (erasing adds N(0,1) noise)
    assert train.skipped == 0


def test_val_batches_are_centre_crops_and_the_last_one_is_short(jpeg_folder):
    _, val = build_loaders(torch_cfg(jpeg_folder), {}, **loader_kwargs(eval_batch_size=4))
    sizes = [len(y) for _, y in val]
    assert sizes == [4, 4, 4, 3] and len(val) == 4  # 15 images
    x, _ = next(iter(val))
    assert x.shape == (4, 3, 32, 32)


def test_eval_resize_matches_the_recipe_sizes():
    assert [eval_resize_size(s, 0.875) for s in (192, 224, 256, 384, 512)] == [219, 256, 292, 438, 585]
    text = repr(build_eval_transform(224, (0.5,) * 3, (0.5,) * 3, 0.875, "bicubic"))
    assert "Resize(size=256, interpolation=bicubic" in text and "CenterCrop(size=(224, 224))" in text


def test_train_transform_is_the_published_recipe_when_aug_keys_are_missing():
    text = repr(build_train_transform(224, AugParams.from_cfg({}), (0.5,) * 3, (0.5,) * 3))
    assert "scale=(0.08, 1.0), ratio=(0.75, 1.3333), interpolation=bilinear bicubic" in text
    assert "RandomHorizontalFlip(p=0.5)" in text
    assert text.count("p=0.5, m=9, mstd=0.5") == 15 and "SolarizeAdd" in text  # rand-m9-mstd0.5-inc1
    assert "RandomErasing(p=0.25, mode=pixel, count=(1, 1))" in text


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_val_sharding_evaluates_every_image_exactly_once(jpeg_folder, world_size):
    total, per_class = 0, torch.zeros(NUM_CLASSES, dtype=torch.int64)
    for rank in range(world_size):
        _, val = build_loaders(torch_cfg(jpeg_folder), {}, **loader_kwargs(rank=rank, world_size=world_size))
        for _, y in val:
            total += len(y)
            per_class += torch.bincount(y, minlength=NUM_CLASSES)
    assert total == NUM_CLASSES * PER_CLASS_VAL
    assert per_class.tolist() == [PER_CLASS_VAL] * NUM_CLASSES


def test_resume_with_start_batch_yields_the_rest_of_the_same_epoch(jpeg_folder):
    train, _ = build_loaders(torch_cfg(jpeg_folder), {"auto_augment": None}, **loader_kwargs())
    train.set_epoch(3)
    full_idx = train.batch_sampler.batches()
    full_targets = [y for _, y in train]
    train.set_epoch(3, start_batch=4)
    assert train.batch_sampler.batches() == full_idx[4:]
    resumed = [y for _, y in train]
    assert len(resumed) == len(full_targets) - 4
    assert all(torch.equal(a, b) for a, b in zip(resumed, full_targets[4:]))
    assert len([y for _, y in train]) == len(train)  # the next iteration is a whole epoch again
    train.set_epoch(4)
    assert train.batch_sampler.batches() != full_idx
    with pytest.raises(DatasetError, match="start_batch"):
        train.set_epoch(0, start_batch=len(train) + 1)


def test_channels_last_batches(jpeg_folder):
    train, _ = build_loaders(torch_cfg(jpeg_folder), {}, **loader_kwargs(channels_last=True))
    x, _ = next(iter(train))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_corrupt_files_are_skipped_counted_and_the_epoch_completes(broken_folder):
    cfg = torch_cfg(broken_folder["root"], exclude_file=None)
    train, _ = build_loaders(cfg, {"auto_augment": None}, **loader_kwargs(batch_size=8))
    n_samples = len(train.dataset)
    assert n_samples == NUM_CLASSES * PER_CLASS_TRAIN + 3  # truncated + garbage + PNG listed, README ignored
    train.batch_sampler.batches = lambda: [list(range(n_samples))]  # read every file once
    batches = list(train)
    assert [len(y) for _, y in batches] == [n_samples]  # replaced by readable samples: full size
    assert train.skipped == 2  # the truncated JPEG and the text file; the PNG is readable


@pytest.mark.parametrize("workers", [0, 2])
def test_unreadable_val_images_are_left_out_not_replaced_and_counted(broken_val_folder, workers):
    """An accuracy is never computed on a substituted image: the val batch is shorter, ``skipped`` counts the file
    in every pass."""
    _, val = build_loaders(torch_cfg(broken_val_folder["root"], workers=workers), {}, **loader_kwargs())
    for passes in (1, 2):
        labels = torch.cat([y for _, y in val])
        assert len(labels) == NUM_CLASSES * PER_CLASS_VAL - 2 and val.skipped == 2 * passes
    readable = [label for path, label in val.dataset.samples if path not in broken_val_folder["unreadable"]]
    assert labels.tolist() == readable, "each readable image once, none twice"


def test_workers_and_persistent_workers_deliver_the_same_epoch(jpeg_folder):
    a, _ = build_loaders(torch_cfg(jpeg_folder), {"auto_augment": None}, **loader_kwargs())
    b, _ = build_loaders(torch_cfg(jpeg_folder, workers=2), {"auto_augment": None}, **loader_kwargs())
    for epoch in (0, 1):  # persistent workers must follow set_epoch
        a.set_epoch(epoch), b.set_epoch(epoch)
        assert all(torch.equal(ya, yb) for (_, ya), (_, yb) in zip(a, b))


def test_close_ends_the_persistent_worker_processes_and_the_loader_iterates_again(jpeg_folder):
    """The workers block the stop signals (they are the trainer's to handle), so they must be ended by the loader:
    left to the interpreter's exit, multiprocessing would signal them in vain and wait for them forever."""
    import multiprocessing

    train, _ = build_loaders(torch_cfg(jpeg_folder, workers=2), {"auto_augment": None}, **loader_kwargs())
    first = [y for _, y in train]
    workers = multiprocessing.active_children()
    assert len(workers) == 2, "persistent workers outlive their epoch"
    train.close()
    assert not any(w.is_alive() for w in workers)
    assert all(torch.equal(a, b) for a, b in zip(first, (y for _, y in train))), "it iterates again after close"
    train.close()


def test_loader_workers_are_no_more_than_the_cpus_this_process_may_use(jpeg_folder, monkeypatch, caplog):
    """data.workers=8 on a 2-CPU machine: 2 workers each for train and val, said once, and PyTorch's
    'excessive worker creation' warning never fires."""
    import warnings

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})  # what PyTorch's own check reads too
    caplog.set_level("INFO", logger="mobilemamba.data.torch_loader")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        train, val = build_loaders(torch_cfg(jpeg_folder, workers=8), {"auto_augment": None}, **loader_kwargs())
        assert train._loader.num_workers == val._loader.num_workers == 2
        assert len(list(val)) == len(val) and next(iter(train))[0].shape == (4, 3, 32, 32)
    assert [r.getMessage() for r in caplog.records if "loader workers" in r.getMessage()] == [
        "data.workers=8, but this process may run on 2 CPUs: 2 loader workers"]


def test_auto_loader_is_torch_on_a_cpu_device(jpeg_folder):
    train, _ = build_loaders(torch_cfg(jpeg_folder, loader="auto"), {}, **loader_kwargs())
    assert type(train).__name__ == "TorchLoader"


def test_a_train_split_smaller_than_a_batch_fails_only_when_iterated(jpeg_folder):
    """eval.py builds both loaders from the val split; only training needs a full batch per rank."""
    train, val = build_loaders(torch_cfg(jpeg_folder, train_split="val"), {}, **loader_kwargs(batch_size=64))
    assert len(train) == 0 and sum(len(y) for _, y in val) == NUM_CLASSES * PER_CLASS_VAL
    with pytest.raises(DatasetError, match="fewer than one batch of 64"):
        next(iter(train))
