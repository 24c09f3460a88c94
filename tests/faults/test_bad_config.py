"""Must hold 8, bad config: an unknown model or experiment, a misspelled or unknown key, an unwritable run dir,
lr <= 0, a warm-up longer than the run, a global batch the world size does not divide, resuming into the run dir
of another experiment → one clear error naming the key (exit 2), before any work is done (no checkpoint, no
metrics, the existing run untouched)."""
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
    ("teacher of another class count", ["distill.kind=soft", "distill.teacher=resnet18"],
     "distill.teacher 'resnet18' predicts 1000 classes, the student data.num_classes=4"),
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


FIRST_ERRORS = [  # what a new user types first, as train.py gets it: (case, overrides, the one line expected)
    ("unknown experiment", ["experiment=no_such_thing"],
     "error: experiment=no_such_thing: no such config in conf/experiment/; one of cifar10_b1, "),
    ("misspelled key", ["experiment=smoke", "trainer.epoch=3"],
     "error: trainer.epoch: no such config key (did you mean trainer.epochs?)"),
    ("misspelled key added with +", ["experiment=smoke", "+trainer.epoch=3"],
     "error: trainer.epoch: no such config key (did you mean trainer.epochs?)"),
    ("unwritable run directory", ["experiment=smoke", "hydra.run.dir={tmp}/a_file/run"],
     "error: hydra.run.dir: cannot create {tmp}/a_file/run: Not a directory; choose a writable one"),
    ("shortened recipe keeps its warm-up", ["experiment=mobilemamba_t2", "trainer.epochs=2"],
     "error: sched.warmup_epochs=20 is longer than the run (trainer.epochs=2): the lr would never leave warm-up"),
    ("trainer.epochs with phases", ["experiment=mobilemamba_t2_kd_then_extend", "trainer.epochs=2"],
     "error: trainer.epochs=2 is not used: trainer.phases decide the run's length (1300 epochs); set the length "
     "of each phase instead, e.g. trainer.phases.0.epochs=1000 trainer.phases.1.epochs=300"),
]


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("name, overrides, line", FIRST_ERRORS, ids=[c[0] for c in FIRST_ERRORS])
def test_a_first_mistake_is_one_line_and_exit_2(name, overrides, line, cache_dir, tmp_path, table):
    """Before any work and whatever finds it (Hydra composing the config, or the engine): exit 2 and one line,
    nothing else on stdout or stderr; Hydra's `+key=` suggestion does not sneak an unknown key in."""
    (tmp_path / "a_file").write_text("")
    overrides = [o.format(tmp=tmp_path) for o in overrides]
    if not any(o.startswith("hydra.run.dir=") for o in overrides):
        overrides.append(f"hydra.run.dir={tmp_path / 'run'}")
    with table.trial(f"bad config: {name}"):
        done = subprocess.run([H.PY, str(H.REPO / "train.py"), *overrides], cwd=H.REPO, env=H.clean_env(cache_dir),
                              capture_output=True, text=True, timeout=170)
        output = (done.stdout + done.stderr).strip().splitlines()
        assert done.returncode == 2 and len(output) == 1, output
        assert output[0].startswith(line.format(tmp=tmp_path)), output[0]
        assert not (tmp_path / "run" / "last.ckpt").exists()


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
