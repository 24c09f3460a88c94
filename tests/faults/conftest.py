"""Fixtures of the fault-injection suite: one generated JPEG folder, the uninterrupted reference runs
(single process and 2-rank torchrun), and the fault table (docs/results.md#faults) printed at the end of the run.

`pytest tests/faults` prints the table; MOBILEMAMBA_FAULT_TABLE=path.md also writes it to that file.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # for fault_helpers, whatever pytest's import mode

import fault_helpers as H  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """In-process runs use one thread, like the launched ones (OMP_NUM_THREADS=1): on a busy 2-core box, more
    threads only fight over the cores."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """MOBILEMAMBA_CACHE for the whole test run, holding the smoke dataset (4 classes x 32 train / 8 val JPEGs)."""
    from mobilemamba.data.prepare import make_synthetic_jpeg_folder

    cache = tmp_path_factory.mktemp("faultcache")
    make_synthetic_jpeg_folder(cache / "smoke", classes=4, per_class_train=32, per_class_val=8, size=40)
    return cache


@pytest.fixture(scope="session")
def table() -> H.FaultTable:
    return H.TABLE


@pytest.fixture(scope="session")
def reference_single(cache_dir, tmp_path_factory) -> Path:
    """`python train.py` run once without any fault: where every interrupted single-process run must end."""
    run_dir = tmp_path_factory.mktemp("ref_single")
    done = H.run_to_end(H.train_cmd(run_dir), H.clean_env(cache_dir), run_dir.parent / "ref_single.log")
    assert done.code == 0, done.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def reference_ddp(cache_dir, tmp_path_factory) -> Path:
    """`torchrun --nproc_per_node=2 train.py` (gloo) once without a kill (rank 1 gets a NaN at update 3)."""
    run_dir = tmp_path_factory.mktemp("ref_ddp")
    done = H.run_to_end(H.torchrun_cmd(run_dir), H.clean_env(cache_dir), run_dir.parent / "ref_ddp.log")
    assert done.code == 0, done.stderr[-3000:]
    return run_dir


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not H.TABLE.rows:
        return
    text = H.TABLE.markdown()
    terminalreporter.write_sep("=", "fault-injection table (docs/results.md#faults)")
    terminalreporter.write_line(text)
    target = os.environ.get("MOBILEMAMBA_FAULT_TABLE")
    if target:
        Path(target).write_text(text + "\n")
