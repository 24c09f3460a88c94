"""The loop's behaviour: phases back to back, non-finite updates skipped everywhere, K in a row stop the run."""
from __future__ import annotations

import json
import math

import pytest
import torch

from mobilemamba.engine import EXIT_NONFINITE
from mobilemamba.engine.preempt import EXIT_PREEMPTED

from .helpers import load, run

TWO_PHASES = (
    "trainer.phases=[{name: first, epochs: 1}, "
    "{name: second, epochs: 1, distill: none, overrides: {lr_scale: 0.5, schedule: restart, warmup_epochs: 0}}]"
)


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_phases_run_back_to_back_with_state_carried(cache_dir, tmp_path):
    assert run(cache_dir, tmp_path, TWO_PHASES) == 0
    recs = _records(tmp_path)
    phases = [r for r in recs if r["kind"] == "event" and r["event"] == "phase"]
    assert [(p["phase"], p["epoch"], p["iteration"]) for p in phases] == [("first", 0, 0), ("second", 1, 3)]
    train = {r["iteration"]: r for r in recs if r["kind"] == "train"}
    assert [train[i]["phase"] for i in (1, 3, 4, 6)] == ["first", "first", "second", "second"]
    # phase 2 restarts a cosine at half the lr without warmup: its first update runs at 0.5 x 2e-3
    assert train[4]["lr"] == pytest.approx(0.5 * (2e-5 + 0.5 * (2e-3 - 2e-5) * (1 + math.cos(math.pi * 1 / 3))))
    ck = load(tmp_path / "last.ckpt")
    # the optimizer was carried over, not rebuilt: Adam's step counter covers both phases
    assert all(int(s["step"]) == 6 for s in ck["optimizer"]["state"].values())
    assert ck["phase"] == 2 and ck["epoch"] == 2
    assert {r["epoch"] for r in recs if r["kind"] == "eval"} == {1, 2}  # a phase end is always evaluated


@pytest.mark.slow
def test_resume_lands_inside_the_second_phase(cache_dir, tmp_path):
    assert run(cache_dir, tmp_path, TWO_PHASES, "trainer.debug.stop_at=4") == EXIT_PREEMPTED
    ck = load(tmp_path / "last.ckpt")
    assert (ck["phase"], ck["phase_name"], ck["epoch"], ck["batch"], ck["iteration"]) == (1, "second", 1, 2, 5)
    assert run(cache_dir, tmp_path, TWO_PHASES, "trainer.debug.stop_at=4") == 0
    resumed = [r for r in _records(tmp_path) if r["kind"] == "event" and r["event"] in ("resume", "phase")]
    # one 'phase' record per phase start: resuming inside 'second' logs only the resume
    assert [(r["event"], r.get("phase")) for r in resumed] == [("phase", "first"), ("phase", "second"), ("resume", 1)]


@pytest.mark.slow
def test_a_nonfinite_loss_skips_the_update_and_is_counted(cache_dir, tmp_path):
    assert run(cache_dir, tmp_path, "trainer.debug.nan_at=[2]") == 0
    recs = _records(tmp_path)
    bad = [r for r in recs if r["kind"] == "event" and r["event"] == "nonfinite"]
    assert [(r["iteration"], r["consecutive"]) for r in bad] == [(2, 1)]
    assert [r["skipped"] for r in recs if r["kind"] == "train"][:3] == [False, True, False]
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["nonfinite_total"] == 1 and summary["status"] == "finished"
    ck = load(tmp_path / "last.ckpt")
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_k_consecutive_nonfinite_updates_stop_the_run_after_a_checkpoint(cache_dir, tmp_path, capsys):
    code = run(cache_dir, tmp_path, "trainer.debug.nan_at=[2,3]", "trainer.max_nonfinite=2")
    assert code == EXIT_NONFINITE
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: trainer.max_nonfinite=2") and "last.ckpt" in err
    ck = load(tmp_path / "last.ckpt")
    assert ck["iteration"] == 3 and ck["nonfinite"]["consecutive"] == 2
    # the two skipped updates left the weights as update 1 made them: Adam's step counter stayed at 1
    assert all(int(s["step"]) == 1 for s in ck["optimizer"]["state"].values())
    assert all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_last_ckpt_is_written_every_n_updates_and_every_epoch(cache_dir, tmp_path, monkeypatch):
    import mobilemamba.engine.trainer as trainer_mod

    saves = []
    real = trainer_mod.atomic_save
    monkeypatch.setattr(trainer_mod, "atomic_save", lambda obj, path: (saves.append((path.name, obj["iteration"])), real(obj, path)))
    assert run(cache_dir, tmp_path, "trainer.ckpt_every_iters=2") == 0
    # updates 1..6, epochs end at 3 and 6; every 2 updates inside an epoch (2, 4) plus every epoch end
    assert [it for name, it in saves if name == "last.ckpt"] == [2, 3, 4, 6]
    assert not list(tmp_path.glob(".*tmp*")), "no temporary checkpoint files are left behind"


KD_THEN_PLAIN = (
    "trainer.phases=[{name: kd, epochs: 1, distill: {kind: soft, teacher: resnet10t, img_size: 32, num_classes: 4}}, "
    "{name: plain, epochs: 1, distill: none}]"
)


@pytest.mark.slow
def test_distillation_phase_then_plain_phase_with_resume_inside_kd(cache_dir, tmp_path):
    """The mission's flow: KD phase, then an extended phase without the teacher; resume restores the teacher."""
    assert run(cache_dir, tmp_path, KD_THEN_PLAIN, "trainer.debug.stop_at=1") == EXIT_PREEMPTED
    ck = load(tmp_path / "last.ckpt")
    assert ck["phase_name"] == "kd" and ck["teacher"]["name"] == "resnet10t" and ck["teacher"]["weights_sha256"]
    assert run(cache_dir, tmp_path, KD_THEN_PLAIN, "trainer.debug.stop_at=1") == 0
    train = [r for r in _records(tmp_path) if r["kind"] == "train"]
    assert all(r["kd"] > 0 for r in train if r["phase"] == "kd")
    assert all(r["kd"] == 0 for r in train if r["phase"] == "plain")
    assert {r["phase"] for r in train} == {"kd", "plain"}
    assert load(tmp_path / "last.ckpt")["teacher"] is None  # the plain phase has no teacher


@pytest.mark.slow
def test_gradient_accumulation_counts_updates_and_the_global_batch(cache_dir, tmp_path):
    assert run(cache_dir, tmp_path, "trainer.accum_steps=2", "trainer.max_iters_per_epoch=4", "trainer.epochs=1") == 0
    summary = json.loads((tmp_path / "run.json").read_text())
    assert summary["global_batch"] == 16 and summary["iterations"] == 2  # 4 batches of 8 = 2 updates of 16
    assert summary["lr"] == pytest.approx(2e-3)  # smoke sets an absolute lr
    ck = load(tmp_path / "last.ckpt")
    assert all(int(s["step"]) == 2 for s in ck["optimizer"]["state"].values())


@pytest.mark.slow
def test_bf16_autocast_and_channels_last_run_on_cpu(cache_dir, tmp_path):
    assert run(cache_dir, tmp_path, "trainer.amp=bf16", "trainer.channels_last=true", "trainer.epochs=1",
               "trainer.deterministic=false") == 0
    recs = [r for r in _records(tmp_path) if r["kind"] == "train"]
    assert recs and all(math.isfinite(r["loss"]) for r in recs)
    assert load(tmp_path / "last.ckpt")["scaler"] is None  # bf16 needs no GradScaler


@pytest.mark.slow
@pytest.mark.parametrize("how", ["true", "regional"])
def test_a_compiled_train_model_computes_the_eager_losses(cache_dir, tmp_path, how):
    """trainer.compile (the whole model, or each block) is the same function: the same losses update by update
    (aot_eager: the traced graphs run by eager kernels, so no C++ toolchain is needed on the CPU)."""
    losses = {}
    for name, extra in (("eager", ()), ("compiled", (f"trainer.compile={how}", "trainer.compile_backend=aot_eager"))):
        run_dir = tmp_path / name
        assert run(cache_dir, run_dir, "trainer.epochs=1", *extra) == 0
        losses[name] = [r["loss"] for r in _records(run_dir) if r["kind"] == "train"]
    assert len(losses["compiled"]) == len(losses["eager"]) == 3
    assert losses["compiled"] == pytest.approx(losses["eager"], rel=1e-4)


def test_an_unknown_compile_setting_is_a_config_error(cache_dir, tmp_path):
    from mobilemamba.engine.config import ConfigError, validate_train_config

    from .helpers import compose_cfg

    for override, key in (("trainer.compile=fast", "trainer.compile"), ("trainer.compile_mode=turbo", "trainer.compile_mode")):
        with pytest.raises(ConfigError, match=key):
            validate_train_config(compose_cfg(cache_dir, override), check_paths=False)


@pytest.mark.slow
def test_the_dali_loader_with_its_prefetch_thread_trains_resumes_inside_an_epoch_and_leaves_no_thread(
        cache_dir, tmp_path):  # fmt: skip
    """DALI on the CPU with the thread on (on CUDA it is the default): a preemption mid-epoch abandons the train
    iterator; its thread must end with it, and the rerun finishes the epoch from the right batch."""
    import threading

    pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")
    dali = ("data.loader=dali", "+data.dali_device=cpu", "+data.dali_thread=true", "+data.dali_threads=1")
    assert run(cache_dir, tmp_path, *dali, "trainer.debug.stop_at=1") == EXIT_PREEMPTED  # handled after update 2
    ck = load(tmp_path / "last.ckpt")
    assert (ck["epoch"], ck["batch"], ck["iteration"]) == (0, 2, 2)
    assert run(cache_dir, tmp_path, *dali) == 0
    assert [r["iteration"] for r in _records(tmp_path) if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    import gc

    gc.collect()
    assert not [t for t in threading.enumerate() if t.name == "mobilemamba-data-prefetch"]


@pytest.mark.slow
def test_curves_of_a_short_run_have_a_point_per_update_and_the_epoch_means(cache_dir, tmp_path, one_thread):
    """30 updates with the default trainer.log_every=50: the loss and lr curves still get every update, the loss
    panel the mean of each epoch and the val loss, the top-1 panel every evaluation."""
    from mobilemamba.engine.runlog import curve_data, read_metrics

    assert run(cache_dir, tmp_path, "trainer.epochs=3", "trainer.max_iters_per_epoch=10", "trainer.log_every=50") == 0
    data = curve_data(read_metrics(tmp_path))
    assert data["train_loss"][0] == data["lr"][0] == list(range(1, 31))
    assert data["epoch_train_loss"][0] == data["val_loss"][0] == [10, 20, 30]
    means = [r["train_loss"] for r in _records(tmp_path) if r.get("event") == "epoch_end"]
    assert data["epoch_train_loss"][1] == means
    assert means[0] == pytest.approx(sum(data["train_loss"][1][:10]) / 10), "the mean of every update of the epoch"
    assert data["top1"][0] == data["ema_top1"][0] == [1, 2, 3]
    assert (tmp_path / "curves.png").stat().st_size > 0


@pytest.mark.slow
def test_run_json_names_the_teacher_of_each_phase_also_after_a_resume_past_it(cache_dir, tmp_path, one_thread):
    """Stopped in the plain phase and resumed: the resumed launch never builds the teacher, run.json still names it."""
    assert run(cache_dir, tmp_path, KD_THEN_PLAIN, "trainer.debug.stop_at=4") == EXIT_PREEMPTED
    assert load(tmp_path / "last.ckpt")["phase_name"] == "plain"
    assert run(cache_dir, tmp_path, KD_THEN_PLAIN) == 0
    summary = json.loads((tmp_path / "run.json").read_text())
    kd, plain = summary["phases"]
    assert kd["teacher"]["name"] == "resnet10t" and kd["teacher"]["weights_sha256"]
    assert plain["teacher"] is None and summary["teacher"] == kd["teacher"]
