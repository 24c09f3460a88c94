"""Must hold 8, bad config: an unknown model or experiment, lr <= 0, a global batch the world size does not
divide, resuming into the run dir of another experiment → one clear error naming the key (exit 2), before any
work is done (no checkpoint, no metrics, the existing run untouched)."""
from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

import fault_helpers as H


def _refused(cache_dir, run_dir, capsys, *overrides: str) -> str:
    assert H.run_inproc(cache_dir, run_dir, *overrides) == 2
    errors = H.error_lines(capsys.readouterr().err)
    assert len(errors) == 1, errors
    assert not (run_dir / "last.ckpt").exists() and not (run_dir / "metrics.jsonl").exists(), "before any work"
    return errors[0]


CASES = [
    ("unknown model", ["model.name=mobilemamba_x9"], "model.name"),
    ("lr = 0", ["optim.lr=0"], "optim.lr"),
    ("lr < 0", ["optim.lr=-0.001"], "optim.lr"),
    ("batch size 0", ["data.batch_size=0"], "data.batch_size"),
]


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("name, overrides, key", CASES, ids=[c[0] for c in CASES])
def test_a_bad_value_is_one_error_naming_the_key(name, overrides, key, cache_dir, tmp_path, capsys, table):
    with table.trial(f"bad config: {name}"):
        line = _refused(cache_dir, tmp_path, capsys, *overrides)
        assert line.startswith(f"error: {key}"), line


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_global_batch_the_world_size_does_not_divide_is_refused(cache_dir, tmp_path, capsys, monkeypatch, table):
    """Checked before joining the process group: WORLD_SIZE=4 alone is enough to refuse (no rendezvous happens)."""
    monkeypatch.setenv("WORLD_SIZE", "4")
    with table.trial("bad config: global batch not divisible by world size"):
        line = _refused(cache_dir, tmp_path, capsys, "trainer.global_batch=10")
        assert "trainer.global_batch=10" in line and "world size 4" in line


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_an_unknown_experiment_is_one_error_naming_it(cache_dir, tmp_path, table):
    with table.trial("bad config: unknown experiment"):
        done = subprocess.run([H.PY, str(H.REPO / "train.py"), "experiment=no_such_thing", f"hydra.run.dir={tmp_path}"],
                              cwd=H.REPO, env=H.clean_env(cache_dir), capture_output=True, text=True, timeout=120)
        assert done.returncode != 0
        assert "experiment/no_such_thing" in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "last.ckpt").exists()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_resuming_into_the_run_dir_of_another_experiment_is_refused(cache_dir, reference_single, tmp_path, capsys, table):
    with table.trial("bad config: resume into another experiment's run dir"):
        run_dir = tmp_path / "run"
        shutil.copytree(reference_single, run_dir)
        before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.iterdir() if p.is_file()}
        assert H.run_inproc(cache_dir, run_dir, "name=another_experiment") == 2
        errors = H.error_lines(capsys.readouterr().err)
        assert len(errors) == 1 and errors[0].startswith("error: name:") and "another_experiment" in errors[0], errors
        after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run_dir.iterdir() if p.is_file()}
        assert after == before, "the existing run is untouched"
