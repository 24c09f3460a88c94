"""Must hold 7, bad data: a missing dataset path, an empty class folder, a class count that does not match the
head → one clear error (exit 2) before training starts; the few corrupt files a real dataset has (truncated JPEG,
a text file named .jpg) → skipped and counted (epoch_end event `data_skipped`) without ending the epoch; a stray
non-image file (README.txt) is not a sample at all. In the val split such files are left out of the accuracy (never
replaced by another image) and counted: `images` and `skipped` in the eval records, run.json and eval.py's
results.json."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import fault_helpers as H

FULL_EPOCH = ["trainer.epochs=1", "trainer.max_iters_per_epoch=null", "data.batch_size=32"]  # every train image once


def _copy(cache_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(cache_dir / "smoke", root)
    return root


def _class_dirs(root: Path) -> list[Path]:
    return sorted(p for p in (root / "train").iterdir() if p.is_dir())


def _refused(cache_dir: Path, run_dir: Path, capsys, *overrides: str) -> str:
    assert H.run_inproc(cache_dir, run_dir, *overrides) == 2
    errors = H.error_lines(capsys.readouterr().err)
    assert len(errors) == 1, errors
    assert not (run_dir / "last.ckpt").exists() and not (run_dir / "metrics.jsonl").exists(), "before training"
    return errors[0]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_missing_dataset_path_is_refused_naming_data_root(cache_dir, tmp_path, capsys, table):
    with table.trial("bad data: missing dataset path"):
        line = _refused(cache_dir, tmp_path / "run", capsys, f"data.root={tmp_path / 'nowhere'}", "data.generate=null")
        assert "data.root" in line and "nowhere" in line


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_an_empty_class_folder_is_refused_naming_it(cache_dir, tmp_path, capsys, table):
    with table.trial("bad data: empty class folder"):
        root = _copy(cache_dir, tmp_path)
        empty = _class_dirs(root)[1]
        for f in empty.iterdir():
            f.unlink()
        line = _refused(cache_dir, tmp_path / "run", capsys, f"data.root={root}")
        assert str(empty) in line and "no" in line


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_class_count_that_does_not_match_the_head_is_refused(cache_dir, tmp_path, capsys, table):
    with table.trial("bad data: class count != model head"):
        line = _refused(cache_dir, tmp_path / "run", capsys, "data.num_classes=5")
        assert "num_classes" in line and "4" in line and "5" in line


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_corrupt_files_are_skipped_and_counted_without_ending_the_epoch(cache_dir, tmp_path, table):
    with table.trial("bad data: truncated JPEG + non-image .jpg (skipped)") as row:
        root = _copy(cache_dir, tmp_path)
        bad = []
        for d in _class_dirs(root):
            files = sorted(d.glob("*.jpg"))
            files[5].write_bytes(files[5].read_bytes()[:60])  # truncated JPEG
            files[20].write_text("this is not an image\n")  # a non-image file with an image name
            bad += [files[5], files[20]]
            (d / "README.txt").write_text("not a sample\n")  # not an image extension: ignored
        run_dir = tmp_path / "run"
        assert H.run_inproc(cache_dir, run_dir, f"data.root={root}", *FULL_EPOCH) == 0
        ends = [r for r in H.records(run_dir) if r.get("event") == "epoch_end"]
        assert [e["data_skipped"] for e in ends] == [len(bad)], "each bad file counted once per epoch"
        updates = [r for r in H.records(run_dir) if r["kind"] == "train"]
        assert len(updates) == 128 // 32, "the epoch ran to its end with full batches"
        row["redone"], row["data_lost"] = 0, f"{len(bad)} unreadable files skipped (counted)"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_unreadable_val_images_are_left_out_of_the_accuracy_and_counted(cache_dir, tmp_path, table):
    with table.trial("bad data: truncated JPEG + non-image .jpg in val (left out of the accuracy, counted)") as row:
        root = _copy(cache_dir, tmp_path)
        first, second = sorted((root / "val").glob("*/*.jpg"))[::16]  # 2 of the 32 val images, in 2 classes
        first.write_bytes(first.read_bytes()[:60])
        second.write_text("this is not an image\n")
        run_dir = tmp_path / "run"
        assert H.run_inproc(cache_dir, run_dir, f"data.root={root}", "trainer.epochs=1") == 0
        assert [(r["images"], r["skipped"]) for r in H.records(run_dir) if r["kind"] == "eval"] == [(30, 2)]
        summary = json.loads((run_dir / "run.json").read_text())
        assert (summary["images"], summary["skipped"]) == (30, 2)
        args = [H.PY, str(H.REPO / "eval.py"), "model=smoke", "data=smoke", f"data.root={root}",
                f"checkpoint={run_dir / 'last.ckpt'}", "throughput.batch_size=2", "throughput.iters=1",
                f"hydra.run.dir={tmp_path / 'eval'}"]
        done = H.run_to_end(args, H.clean_env(cache_dir), tmp_path / "eval.log")
        assert done.code == 0, done.stderr[-3000:]
        results = json.loads((tmp_path / "eval" / "results.json").read_text())
        assert (results["images"], results["skipped"]) == (30, 2)
        assert "on 30 images (2 unreadable left out)" in done.stderr  # the launched run's output, stdout included
        row["redone"], row["data_lost"] = 0, "2 unreadable val images left out (counted)"
