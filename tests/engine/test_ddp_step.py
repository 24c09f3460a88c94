"""The update with DDP (2 gloo ranks, torchrun) gives the losses of the update without it (1 rank) on the same batches,
on the eager, compiled (aot_eager) and captured paths; a NaN loss on the last rank only is skipped on every rank;
no update reads back to the host (tests/engine/ddp_step_check.py)."""
from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import REPO

TORCHRUN = str(Path(sys.executable).with_name("torchrun"))


def _records(world: int, cache_dir: Path, out: Path, env: dict[str, str]) -> dict:
    args = [TORCHRUN, "--standalone", f"--nproc_per_node={world}", str(REPO / "tests" / "engine" / "ddp_step_check.py"),
            str(out), str(cache_dir)]
    done = subprocess.run(args, env={**env, "GLOO_SOCKET_IFNAME": "lo"}, capture_output=True, text=True, timeout=570)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_ddp_on_two_ranks_gives_the_losses_of_one_rank_and_skips_a_nan_on_either(cache_dir, tmp_path, subprocess_env):
    one = _records(1, cache_dir, tmp_path / "one.json", subprocess_env)
    two = _records(2, cache_dir, tmp_path / "two.json", subprocess_env)
    for path in ("eager", "compiled", "captured"):
        (alone,), (rank0, rank1) = one[path], two[path]
        assert [r[3] for r in alone] == [r[3] for r in rank0] == [r[3] for r in rank1] == [0, 0, 1, 0], \
            f"{path}: update 3 skipped on every rank, the others not"
        assert math.isnan(alone[2][0]) and math.isnan(rank1[2][0]) and math.isfinite(rank0[2][0]), \
            f"{path}: the NaN was the last rank's alone"
        assert [r[2] for r in rank0] == [0, 0, 1, 0], f"{path}: rank 0 flagged update 3 bad (the flag is all-reduced)"
        for u in (0, 1, 3):
            assert rank0[u][0] == rank1[u][0] == alone[u][0], f"{path}: update {u + 1}'s loss differs with DDP"
