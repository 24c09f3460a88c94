"""Must hold 2, preemption: SIGTERM or SIGUSR1 (what SLURM sends before it kills a job) → the run finishes the
update in flight, writes last.ckpt and exits with 75 (EX_TEMPFAIL, documented: "rerun to resume"); Ctrl-C (SIGINT)
the same, with exit code 130. The same command then continues from there, and the run ends bit for bit where an
uninterrupted run ends. SLURM, `timeout`, container runtimes and a terminal signal the whole process group: the
loader's worker processes (torch), DALI's pipelines and the prefetch thread, or torchrun, receive it too, and the
run must end just as it does when the trainer alone is signalled.
"""
from __future__ import annotations

import json
import signal

import pytest

import fault_helpers as H
from mobilemamba.engine import EXIT_INTERRUPTED, EXIT_PREEMPTED

SLOW = "trainer.debug.sleep=0.3"  # 0.3 s per update: room for the signal to land mid-run (numerics unchanged)
WORKERS = "data.workers=2"
DALI = ("data.loader=dali", "+data.dali_device=cpu", "+data.dali_threads=1")
EXIT_CODE = {signal.SIGTERM: EXIT_PREEMPTED, signal.SIGUSR1: EXIT_PREEMPTED, signal.SIGINT: EXIT_INTERRUPTED}


def _preempt(args, env, run_dir, sig: signal.Signals, after_update: int, log, *, group: bool = False,
             ranks: int = 1) -> int:
    """Start the run, send `sig` (to the trainer, or with `group` to its whole process group) once update
    `after_update` is logged; returns the updates redone on resume."""
    run = H.launch(args, env, log)
    H.wait_for(lambda: H.last_logged_update(run_dir) >= after_update, run, what=f"update {after_update}")
    run.signal_group(sig) if group else run.proc.send_signal(sig)
    done = run.wait()
    if ranks == 1:  # torchrun exits with its own code for a signal to itself; the ranks' orderly stops are below
        assert done.code == EXIT_CODE[sig], done.stderr[-3000:]
    assert "killed by signal" not in done.stderr, "a loader worker died of the signal"
    # rank 0 says it for all ranks (the others show only what concerns them alone); each rank ended on its own
    assert done.stderr.count(f"stopped by {sig.name}; last.ckpt written") == 1, done.stderr[-3000:]
    assert "forcefully exiting" not in done.stderr, "torchrun had to kill a rank that did not end"
    stopped = H.load(run_dir / "last.ckpt")
    preempted = [r for r in H.records(run_dir) if r.get("event") == "preempted"]
    assert preempted and preempted[-1]["signal"] == sig.name
    assert preempted[-1]["iteration"] == stopped["iteration"] >= after_update
    assert json.loads((run_dir / "run.json").read_text())["status"] == "preempted"
    H.assert_every_checkpoint_loads(run_dir)
    return H.last_logged_update(run_dir) - int(stopped["iteration"])


def _finishes_with_every_update_once(args, env, run_dir, log) -> None:
    """The rerun ends the run; each update is in the metrics once (with loader workers, augmentation draws come
    from the workers' own streams, so the result is not compared bit for bit with the 0-worker reference)."""
    done = H.run_to_end(args, env, log)
    assert done.code == 0, done.stderr[-3000:]
    assert [r["iteration"] for r in H.records(run_dir) if r["kind"] == "train"] == list(range(1, H.TOTAL_UPDATES + 1))
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["status"] == "finished" and summary["iterations"] == H.TOTAL_UPDATES


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


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_signal_to_the_process_group_with_loader_workers_stops_like_one_to_the_trainer(cache_dir, tmp_path, table):
    """torch loader with 2 worker processes: SIGTERM, then Ctrl-C on the rerun, to the group (SIGUSR1 takes the
    same path); then the rerun that finishes."""
    run_dir = tmp_path / "run"
    args = H.train_cmd(run_dir, SLOW, WORKERS)
    env = H.clean_env(cache_dir)
    rows = ((signal.SIGTERM, "SIGTERM to the process group, torch loader with 2 workers"),
            (signal.SIGINT, "Ctrl-C (SIGINT to the process group, exit 130), torch loader with 2 workers"))
    for sig, fault in rows:
        with table.trial(fault) as row:
            after = H.checkpoint_iteration(run_dir) + 1
            row["redone"] = _preempt(args, env, run_dir, sig, after, tmp_path / f"{sig.name}.log", group=True)
            assert row["redone"] == 0
    _finishes_with_every_update_once(args, env, run_dir, tmp_path / "rerun.log")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_signal_to_the_process_group_with_the_dali_loader_stops_like_one_to_the_trainer(cache_dir, tmp_path,
                                                                                            table):
    """DALI's CPU pipelines, SIGTERM with the batches handed over on the training thread, then Ctrl-C with the
    prefetch thread (the rerun may change data.dali_thread)."""
    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    run_dir = tmp_path / "run"
    env = H.clean_env(cache_dir)
    rows = ((signal.SIGTERM, "false", "SIGTERM to the process group, DALI CPU loader"),
            (signal.SIGINT, "true", "Ctrl-C (SIGINT to the process group, exit 130), DALI CPU loader + prefetch thread"))
    for sig, thread, fault in rows:
        with table.trial(fault) as row:
            args = H.train_cmd(run_dir, SLOW, *DALI, f"+data.dali_thread={thread}")
            after = H.checkpoint_iteration(run_dir) + 1
            row["redone"] = _preempt(args, env, run_dir, sig, after, tmp_path / f"{sig.name}.log", group=True)
            assert row["redone"] == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_signal_to_torchruns_process_group_stops_every_rank_like_one_to_the_trainer(cache_dir, tmp_path, table):
    """torchrun hands the signal on to each rank's own process group (the rank and its loader workers; SIGINT the
    same way); the ranks agree on the update to stop after, last.ckpt is written there and both ranks stop in order."""
    run_dir = tmp_path / "run"
    with table.trial("SIGTERM to torchrun's process group, 2 ranks with 1 loader worker each") as row:
        args = H.torchrun_cmd(run_dir, SLOW, "data.workers=1")
        row["redone"] = _preempt(args, H.clean_env(cache_dir), run_dir, signal.SIGTERM, 1, tmp_path / "term.log",
                                 group=True, ranks=2)
        assert row["redone"] == 0
