"""The loader benchmark CLI, and the real CIFAR-10 JPEGs (a small subset) when the shared archive is present."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from data_helpers import NO_AUG, loader_kwargs

from mobilemamba.data import build_loaders
from mobilemamba.data.bench import main as bench_main
from mobilemamba.data.check import check_dataset

# ../shared/data next to the repository, or wherever MOBILEMAMBA_CIFAR10_TAR points
CIFAR = Path(os.environ.get("MOBILEMAMBA_CIFAR10_TAR",
                            Path(__file__).resolve().parents[3] / "shared" / "data" / "cifar10_jpg.tar.zst"))  # fmt: skip


@pytest.mark.slow
def test_bench_prints_a_table_of_images_per_second(jpeg_folder, capsys):
    rc = bench_main([str(jpeg_folder), "--loaders", "torch,synthetic", "--batch", "8", "--img-size", "32",
                     "--iters", "6", "--warmup", "1", "--workers", "0", "--device", "cpu"])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "| loader | img/s | vs torch |" in out
    assert "| torch |" in out and "| synthetic |" in out and "1.0x" in out


@pytest.fixture(scope="module")
def cifar_subset(tmp_path_factory) -> Path:
    """20 train and 20 test images per class, extracted from the archive (not all 60,000)."""
    if not CIFAR.is_file():
        pytest.skip(f"{CIFAR} not present")
    if shutil.which("zstd") is None:
        pytest.skip("zstd not installed")
    root = tmp_path_factory.mktemp("cifar")
    patterns = ["train/*/00[0-1]?.jpg", "test/*/00[0-1]?.jpg"]
    subprocess.run(["tar", "--zstd", "-xf", str(CIFAR), "-C", str(root), "--wildcards", *patterns], check=True)
    return root


@pytest.mark.slow
def test_cifar10_subset_is_clean_and_loads_with_both_loaders(cifar_subset):
    report = check_dataset(cifar_subset)
    assert not report.problems["unreadable"] and not report.problems["non_jpeg"]
    assert set(report.split_counts()) == {"train", "test"} and report.split_counts()["train"]["classes"] == 10
    loaders = ["torch"] + (["dali"] if _has_dali() else [])
    for loader in loaders:
        cfg = dict(loader=loader, root=str(cifar_subset), num_classes=10, workers=0, dali_device="cpu")
        train, val = build_loaders(cfg, NO_AUG, **loader_kwargs(batch_size=16, eval_batch_size=64))
        x, y = next(iter(train))
        assert x.shape == (16, 3, 32, 32) and int(y.max()) < 10
        assert sum(len(y) for _, y in val) == len(val.dataset if loader == "torch" else val.split)
        assert torch.isfinite(x).all()


def _has_dali() -> bool:
    try:
        import nvidia.dali  # noqa: F401
    except ImportError:
        return False
    return True
