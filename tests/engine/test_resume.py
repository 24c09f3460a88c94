"""Resume: a run stopped by a signal and rerun ends bit-for-bit where an uninterrupted run ends (CPU, deterministic)."""
from __future__ import annotations

import json

import pytest
import torch

from mobilemamba.engine.preempt import EXIT_PREEMPTED

from .helpers import assert_same_state, load, run


@pytest.fixture(scope="module")
def straight(cache_dir, tmp_path_factory):
    """The reference: 2 epochs x 3 updates without interruption."""
    run_dir = tmp_path_factory.mktemp("straight")
    assert run(cache_dir, run_dir) == 0
    return run_dir


def _evals(run_dir):
    recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["epoch"], r["top1"], r["ema_top1"], r["val_loss"]) for r in recs if r["kind"] == "eval"]


@pytest.mark.slow
@pytest.mark.parametrize("stop_at", [2, 4])  # 2: the stop lands on the epoch's last update (before its eval); 4: mid-epoch
def test_preempted_run_resumes_bit_for_bit(cache_dir, tmp_path, straight, stop_at):
    # SIGTERM arrives after update `stop_at`; the loop finishes the update in flight, writes last.ckpt, exits 75
    assert run(cache_dir, tmp_path, f"trainer.debug.stop_at={stop_at}") == EXIT_PREEMPTED
    stopped = load(tmp_path / "last.ckpt")
    assert stopped["iteration"] == stop_at + 1
    assert stopped["batch"] == (stop_at + 1) % 3 or stopped["batch"] == 3
    # the same command again continues from last.ckpt and finishes
    assert run(cache_dir, tmp_path, f"trainer.debug.stop_at={stop_at}") == 0
    assert_same_state(load(tmp_path / "last.ckpt"), load(straight / "last.ckpt"))
    assert _evals(tmp_path) == _evals(straight)
    events = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e["kind"] == "event" and e["event"] in ("preempted", "resume")] == ["resume"], \
        "metrics written after the checkpoint by the stopped run are cut on resume"


@pytest.mark.slow
def test_checkpoint_holds_everything_needed_to_resume(straight):
    ck = load(straight / "last.ckpt")
    for key in ("model", "ema", "optimizer", "scaler", "scheduler", "epoch", "iteration", "batch", "phase", "rng",
                "config", "best", "teacher", "log_offsets"):
        assert key in ck, key
    assert (ck["epoch"], ck["iteration"], ck["batch"]) == (2, 6, 0)
    assert ck["config"]["name"] == "smoke" and ck["rng"]["world_size"] == 1
    assert set(ck["rng"]["states"][0]) >= {"python", "numpy", "torch"}
    best = load(straight / "best.ckpt")
    assert best["best"] == ck["best"]


@pytest.mark.slow
def test_resume_refuses_a_run_dir_of_another_experiment(cache_dir, straight, capsys):
    assert run(cache_dir, straight, "name=other_experiment") == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: name:") and "other_experiment" in err


@pytest.mark.slow
def test_resume_never_refuses_an_existing_run(cache_dir, straight, capsys):
    assert run(cache_dir, straight, "resume=never") == 2
    assert "resume=never" in capsys.readouterr().err


def test_resumed_model_weights_are_finite_and_ema_differs_from_raw(straight):
    ck = load(straight / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())
    diffs = [not torch.equal(ck["model"][k], ck["ema"][k]) for k in ck["model"] if ck["model"][k].is_floating_point()]
    assert any(diffs)
