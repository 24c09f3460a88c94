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


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_resuming_with_another_batch_size_is_refused_in_one_line_and_changes_nothing(cache_dir, tmp_path, capsys,
                                                                                     one_thread):
    assert run(cache_dir, tmp_path, "trainer.debug.stop_at=4") == EXIT_PREEMPTED  # last.ckpt: update 5, in epoch 2
    before = {name: (tmp_path / name).read_bytes() for name in ("last.ckpt", "metrics.jsonl")}
    capsys.readouterr()
    assert run(cache_dir, tmp_path, "data.batch_size=16") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "update 5" in errors[0], errors
    assert "data.batch_size=8" in errors[0] and "data.batch_size=16" in errors[0]
    assert "resume_layout=restart_epoch" in errors[0], "the way out is named"
    assert {name: (tmp_path / name).read_bytes() for name in before} == before


@pytest.mark.slow
def test_resume_layout_restart_epoch_redoes_the_epoch_and_the_count_never_goes_back(cache_dir, tmp_path, straight,
                                                                                    one_thread):
    assert run(cache_dir, tmp_path, "trainer.debug.stop_at=4") == EXIT_PREEMPTED  # update 5: epoch 2, batch 2 of 3
    assert run(cache_dir, tmp_path, "data.batch_size=16", "resume_layout=restart_epoch") == 0
    train = [r for r in _records(tmp_path) if r["kind"] == "train"]
    assert [r["iteration"] for r in train] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert [r["epoch"] for r in train[5:]] == [2, 2, 2], "epoch 2 again, from its first batch"
    # the lr schedule follows the epochs: the redone epoch runs at the lr epoch 2 has in an uninterrupted run
    reference = [r["lr"] for r in _records(straight) if r["kind"] == "train"]
    assert [r["lr"] for r in train[5:]] == pytest.approx(reference[3:])
    summary = json.loads((tmp_path / "run.json").read_text())
    assert (summary["status"], summary["iterations"], summary["global_batch"]) == ("finished", 8, 16)


@pytest.mark.slow
def test_another_split_of_the_same_global_batch_carries_on_where_it_stopped(cache_dir, tmp_path, one_thread):
    """data.batch_size=4 x trainer.accum_steps=2 (or another GPU count with trainer.global_batch): an update still
    takes 8 images and an epoch 3 updates, so the run continues after the same update, with the same images."""
    assert run(cache_dir, tmp_path, "trainer.debug.stop_at=1") == EXIT_PREEMPTED  # update 2 of epoch 1
    split = ("data.batch_size=4", "trainer.accum_steps=2", "trainer.max_iters_per_epoch=6")
    assert run(cache_dir, tmp_path, *split) == 0
    assert [(r["iteration"], r["batch"]) for r in _records(tmp_path) if r.get("event") == "resume"] == [(2, 4)]
    assert [r["iteration"] for r in _records(tmp_path) if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    summary = json.loads((tmp_path / "run.json").read_text())
    assert (summary["status"], summary["iterations"], summary["global_batch"]) == ("finished", 6, 8)
