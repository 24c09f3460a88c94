"""Shared fixtures for the engine tests: one generated JPEG folder per test run, tiny fast configs."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """MOBILEMAMBA_CACHE for this test run, holding the smoke dataset (written once)."""
    from mobilemamba.data.prepare import make_synthetic_jpeg_folder

    cache = tmp_path_factory.mktemp("mmcache")
    make_synthetic_jpeg_folder(cache / "smoke", classes=4, per_class_train=32, per_class_val=8, size=40)
    return cache


@pytest.fixture
def subprocess_env(cache_dir) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MOBILEMAMBA_RUN_DIR")}
    env.update(MOBILEMAMBA_CACHE=str(cache_dir), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    return env


@pytest.fixture
def one_thread():
    """One torch thread for a longer in-process run: on a busy 2-core box two threads only fight over the cores
    (about 10x slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
