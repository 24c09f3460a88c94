"""Must hold 2, preemption: SIGTERM or SIGUSR1 (what SLURM sends before it kills a job) → the run finishes the
update in flight, writes last.ckpt and exits with 75 (EX_TEMPFAIL, documented: "rerun to resume"); the same
command then continues from there, and the run ends bit for bit where an uninterrupted run ends.
"""
from __future__ import annotations

import signal

import pytest

import fault_helpers as H
from mobilemamba.engine import EXIT_PREEMPTED

SLOW = "trainer.debug.sleep=0.3"  # 0.3 s per update: room for the signal to land mid-run (numerics unchanged)


def _preempt(args, env, run_dir, sig: signal.Signals, after_update: int, log) -> int:
    """Start the run, send `sig` once update `after_update` is logged; returns the updates redone on resume."""
    run = H.launch(args, env, log)
    H.wait_for(lambda: H.last_logged_update(run_dir) >= after_update, run, what=f"update {after_update}")
    run.proc.send_signal(sig)
    done = run.wait()
    assert done.code == EXIT_PREEMPTED, done.stderr[-3000:]
    assert f"stopped by {sig.name}" in done.stderr
    stopped = H.load(run_dir / "last.ckpt")
    preempted = [r for r in H.records(run_dir) if r.get("event") == "preempted"]
    assert preempted and preempted[-1]["signal"] == sig.name
    assert preempted[-1]["iteration"] == stopped["iteration"] >= after_update
    H.assert_every_checkpoint_loads(run_dir)
    return H.last_logged_update(run_dir) - int(stopped["iteration"])


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sigterm_then_sigusr1_then_rerun_ends_bit_for_bit(cache_dir, reference_single, tmp_path, table):
    run_dir = tmp_path / "run"
    args = H.train_cmd(run_dir, SLOW)
    env = H.clean_env(cache_dir)
    with table.trial("SIGTERM (preemption)") as row:
        row["redone"] = _preempt(args, env, run_dir, signal.SIGTERM, 2, tmp_path / "term.log")
        assert row["redone"] == 0, "nothing done before the signal is lost"
    with table.trial("SIGUSR1 (SLURM pre-timeout signal)") as row:
        first_stop = H.checkpoint_iteration(run_dir)
        row["redone"] = _preempt(args, env, run_dir, signal.SIGUSR1, first_stop + 2, tmp_path / "usr1.log")
        assert row["redone"] == 0
        resumes = [r for r in H.records(run_dir) if r.get("event") == "resume"]
        assert resumes and resumes[-1]["iteration"] == first_stop, "the second run continued where the first stopped"
        done = H.run_to_end(args, env, tmp_path / "rerun.log")
        assert done.code == 0, done.stderr[-3000:]
        H.assert_same_end(run_dir, reference_single)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_launchers_own_handler_runs_after_the_checkpoint_is_on_disk(cache_dir, tmp_path, table):
    """submitit installs its requeue handler before training starts; ours answers first (checkpoint), then hands
    the signal on, so the launcher requeues a job whose last.ckpt is already written."""
    seen: list[tuple[str, int]] = []

    def launcher_handler(signum, frame):
        seen.append((signal.Signals(signum).name, H.checkpoint_iteration(tmp_path)))

    previous = signal.signal(signal.SIGTERM, launcher_handler)
    try:
        with table.trial("SIGTERM with a launcher's handler installed (submitit-style requeue)") as row:
            assert H.run_inproc(cache_dir, tmp_path, "trainer.debug.stop_at=3") == EXIT_PREEMPTED
            stopped = H.checkpoint_iteration(tmp_path)
            assert seen == [("SIGTERM", stopped)], "called once, after last.ckpt of the stop was written"
            row["redone"] = H.last_logged_update(tmp_path) - stopped
            assert signal.getsignal(signal.SIGTERM) is launcher_handler, "the launcher's handler is back in place"
    finally:
        signal.signal(signal.SIGTERM, previous)
