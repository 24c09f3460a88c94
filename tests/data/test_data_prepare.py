"""Dataset preparation: a learnable synthetic JPEG folder written once, and Fashion-MNIST as JPEGs (offline from
the subset shipped with the package)."""
from __future__ import annotations

import filecmp
import gzip
import hashlib
import io
import lzma
import socket
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mobilemamba.data import DatasetError, load_folder_dataset
from mobilemamba.data import prepare
from mobilemamba.data.prepare import FASHION_MNIST_DIR, main, make_synthetic_jpeg_folder, prepare_fashion_mnist

DEBIAN = pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="Debian package dataset-fashion-mnist not installed")


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


@DEBIAN
def test_a_subset_larger_than_the_shipped_one_comes_from_the_debian_package(tmp_path, capsys):
    assert main(["fashion-mnist", str(tmp_path / "fm"), "--per-class", "301", "--val-per-class", "2"]) == 0
    train, val = load_folder_dataset(tmp_path / "fm", num_classes=10)
    assert len(train) == 3010 and len(val) == 20


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """No network (every connection and name lookup fails) and no Debian package folder."""
    def refuse(*args, **kwargs):
        raise OSError("network unreachable (test guard)")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(prepare, "FASHION_MNIST_DIR", tmp_path / "no_debian_package")


def test_the_demo_data_is_prepared_offline_from_the_subset_shipped_with_the_package(offline, tmp_path, capsys):
    """`make demo`'s first command, with no network and no Debian package: 10 classes x (300 train + 50 val) JPEGs."""
    root = tmp_path / "fashion_mnist"
    assert main(["fashion-mnist", str(root), "--per-class", "300", "--val-per-class", "50"]) == 0
    assert "ready" in capsys.readouterr().out
    train, val = load_folder_dataset(root, num_classes=10)
    for split, per_class in ((train, 300), (val, 50)):
        assert np.bincount([label for _, label in split.samples]).tolist() == [per_class] * 10
        for path, _ in split.samples:
            with Image.open(path) as img:
                img.load()
                assert img.format == "JPEG" and img.size == (28, 28) and img.mode == "L"


def test_a_larger_subset_offline_names_every_other_source(offline, tmp_path):
    with pytest.raises(DatasetError) as err:
        prepare_fashion_mnist(tmp_path / "fm", per_class=301, val_per_class=50)
    message = str(err.value)
    assert "\n" not in message and "network unreachable (test guard)" in message
    assert "--source DIR" in message and "dataset-fashion-mnist" in message and "download" in message
    assert not (tmp_path / "fm").exists()


def test_the_shipped_subset_matches_its_recorded_checksum():
    """The file's arrays, read without the package's reader: 300 train / 50 val images of each class with the
    index each has in the dataset's files, hashed in the documented order."""
    with np.load(io.BytesIO(lzma.decompress(prepare.FASHION_MNIST_EMBEDDED.read_bytes()))) as npz:
        arrays = {k: npz[k] for k in npz.files}
    digest = hashlib.sha256()
    for split, per_class in (("train", 300), ("val", 50)):
        images, labels, index = arrays[f"{split}_images"], arrays[f"{split}_labels"], arrays[f"{split}_index"]
        assert images.shape == (10 * per_class, 28, 28) and images.dtype == np.uint8
        assert labels.tolist() == [c for c in range(10) for _ in range(per_class)]
        assert all(np.all(np.diff(index[labels == c]) > 0) for c in range(10)), "the files' order within a class"
        digest.update(images.tobytes() + labels.astype(np.uint8).tobytes() + index.astype("<i8").tobytes())
    assert digest.hexdigest() == prepare.FASHION_MNIST_EMBEDDED_SHA256
    assert (prepare.FASHION_MNIST_EMBEDDED.parent / "fashion_mnist_demo.LICENSE").read_text().count("MIT") >= 1


def test_a_damaged_copy_of_the_shipped_subset_is_refused(tmp_path):
    with np.load(io.BytesIO(lzma.decompress(prepare.FASHION_MNIST_EMBEDDED.read_bytes()))) as npz:
        arrays = {k: npz[k].copy() for k in npz.files}
    arrays["val_images"][0, 0, 0] ^= 1
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    damaged = tmp_path / "damaged.npz.xz"
    damaged.write_bytes(lzma.compress(buffer.getvalue(), preset=0))
    with pytest.raises(DatasetError, match="does not match its recorded checksum"):
        prepare.read_embedded_subset(damaged)


@DEBIAN
def test_the_shipped_subset_is_the_real_data_and_writes_the_same_folder(tmp_path):
    """Rebuilt from the Debian package's files it has the recorded checksum, and a subset that fits in it gives
    the same JPEG files, byte for byte, as the package's files."""
    assert prepare.write_embedded_subset(FASHION_MNIST_DIR, tmp_path / "rebuilt.npz.xz") == prepare.FASHION_MNIST_EMBEDDED_SHA256
    shipped = prepare_fashion_mnist(tmp_path / "shipped", per_class=7, val_per_class=3)
    debian = prepare_fashion_mnist(tmp_path / "debian", per_class=7, val_per_class=3, source=FASHION_MNIST_DIR)
    files = sorted(str(p.relative_to(shipped)) for p in shipped.rglob("*.jpg"))
    assert len(files) == 100 and files == sorted(str(p.relative_to(debian)) for p in debian.rglob("*.jpg"))
    assert filecmp.cmpfiles(shipped, debian, files, shallow=False)[0] == files


def test_cli_synthetic(tmp_path, capsys):
    assert main(["synthetic", str(tmp_path / "s"), "--classes", "3", "--per-class-train", "2",
                 "--per-class-val", "1", "--size", "16"]) == 0  # fmt: skip
    assert "ready" in capsys.readouterr().out
    assert len(load_folder_dataset(tmp_path / "s", num_classes=3)[0]) == 6
