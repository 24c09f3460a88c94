"""Must hold 3, elastic restart: under `torchrun --max-restarts=1` a rank that crashes brings the whole group
back from the last checkpoint, with no manual step, and the job ends where an uninterrupted job ends."""
from __future__ import annotations

import pytest

import fault_helpers as H
from mobilemamba.engine.faults import CRASH_EXIT_CODE

CRASH_AT = 5  # rank 1 dies after update 5; last.ckpt holds update 4


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_rank_that_dies_is_restarted_from_the_last_checkpoint(cache_dir, reference_ddp, tmp_path, table):
    run_dir = tmp_path / "run"
    marker = tmp_path / "crashed-once"
    env = H.clean_env(cache_dir, MOBILEMAMBA_FAULT_EXIT_AT=f"{CRASH_AT}@1", MOBILEMAMBA_FAULT_ONCE=str(marker))
    with table.trial("rank crash under torchrun --max-restarts=1") as row:
        done = H.run_to_end(H.torchrun_cmd(run_dir, max_restarts=1), env, tmp_path / "elastic.log")
        assert done.code == 0, done.stderr[-4000:]
        assert marker.exists(), "the crash did happen (once)"
        assert f"exitcode: {CRASH_EXIT_CODE}" in done.stderr or "restart" in done.stderr.lower()
        resumes = [r for r in H.records(run_dir) if r.get("event") == "resume"]
        assert len(resumes) == 1 and resumes[0]["iteration"] == 4, "the restarted group resumed from last.ckpt"
        row["redone"] = CRASH_AT - resumes[0]["iteration"]
        H.assert_every_checkpoint_loads(run_dir)
        H.assert_same_end(run_dir, reference_ddp)
