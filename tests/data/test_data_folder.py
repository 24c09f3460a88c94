"""Folder datasets: layout, start-up checks with one-line errors, exclusions, config parsing."""
from __future__ import annotations

import shutil

import pytest
from data_helpers import NUM_CLASSES, PER_CLASS_TRAIN, PER_CLASS_VAL, loader_kwargs
from omegaconf import OmegaConf

from mobilemamba.data import DatasetError, build_loaders, load_folder_dataset
from mobilemamba.data.config import AugParams, DataParams


def test_classes_come_from_sorted_folders_and_labels_follow_them(jpeg_folder):
    train, val = load_folder_dataset(jpeg_folder)
    assert train.classes == ("class_000", "class_001", "class_002") == val.classes
    assert len(train) == NUM_CLASSES * PER_CLASS_TRAIN and len(val) == NUM_CLASSES * PER_CLASS_VAL
    for path, label in train.samples:
        assert f"class_{label:03d}" in path


def test_val_split_falls_back_to_test_folder(tmp_path, jpeg_folder):
    root = tmp_path / "cifar_like"
    shutil.copytree(jpeg_folder / "train", root / "train")
    shutil.copytree(jpeg_folder / "val", root / "test")
    _, val = load_folder_dataset(root)
    assert val.root.name == "test" and len(val) == NUM_CLASSES * PER_CLASS_VAL


def test_missing_root_names_the_path(tmp_path):
    with pytest.raises(DatasetError, match="nowhere"):
        load_folder_dataset(tmp_path / "nowhere")


def test_missing_split_names_the_split_path(tmp_path, jpeg_folder):
    shutil.copytree(jpeg_folder / "train", tmp_path / "train")
    with pytest.raises(DatasetError, match=r"split missing.*val"):
        load_folder_dataset(tmp_path)


def test_empty_class_folder_is_an_error_naming_it(tmp_path, jpeg_folder):
    shutil.copytree(jpeg_folder, tmp_path / "ds")
    (tmp_path / "ds" / "train" / "class_zzz").mkdir()
    with pytest.raises(DatasetError, match="class_zzz"):
        load_folder_dataset(tmp_path / "ds")


def test_class_count_mismatch_with_num_classes_is_an_error(jpeg_folder):
    with pytest.raises(DatasetError, match=r"3 class folders but data.num_classes=1000"):
        load_folder_dataset(jpeg_folder, num_classes=1000)
    with pytest.raises(DatasetError, match="num_classes=1000"):
        build_loaders(dict(loader="torch", root=str(jpeg_folder), num_classes=1000, workers=0), {}, **loader_kwargs())


def test_exclusion_list_removes_files_relative_or_absolute(tmp_path, jpeg_folder):
    train, _ = load_folder_dataset(jpeg_folder)
    a, b = train.samples[0][0], train.samples[1][0]
    lst = tmp_path / "exclude.txt"
    lst.write_text(f"# comment\n{a}\n\n")
    train2, _ = load_folder_dataset(jpeg_folder, exclude_file=lst)
    assert len(train2) == len(train) - 1 and a not in {p for p, _ in train2.samples}
    with pytest.raises(DatasetError, match="exclude file"):
        load_folder_dataset(jpeg_folder, exclude_file=tmp_path / "missing.txt")
    assert b in {p for p, _ in train2.samples}


def test_max_per_class_keeps_the_first_files_of_each_class(jpeg_folder):
    train, val = load_folder_dataset(jpeg_folder, max_per_class=2)
    assert len(train) == NUM_CLASSES * 2 and len(val) == NUM_CLASSES * PER_CLASS_VAL


def test_configs_may_be_dicts_or_omegaconf_and_bad_keys_are_named():
    cfg = OmegaConf.create({"loader": "folder", "root": "/x", "num_classes": 10, "train_size": 99})
    p = DataParams.from_cfg(cfg)
    assert (p.loader, p.num_classes, p.synthetic_size) == ("folder", 10, 99)
    with pytest.raises(DatasetError, match="data.loader"):
        DataParams.from_cfg({"loader": "ffcv", "root": "/x"})
    with pytest.raises(DatasetError, match="data.root"):
        DataParams.from_cfg({"loader": "torch"})
    aug = AugParams.from_cfg(OmegaConf.create({"reprob": 0.0, "scale": [0.5, 1.0], "auto_augment": None}))
    assert aug.reprob == 0.0 and aug.scale == (0.5, 1.0) and aug.auto_augment is None
    assert AugParams.from_cfg({}).auto_augment == "rand-m9-mstd0.5-inc1"  # the recipe's default
    with pytest.raises(DatasetError, match="aug.remode"):
        AugParams.from_cfg({"remode": "blur"})
