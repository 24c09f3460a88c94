"""python -m mobilemamba.data.check: finds what the loaders would choke on and writes the exclusion list."""
from __future__ import annotations

from data_helpers import NUM_CLASSES, PER_CLASS_TRAIN, loader_kwargs

from mobilemamba.data import build_loaders
from mobilemamba.data.check import check_dataset, main
from mobilemamba.data.folder import EXCLUDE_FILENAME


def test_check_classifies_truncated_garbage_png_and_non_image_files(broken_folder):
    report = check_dataset(broken_folder["root"])
    assert sorted(report.problems["unreadable"]) == sorted([broken_folder["truncated"], broken_folder["garbage"]])
    assert report.problems["non_jpeg"] == [broken_folder["png"]]
    assert report.problems["ignored"] == [broken_folder["txt"]]
    train = report.split_counts()["train"]
    assert train["ok"] == NUM_CLASSES * PER_CLASS_TRAIN and train["classes"] == NUM_CLASSES


def test_parallel_check_agrees_with_serial(broken_folder):
    serial = check_dataset(broken_folder["root"], workers=0).problems
    parallel = check_dataset(broken_folder["root"], workers=2).problems  # few files: runs serially anyway
    assert serial == parallel


def test_cli_writes_the_default_exclusion_list_and_build_loaders_honours_it(broken_folder, tmp_path, capsys):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(broken_folder["root"], root)
    assert main([str(root)]) == 1  # problems found, nothing written
    assert not (root / EXCLUDE_FILENAME).exists()
    out = capsys.readouterr().out
    assert "zz_truncated.jpg" in out and "unreadable" in out and "train" in out
    assert f"nothing written: run again with --write-exclude to write ROOT/{EXCLUDE_FILENAME}" in out
    assert main([str(root), "--write-exclude"]) == 1
    lines = (root / EXCLUDE_FILENAME).read_text().splitlines()
    assert sorted(ln for ln in lines if not ln.startswith("#")) == [
        "train/class_001/zz_not_an_image.jpg", "train/class_001/zz_truncated.jpg"]  # fmt: skip
    cfg = dict(loader="torch", root=str(root), workers=0, num_classes=NUM_CLASSES)
    train, _ = build_loaders(cfg, {"auto_augment": None}, **loader_kwargs())
    assert len(train.dataset) == NUM_CLASSES * PER_CLASS_TRAIN + 1  # only the readable PNG is left over
    list(train)
    assert train.skipped == 0


def test_cli_out_path_with_non_jpeg_excluded(broken_folder, tmp_path):
    out = tmp_path / "lists" / "ex.txt"
    main([str(broken_folder["root"]), "--out", str(out), "--exclude-non-jpeg"])
    body = out.read_text()
    assert broken_folder["png"] in body and broken_folder["truncated"] in body  # absolute: list is elsewhere


def test_clean_folder_exits_zero_and_missing_root_is_reported(jpeg_folder, tmp_path, capsys):
    assert main([str(jpeg_folder)]) == 0
    assert main([str(tmp_path / "nope")]) == 2
    assert "nope" in capsys.readouterr().out
