"""Must hold 4, NaN/Inf: a non-finite loss on any rank skips that update on every rank (one all-reduced flag),
counted and logged; trainer.max_nonfinite consecutive ones stop the run (exit 3) with one clear error and a
last.ckpt holding the last good state (resumable once the cause is fixed).

Single process: MOBILEMAMBA_FAULT_NAN_INPUT makes whole train batches NaN (activations, BN statistics, loss and
gradients all go non-finite: the hard case, since a skipped update must not leave NaN BN statistics behind).
torchrun: the config hook trainer.debug.nan_at / nan_rank makes rank 1's loss NaN.
"""
from __future__ import annotations

import math

import pytest
import torch

import fault_helpers as H
from mobilemamba.engine import EXIT_NONFINITE


def _finite(state: dict) -> bool:
    return all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_nan_batch_skips_the_update_counts_and_logs_it(cache_dir, tmp_path, monkeypatch, table):
    monkeypatch.setenv("MOBILEMAMBA_FAULT_NAN_INPUT", "3")
    with table.trial("NaN batch, single process (skip)") as row:
        assert H.run_inproc(cache_dir, tmp_path) == 0
        ck = H.load(tmp_path / "last.ckpt")
        assert ck["nonfinite"] == {"total": 1, "consecutive": 0}
        assert _finite(ck["model"]) and _finite(ck["ema"])
        events = [r for r in H.records(tmp_path) if r.get("event") == "nonfinite"]
        assert [(e["iteration"], e["consecutive"], e["total"]) for e in events] == [(3, 1, 1)]
        sites = [r for r in H.records(tmp_path) if r.get("event") == "nonfinite_site"]
        assert [(s["iteration"], s["inputs_finite"]) for s in sites] == [(3, False)], "the NaN came with the batch"
        skipped = {r["iteration"]: r["skipped"] for r in H.records(tmp_path) if r["kind"] == "train"}
        assert skipped == {i: i == 3 for i in range(1, H.TOTAL_UPDATES + 1)}
        row["redone"] = 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_nan_on_rank_1_only_is_skipped_on_rank_0_too(reference_ddp, table):
    """In the torchrun reference run rank 1 alone had a NaN loss at update 3; rank 0 (whose loss was finite)
    skipped the same update, counted it, and the job finished with finite weights."""
    with table.trial("NaN loss on one rank, torchrun 2 ranks (skip on all)") as row:
        train = {r["iteration"]: r for r in H.records(reference_ddp) if r["kind"] == "train"}
        assert math.isfinite(train[3]["loss"]), "rank 0's own loss was finite ..."
        assert train[3]["skipped"] is True, "... yet rank 0 skipped update 3 (the flag is all-reduced)"
        assert [i for i, r in train.items() if r["skipped"]] == [3]
        ck = H.load(reference_ddp / "last.ckpt")
        assert ck["nonfinite"]["total"] == 1 and _finite(ck["model"]) and _finite(ck["ema"])
        row["redone"] = 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_k_consecutive_nans_stop_with_one_error_and_the_last_good_state(cache_dir, tmp_path, capsys, monkeypatch, table):
    with table.trial("K consecutive NaN batches (stop, exit 3)") as row:
        stopped, all_skipped = tmp_path / "stopped", tmp_path / "all_skipped"
        monkeypatch.setenv("MOBILEMAMBA_FAULT_NAN_INPUT", "3,4")
        code = H.run_inproc(cache_dir, stopped, "trainer.max_nonfinite=2")
        assert code == EXIT_NONFINITE
        errors = H.error_lines(capsys.readouterr().err)
        assert len(errors) == 1 and "trainer.max_nonfinite=2" in errors[0] and "last good" in errors[0]
        ck = H.load(stopped / "last.ckpt")
        assert ck["iteration"] == 4 and ck["nonfinite"] == {"total": 2, "consecutive": 2}
        # the last good state = weights and BN statistics after update 2: a run skipping every later update ends there
        monkeypatch.setenv("MOBILEMAMBA_FAULT_NAN_INPUT", ",".join(str(i) for i in range(3, H.TOTAL_UPDATES + 1)))
        assert H.run_inproc(cache_dir, all_skipped, "trainer.max_nonfinite=100") == 0
        good = H.load(all_skipped / "last.ckpt")
        for key in ("model", "ema"):
            assert _finite(ck[key])
            assert all(torch.equal(ck[key][k], good[key][k]) for k in ck[key]), f"{key} is not the last good state"
        # once the cause is gone, the same run dir resumes from that state and finishes
        monkeypatch.delenv("MOBILEMAMBA_FAULT_NAN_INPUT")
        assert H.run_inproc(cache_dir, stopped, "trainer.max_nonfinite=2") == 0
        assert H.load(stopped / "last.ckpt")["iteration"] == H.TOTAL_UPDATES
        row["redone"] = 0
