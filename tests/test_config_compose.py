"""Every experiment composes to the published recipe (spec §2) and bad values fail with one clear error."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf, open_dict

from mobilemamba.engine.config import ConfigError, lr_plan, resolve_phases, should_evaluate, validate_train_config

CONF = Path(__file__).resolve().parents[1] / "conf"
VARIANTS = {  # variant: (img_size, drop_path)
    "t2": (192, 0.0), "t4": (192, 0.0), "s6": (224, 0.0), "b1": (256, 0.03), "b2": (384, 0.03), "b4": (512, 0.03),
}
EXPERIMENTS = [f"mobilemamba_{v}" for v in VARIANTS] + [f"mobilemamba_{v}_kd" for v in VARIANTS]


def compose_train(*overrides: str, return_hydra: bool = False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=return_hydra)


def test_every_experiment_file_is_checked():
    on_disk = {p.stem for p in (CONF / "experiment").glob("mobilemamba_*.yaml")} - {"mobilemamba_t2_kd_then_extend"}
    assert on_disk == set(EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_composes_to_the_recipe(experiment):
    variant = experiment.split("_")[1]
    kd = experiment.endswith("_kd")
    cfg = compose_train(f"experiment={experiment}")
    img, dp = VARIANTS[variant]
    assert cfg.name == experiment
    assert cfg.model.name == f"mobilemamba_{variant}"
    assert cfg.model.img_size == img and cfg.model.drop_path_rate == pytest.approx(dp)
    # global batch 1024 = 8 GPUs x 128 -> lr 3e-3, warmup from 3e-6, cosine down to 3e-5
    assert cfg.data.batch_size == 128 and cfg.trainer.accum_steps == 1
    plan = lr_plan(cfg, world_size=8)
    assert plan.global_batch == 1024
    assert plan.lr == pytest.approx(3e-3) and plan.warmup_lr == pytest.approx(3e-6) and plan.min_lr == pytest.approx(3e-5)
    assert list(cfg.optim.betas) == [0.9, 0.999] and cfg.optim.eps == 1e-8 and cfg.optim.weight_decay == 0.05
    assert cfg.sched.name == "cosine" and cfg.sched.warmup_epochs == 20 and cfg.sched.warmup_prefix is False
    t = cfg.trainer
    assert t.amp == "fp16" and t.grad_clip == 5.0 and t.ema and t.ema_decay == 0.9998
    assert t.eval_every == 5 and t.eval_every_from == 200 and not t.sync_bn
    a = cfg.aug
    assert a.auto_augment == "rand-m9-mstd0.5-inc1" and a.reprob == 0.25 and a.remode == "pixel" and a.recount == 1
    assert (a.mixup, a.cutmix, a.mixup_prob, a.mixup_switch_prob, a.mixup_mode) == (0.8, 1.0, 1.0, 0.5, "batch")
    assert a.smoothing == 0.1 and a.train_interpolation == "random" and a.color_jitter == 0.4
    assert cfg.data.eval_batch_size == 125
    phases = resolve_phases(cfg)
    assert len(phases) == 1  # the † recipe is ONE from-scratch phase with KD throughout
    assert phases[0].epochs == (1000 if kd else 300)
    if kd:
        d = phases[0].distill
        assert (d["kind"], d["teacher"], d["alpha"], d["tau"]) == ("soft", "tresnet_v2_l", 5.0, 1.0)
    else:
        assert phases[0].distill is None


def test_schedule_is_per_iteration_with_20_warmup_epochs():
    """t_initial = epochs x 1251, warmup_t = 20 x 1251; the reference log: lr(50) = 9e-6, +6e-6 per 50 its."""
    import torch
    from mobilemamba.engine.optim import PhasedSchedule

    cfg = compose_train("experiment=mobilemamba_s6")
    plan = lr_plan(cfg, world_size=8)
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=plan.lr)
    sched = PhasedSchedule(opt, cfg.sched, plan, resolve_phases(cfg), updates_per_epoch=1251)
    timm_sched = sched.scheduler_for(0)
    assert timm_sched.t_initial == 300 * 1251 and timm_sched.warmup_t == 20 * 1251
    assert timm_sched.warmup_lr_init == pytest.approx(3e-6) and timm_sched.lr_min == pytest.approx(3e-5)
    sched.step_update(50, 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(9e-6, rel=3e-3)  # the log prints 3 digits
    sched.step_update(100, 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(15e-6, rel=3e-3)
    # warmup_prefix=False: after warmup the cosine is already 20/300 of the way down
    sched.step_update(20 * 1251, 0)
    expected = 3e-5 + 0.5 * (3e-3 - 3e-5) * (1 + math.cos(math.pi * 20 / 300))
    assert opt.param_groups[0]["lr"] == pytest.approx(expected, rel=1e-9)
    sched.step_update(300 * 1251, 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(3e-5, rel=1e-6)


def test_every_teacher_knob_the_readme_lists_is_settable_from_the_command_line():
    from distill.config import DEFAULTS

    cfg = compose_train("experiment=mobilemamba_s6_kd", "distill.compile=true", "distill.num_classes=100",
                        "distill.img_size=256", "distill.fuse_bn=false")  # no '+': the keys are in the group's file
    assert set(cfg.distill) == set(DEFAULTS)
    d = resolve_phases(cfg)[0].distill
    assert (d["compile"], d["num_classes"], d["img_size"], d["fuse_bn"]) == (True, 100, 256, False)


def test_kd_then_extend_is_two_phases_with_state_carried():
    cfg = compose_train("experiment=mobilemamba_t2_kd_then_extend")
    kd, extend = resolve_phases(cfg)
    assert (kd.name, kd.epochs, kd.distill["kind"]) == ("distill", 1000, "soft")
    assert (extend.name, extend.epochs, extend.distill) == ("extend", 300, None)
    assert extend.schedule == "restart" and extend.lr_scale == 0.1 and extend.warmup_epochs == 0


def test_eval_cadence_every_5_then_every_epoch_from_200():
    evaluated = [e for e in range(1, 301) if should_evaluate(e, e == 300, 5, 200)]
    assert evaluated[:3] == [5, 10, 15] and 199 not in evaluated and 200 in evaluated and 201 in evaluated
    assert len(evaluated) == 39 + 101  # 5..195 step 5, then 200..300


def test_eval_resize_is_size_over_0875_bicubic():
    """The variant's eval transform: Resize(int(size / 0.875), bicubic) then CenterCrop(size)."""
    import mobilemamba
    from mobilemamba.data.torch_loader import eval_resize_size

    pc = mobilemamba.create_model("mobilemamba_t2", num_classes=10).pretrained_cfg
    assert pc["crop_pct"] == 0.875 and pc["interpolation"] == "bicubic" and pc["input_size"] == (3, 192, 192)
    assert [eval_resize_size(s, 0.875) for s in (192, 224, 256, 384, 512)] == [219, 256, 292, 438, 585]


def test_run_dir_is_one_deterministic_dir_per_experiment(monkeypatch):
    """Not a timestamp: every torchrun rank resolves the same dir, and a rerun finds its last.ckpt."""
    monkeypatch.delenv("MOBILEMAMBA_RUN_DIR", raising=False)
    cfg = compose_train("experiment=mobilemamba_b1", return_hydra=True)
    assert OmegaConf.select(cfg, "hydra.run.dir") == "outputs/mobilemamba_b1"
    monkeypatch.setenv("MOBILEMAMBA_RUN_DIR", "/scratch/job42")
    cfg = compose_train("experiment=mobilemamba_b1", return_hydra=True)
    assert OmegaConf.select(cfg, "hydra.run.dir") == "/scratch/job42"


def test_slurm_launcher_runs_one_task_per_gpu():
    cfg = compose_train("experiment=mobilemamba_s6", "hydra/launcher=slurm", return_hydra=True)
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.tasks_per_node == launcher.gpus_per_node == 8


# ------------------------------------------------------------------------------------------------ errors
def _error(*overrides: str, world_size: int = 1, check_paths: bool = False) -> str:
    cfg = compose_train(*overrides)
    with pytest.raises(ConfigError) as info:
        validate_train_config(cfg, world_size, check_paths=check_paths)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_unknown_model_is_named():
    assert "model.name" in _error("experiment=smoke", "model.name=mobilemamba_t9")


@pytest.mark.parametrize("lr", ["0", "-1e-3"])
def test_non_positive_lr_is_named(lr):
    assert "optim.lr" in _error("experiment=smoke", f"optim.lr={lr}")
    assert "optim.lr_base" in _error("experiment=mobilemamba_t2", f"optim.lr_base={lr}")


@pytest.mark.parametrize("value", ["-1", "2.5", "lots"])
def test_a_bad_profile_count_is_named(value):
    assert _error("experiment=smoke", f"trainer.profile={value}").startswith(
        "trainer.profile must be a non-negative integer")


def test_global_batch_not_divisible_by_world_size_is_named():
    msg = _error("experiment=mobilemamba_t2", "trainer.global_batch=1000", world_size=3)
    assert "trainer.global_batch" in msg and "world size 3" in msg


def test_global_batch_sets_the_per_gpu_batch():
    cfg = compose_train("experiment=mobilemamba_t2", "trainer.global_batch=1024")
    validate_train_config(cfg, 4, check_paths=False)
    assert cfg.data.batch_size == 256 and lr_plan(cfg, 4).lr == pytest.approx(3e-3)


def test_missing_dataset_path_is_named(tmp_path):
    msg = _error("experiment=mobilemamba_t2", f"data.root={tmp_path / 'nope'}", check_paths=True)
    assert msg.startswith("data.root") and "does not exist" in msg and "pass data.root=" in msg


def test_an_unset_class_count_says_how_to_set_it(tmp_path):
    """data=folder leaves the class count to the user (`???`): the error names the key and the override."""
    msg = _error("experiment=mobilemamba_t2", "data=folder", f"data.root={tmp_path}")
    assert msg == "data.num_classes is not set (pass data.num_classes=N)"


def test_bad_phase_is_named():
    assert "trainer.phases[0].epochs" in _error("experiment=smoke", "trainer.phases=[{name: a, epochs: 0}]")


def test_unknown_experiment_fails_clearly():
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="experiment"):
        compose_train("experiment=mobilemamba_t9")


# ------------------------------------------------------------------------------------------ warm-up and run length
def test_a_warmup_longer_than_the_run_is_an_error_naming_both_keys():
    """A shortened published recipe keeps its 20 warm-up epochs: the lr would never leave warm-up."""
    msg = _error("experiment=mobilemamba_t2", "trainer.epochs=2")
    assert msg.startswith("sched.warmup_epochs=20 is longer than the run (trainer.epochs=2)"), msg
    assert "e.g. sched.warmup_epochs=0.67" in msg


def test_a_restarted_phase_is_checked_against_its_own_warmup_and_length():
    msg = _error("experiment=mobilemamba_t2_kd_then_extend", "trainer.phases.1.epochs=2",
                 "trainer.phases.1.overrides.warmup_epochs=3")
    assert msg.startswith("trainer.phases.1.overrides.warmup_epochs=3 is longer than the run "
                          "(trainer.phases.1.epochs=2)"), msg
    msg = _error("experiment=smoke", "trainer.phases=[{name: a, epochs: 1}, {name: b, epochs: 1}]",
                 "sched.warmup_epochs=3")
    assert "(trainer.phases.0.epochs=1 + trainer.phases.1.epochs=1)" in msg, "continued phases share one warm-up"


def test_a_warmup_over_a_third_of_the_run_is_a_warning():
    cfg = compose_train("experiment=mobilemamba_t2", "trainer.epochs=50")
    assert validate_train_config(cfg, 8, check_paths=False) == [
        "sched.warmup_epochs=20 is longer than a third of the run (trainer.epochs=50): most of it is spent warming up"]


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_no_experiment_warms_up_for_more_than_a_third_of_its_run(experiment):
    cfg = compose_train(f"experiment={experiment}")
    assert validate_train_config(cfg, 8, check_paths=False) == []


def test_the_smoke_run_shortened_to_one_epoch_has_no_warning():
    assert validate_train_config(compose_train("experiment=smoke", "trainer.epochs=1"), 1, check_paths=False) == []


def test_trainer_epochs_with_phases_is_an_error_that_shows_how_to_set_each_phase():
    msg = _error("experiment=mobilemamba_t2_kd_then_extend", "trainer.epochs=2")
    assert msg == ("trainer.epochs=2 is not used: trainer.phases decide the run's length (1300 epochs); set the "
                   "length of each phase instead, e.g. trainer.phases.0.epochs=1000 trainer.phases.1.epochs=300")
    cfg = compose_train("experiment=mobilemamba_t2_kd_then_extend", "trainer.phases.0.epochs=3",
                        "trainer.phases.1.epochs=1", "sched.warmup_epochs=1")
    validate_train_config(cfg, 8, check_paths=False)
    assert [ph.epochs for ph in resolve_phases(cfg)] == [3, 1]


# ------------------------------------------------------------------------------------------ distillation keys
def test_every_distill_option_lists_every_distill_key():
    from distill.config import DEFAULTS

    for option in sorted((CONF / "distill").glob("*.yaml")):
        assert set(OmegaConf.load(option)) == set(DEFAULTS), option.name


@pytest.mark.parametrize("experiment", ["smoke", "mobilemamba_t2", "cifar10_t2"])
def test_distillation_is_switched_on_from_the_command_line_of_any_experiment(experiment):
    cfg = compose_train(f"experiment={experiment}", "distill.kind=soft", "distill.teacher=resnet18",
                        "distill.num_classes=10", "distill.img_size=64", "distill.teacher_kwargs={drop_rate: 0.1}")
    (phase,) = resolve_phases(cfg)
    assert phase.distill["kind"] == "soft" and phase.distill["teacher"] == "resnet18"
    assert phase.distill["num_classes"] == 10 and phase.distill["teacher_kwargs"] == {"drop_rate": 0.1}


# ------------------------------------------------------------------------------------------ unknown keys
def _known(config_name: str, *overrides: str):
    from mobilemamba.engine.config import known_keys

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides), return_hydra_config=True)
    groups = [g for g in cfg.hydra.runtime.choices if "/" not in g]
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, known_keys([CONF], config_name, groups)


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_uses_only_keys_the_config_groups_define(experiment):
    from mobilemamba.engine.config import check_known_keys

    check_known_keys(*_known("config", f"experiment={experiment}"))


def test_a_key_no_config_file_defines_is_refused_with_the_nearest_known_one():
    from mobilemamba.engine.config import check_known_keys

    cfg, known = _known("config", "experiment=smoke", "+trainer.epoch=3", "+data.exclude_file=/x", "+model.kwargs.depth=[1]")
    with pytest.raises(ConfigError, match=r"^trainer\.epoch: no such config key \(did you mean trainer\.epochs\?\)$"):
        check_known_keys(cfg, known)  # data.exclude_file (read by the data layer) and model.kwargs (free-form) pass
    cfg, known = _known("eval", "checkpoint=x", "+trainer.epochs=3", "+fuse_bn=true")
    with pytest.raises(ConfigError, match=r"^trainer: no such config key; also fuse_bn$"):
        check_known_keys(cfg, known)
