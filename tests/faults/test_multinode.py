"""The multi-node path as README gives it: two torchrun launches ("nodes", one process each here) with --nnodes=2 and a
c10d rendezvous, the same command on each, one shared run directory. A rank killed mid-run takes the job down; the same
two commands again resume from last.ckpt, and the job ends bit for bit where the single-node 2-rank job ends."""
from __future__ import annotations

import pytest

import fault_helpers as H

KILL_AT = 5  # rank 1 dies after update 5; last.ckpt holds update 4


def node_cmd(run_dir, port: int, rdzv_id: str) -> list[str]:
    return [H.TORCHRUN, "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=127.0.0.1:{port}", f"--rdzv_id={rdzv_id}", "--monitor-interval=0.2",
            str(H.REPO / "train.py"), *H.TINY, *H.DDP_EXTRA, f"hydra.run.dir={run_dir}"]


def run_both_nodes(run_dir, env, log_dir, tag: str) -> list[H.Finished]:
    """The README's command on each of the two "nodes", started together; both ends."""
    args = node_cmd(run_dir, H.free_port(), rdzv_id=f"multinode-{tag}")
    nodes = [H.launch(args, env, log_dir / f"{tag}_node{i}.log") for i in range(2)]
    return [node.wait() for node in nodes]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_nodes_train_into_one_run_dir_and_resume_after_a_kill(cache_dir, reference_ddp, tmp_path, table):
    run_dir = tmp_path / "run"
    with table.trial("kill -9 of one rank, 2 nodes x 1 rank (c10d rendezvous), rerun on both") as row:
        killed = run_both_nodes(run_dir, H.clean_env(cache_dir, MOBILEMAMBA_FAULT_KILL_AT=f"{KILL_AT}@1"), tmp_path, "kill")
        assert all(done.code != 0 for done in killed), "the lost rank ends the job on both nodes"
        assert H.checkpoint_iteration(run_dir) == 4 and H.last_logged_update(run_dir) <= KILL_AT
        H.assert_every_checkpoint_loads(run_dir)
        row["redone"] = H.last_logged_update(run_dir) - H.checkpoint_iteration(run_dir)
        rerun = run_both_nodes(run_dir, H.clean_env(cache_dir), tmp_path, "rerun")
        assert [done.code for done in rerun] == [0, 0], rerun[0].stderr[-3000:] + rerun[1].stderr[-3000:]
        resumes = [r for r in H.records(run_dir) if r.get("event") == "resume"]
        assert [r["iteration"] for r in resumes] == [4], "both nodes resumed from last.ckpt"
        H.assert_same_end(run_dir, reference_ddp)
