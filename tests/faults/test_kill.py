"""Must hold 1, kill at any moment: `kill -9` of a run (or of one torchrun rank) at a random update or in the
middle of a checkpoint write, then the same command again, ends bit for bit where an uninterrupted run ends,
and no checkpoint on disk is ever unreadable.

The random updates come from MOBILEMAMBA_FAULT_SEED (default 6), printed so a failure can be replayed.
"""
from __future__ import annotations

import os
import random
import signal

import pytest

import fault_helpers as H

SEED = int(os.environ.get("MOBILEMAMBA_FAULT_SEED", "6"))
RNG = random.Random(SEED)
SINGLE_KILLS = sorted(RNG.sample(range(1, H.TOTAL_UPDATES + 1), 2))
DDP_KILL = RNG.randint(1, H.TOTAL_UPDATES)
SLOW_SAVE_FROM = 5  # the checkpoint of update 6 is the one killed mid-write
SLOW_SAVE = f"4@{SLOW_SAVE_FROM}"


def _writer_pid(run_dir) -> int | None:
    """The pid in the name of last.ckpt's temporary file once the writer is inside its slowed write (the one of
    update SLOW_SAVE_FROM + 1, written after that update is logged)."""
    if H.last_logged_update(run_dir) < SLOW_SAVE_FROM + 1:
        return None
    for tmp in run_dir.glob(".last.ckpt.tmp-*"):
        try:
            if tmp.stat().st_size > 0:
                return int(tmp.name.rsplit("-", 1)[1])
        except FileNotFoundError:  # renamed into place between the listing and the stat
            continue
    return None


def _rerun_and_compare(args, env, run_dir, reference, log, row) -> None:
    """The fault left a run dir; the same command finishes it, and it ends where the reference ends."""
    H.assert_every_checkpoint_loads(run_dir)  # right after the kill: nothing unreadable
    row["redone"] = H.last_logged_update(run_dir) - H.checkpoint_iteration(run_dir)
    done = H.run_to_end(args, env, log)
    assert done.code == 0, done.stderr[-3000:]
    H.assert_every_checkpoint_loads(run_dir)
    assert H.stale_tmp_files(run_dir) == [], "a temporary file of the killed writer was left behind"
    H.assert_same_end(run_dir, reference)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("kill_at", SINGLE_KILLS)
def test_kill_9_at_a_random_update_then_rerun_ends_bit_for_bit(kill_at, cache_dir, reference_single, tmp_path, table):
    print(f"MOBILEMAMBA_FAULT_SEED={SEED}: kill -9 after update {kill_at}")
    run_dir = tmp_path / "run"
    args = H.train_cmd(run_dir)
    with table.trial("kill -9, single process, random update") as row:
        killed = H.run_to_end(args, H.clean_env(cache_dir, MOBILEMAMBA_FAULT_KILL_AT=str(kill_at)), tmp_path / "killed.log")
        assert killed.code == -signal.SIGKILL, killed.stderr[-2000:]
        assert H.last_logged_update(run_dir) == kill_at
        _rerun_and_compare(args, H.clean_env(cache_dir), run_dir, reference_single, tmp_path / "rerun.log", row)
        assert row["redone"] <= H.CKPT_EVERY, "at most the updates since the last periodic checkpoint are redone"


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_during_a_checkpoint_write_leaves_the_previous_one_readable(cache_dir, reference_single, tmp_path, table):
    run_dir = tmp_path / "run"
    args = H.train_cmd(run_dir)
    with table.trial("kill -9 during a checkpoint write, single process") as row:
        env = H.clean_env(cache_dir, MOBILEMAMBA_FAULT_SAVE_DELAY=SLOW_SAVE)
        run = H.launch(args, env, tmp_path / "killed.log")
        pid = H.wait_for(lambda: _writer_pid(run_dir), run, what="the slowed checkpoint write")
        assert pid == run.proc.pid
        os.kill(pid, signal.SIGKILL)
        assert run.wait().code == -signal.SIGKILL
        assert H.stale_tmp_files(run_dir), "the half-written temporary file is there (it was killed mid-write)"
        assert H.checkpoint_iteration(run_dir) == SLOW_SAVE_FROM - 1, "last.ckpt is the previous, complete one"
        _rerun_and_compare(args, H.clean_env(cache_dir), run_dir, reference_single, tmp_path / "rerun.log", row)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_of_one_torchrun_rank_then_rerun_ends_bit_for_bit(cache_dir, reference_ddp, tmp_path, table):
    print(f"MOBILEMAMBA_FAULT_SEED={SEED}: kill -9 of rank 1 after update {DDP_KILL}")
    run_dir = tmp_path / "run"
    args = H.torchrun_cmd(run_dir)
    with table.trial("kill -9 of one rank, torchrun 2 ranks, random update") as row:
        env = H.clean_env(cache_dir, MOBILEMAMBA_FAULT_KILL_AT=f"{DDP_KILL}@1")
        killed = H.run_to_end(args, env, tmp_path / "killed.log")
        assert killed.code != 0, "torchrun reports the lost rank"
        assert H.last_logged_update(run_dir) <= DDP_KILL
        _rerun_and_compare(H.torchrun_cmd(run_dir), H.clean_env(cache_dir), run_dir, reference_ddp,
                           tmp_path / "rerun.log", row)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_kill_9_of_rank_0_during_a_checkpoint_write_under_torchrun(cache_dir, reference_ddp, tmp_path, table):
    run_dir = tmp_path / "run"
    with table.trial("kill -9 of rank 0 during a checkpoint write, torchrun 2 ranks") as row:
        env = H.clean_env(cache_dir, MOBILEMAMBA_FAULT_SAVE_DELAY=SLOW_SAVE)
        run = H.launch(H.torchrun_cmd(run_dir), env, tmp_path / "killed.log")
        pid = H.wait_for(lambda: _writer_pid(run_dir), run, what="the slowed checkpoint write")
        os.kill(pid, signal.SIGKILL)  # rank 0: the only writer
        assert run.wait().code != 0
        assert H.checkpoint_iteration(run_dir) == SLOW_SAVE_FROM - 1
        _rerun_and_compare(H.torchrun_cmd(run_dir), H.clean_env(cache_dir), run_dir, reference_ddp,
                           tmp_path / "rerun.log", row)
