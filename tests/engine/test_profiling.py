"""trainer.profile=N: a profiler window over N updates after the warm-up ones, written next to the run's metrics."""
from __future__ import annotations

import gzip
import json

import pytest
import torch

from mobilemamba.engine import profiling
from mobilemamba.engine.profiling import label, update_profiler


def _updates(tick, n: int) -> None:
    x = torch.randn(32, 32)
    for _ in range(n):
        with label("forward"):
            y = x @ x
        with label("optimizer"):
            y.add_(1.0)
        tick()


@pytest.fixture
def short_skip(monkeypatch):
    monkeypatch.setattr(profiling, "PROFILE_SKIP", 2)
    monkeypatch.setattr(profiling, "PROFILE_WARMUP", 1)


def test_window_writes_summary_tables_and_trace(tmp_path, short_skip):
    with update_profiler(3, tmp_path, torch.device("cpu")) as tick:
        _updates(tick, 10)
    summary = (tmp_path / "profile_summary.txt").read_text()
    assert summary.startswith("3 updates profiled:")
    assert "host forward" in summary and "host optimizer" in summary
    assert "device kernel" not in summary  # a CPU run has no device timeline
    assert "aten::mm" in (tmp_path / "profile_ops.txt").read_text()
    with gzip.open(tmp_path / "profile_trace.json.gz", "rt") as f:
        names = {e.get("name") for e in json.load(f)["traceEvents"]}
    assert {"forward", "optimizer"} <= names


def test_window_cut_short_by_the_epoch_writes_the_updates_it_saw(tmp_path, short_skip):
    with update_profiler(5, tmp_path, torch.device("cpu")) as tick:
        _updates(tick, 5)  # updates 1-2 skipped, 3 warms up: updates 4 and 5 are in the window
    assert (tmp_path / "profile_summary.txt").read_text().startswith("2 updates profiled:")


def test_epoch_ending_before_the_window_only_warns(tmp_path, short_skip, caplog):
    with update_profiler(3, tmp_path, torch.device("cpu")) as tick:
        _updates(tick, 2)
    assert not (tmp_path / "profile_summary.txt").exists()
    assert "before the profile window" in caplog.text


def test_zero_profiles_nothing(tmp_path):
    with update_profiler(0, tmp_path, torch.device("cpu")) as tick:
        _updates(tick, 3)
    assert list(tmp_path.iterdir()) == []
