"""Dataset preparation: a learnable synthetic JPEG folder written once, and Fashion-MNIST as JPEGs."""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilemamba.data import DatasetError, load_folder_dataset
from mobilemamba.data.prepare import FASHION_MNIST_DIR, main, make_synthetic_jpeg_folder, prepare_fashion_mnist


def test_synthetic_folder_layout_and_idempotence(tmp_path):
    root = make_synthetic_jpeg_folder(tmp_path / "s", classes=2, per_class_train=3, per_class_val=2, size=24)
    train, val = load_folder_dataset(root, num_classes=2)
    assert len(train) == 6 and len(val) == 4
    assert Image.open(train.samples[0][0]).format == "JPEG" and Image.open(train.samples[0][0]).size == (24, 24)
    stamp = (root / ".complete.json").stat().st_mtime_ns
    first = Path(train.samples[0][0]).stat().st_mtime_ns
    make_synthetic_jpeg_folder(tmp_path / "s", classes=2, per_class_train=3, per_class_val=2, size=24)
    assert (root / ".complete.json").stat().st_mtime_ns == stamp and Path(train.samples[0][0]).stat().st_mtime_ns == first
    make_synthetic_jpeg_folder(tmp_path / "s", classes=2, per_class_train=4, per_class_val=2, size=24)  # new params
    assert len(load_folder_dataset(root)[0]) == 8
    with pytest.raises(DatasetError, match="per_class_train"):
        make_synthetic_jpeg_folder(tmp_path / "bad", per_class_train=0)


def test_synthetic_images_are_learnable_by_a_nearest_centroid_on_colour(tmp_path):
    root = make_synthetic_jpeg_folder(tmp_path / "s", classes=4, per_class_train=12, per_class_val=6, size=32)
    train, val = load_folder_dataset(root)

    def feats(split):
        x = np.stack([np.asarray(Image.open(p), np.float32).mean((0, 1)) for p, _ in split.samples])
        return x, np.array([y for _, y in split.samples])

    xt, yt = feats(train)
    xv, yv = feats(val)
    centroids = np.stack([xt[yt == c].mean(0) for c in range(4)])
    pred = np.argmin(((xv[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == yv).mean() >= 0.9


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files_become_a_jpeg_folder_with_a_per_class_limit(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        _write_idx(src / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(src / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    root = prepare_fashion_mnist(tmp_path / "fm", per_class=3, val_per_class=1, source=src)
    train, val = load_folder_dataset(root, num_classes=10)
    assert len(train) == 30 and len(val) == 10 and train.classes[0] == "0_tshirt_top"
    assert Image.open(train.samples[0][0]).size == (28, 28)


@pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")
def test_fashion_mnist_from_the_debian_package_via_the_cli(tmp_path, capsys):
    assert main(["fashion-mnist", str(tmp_path / "fm"), "--per-class", "2"]) == 0
    train, val = load_folder_dataset(tmp_path / "fm", num_classes=10)
    assert len(train) == 20 and len(val) == 20


def test_cli_synthetic(tmp_path, capsys):
    assert main(["synthetic", str(tmp_path / "s"), "--classes", "3", "--per-class-train", "2",
                 "--per-class-val", "1", "--size", "16"]) == 0  # fmt: skip
    assert "ready" in capsys.readouterr().out
    assert len(load_folder_dataset(tmp_path / "s", num_classes=3)[0]) == 6
