"""Must hold 5, disk trouble: a full disk (ENOSPC) or a read-only / unwritable directory (EROFS, EACCES) during a
checkpoint write → one clear error (exit 1), the previous checkpoint intact and readable, no temporary file left;
once the disk is fixed, the same command resumes from that checkpoint.

The error is injected half-way through the write by MOBILEMAMBA_FAULT_SAVE_ERROR=N:ERRNO (writes of update >= N).
"""
from __future__ import annotations

import pytest

import fault_helpers as H

FAIL_FROM = 5  # the periodic checkpoint of update 6 fails; last.ckpt keeps update 4


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("errno_name, words", [("ENOSPC", "No space left on device"), ("EROFS", "Read-only file system"),
                                               ("EACCES", "Permission denied")])
def test_a_failed_checkpoint_write_is_one_error_and_keeps_the_previous_one(
        errno_name, words, cache_dir, tmp_path, capsys, monkeypatch, table):
    with table.trial(f"checkpoint write fails ({errno_name})") as row:
        monkeypatch.setenv("MOBILEMAMBA_FAULT_SAVE_ERROR", f"{FAIL_FROM}:{errno_name}")
        assert H.run_inproc(cache_dir, tmp_path) == 1
        errors = H.error_lines(capsys.readouterr().err)
        assert len(errors) == 1, errors
        assert "last.ckpt" in errors[0] and words in errors[0] and "previous checkpoint is intact" in errors[0]
        assert H.assert_every_checkpoint_loads(tmp_path) == ["best.ckpt", "last.ckpt"]
        assert H.checkpoint_iteration(tmp_path) == FAIL_FROM - 1
        assert H.stale_tmp_files(tmp_path) == [], "the half-written temporary file was removed"
        row["redone"] = H.last_logged_update(tmp_path) - H.checkpoint_iteration(tmp_path)
        monkeypatch.delenv("MOBILEMAMBA_FAULT_SAVE_ERROR")
        assert H.run_inproc(cache_dir, tmp_path) == 0
        assert H.checkpoint_iteration(tmp_path) == H.TOTAL_UPDATES
