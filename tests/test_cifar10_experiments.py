"""The CIFAR-10 miniature reproduction: experiment=cifar10_{t2,s6,b1,t2_kd,repvit_m0_9} compose to the published
recipe scaled down, identical for the three sizes and the timm baseline, and the KD run differs from cifar10_t2 only
in its teacher and its length."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from mobilemamba.engine.config import lr_plan, resolve_phases, validate_train_config

CONF = Path(__file__).resolve().parents[1] / "conf"
SIZES = {"t2": "mobilemamba_t2", "s6": "mobilemamba_s6", "b1": "mobilemamba_b1"}


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(autouse=True)
def cifar_env(monkeypatch, tmp_path):
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path / "cifar10_jpg"))
    monkeypatch.setenv("CIFAR10_TEACHER", str(tmp_path / "b1" / "best.ckpt"))
    return tmp_path


def recipe(cfg) -> dict:
    """Everything but what names the run and the model (drop path belongs to the variant, as published; so does the
    published curve it is compared with on ImageNet)."""
    d = OmegaConf.to_container(cfg, resolve=True)
    for key in ("name",):
        d.pop(key)
    d["model"] = {k: v for k, v in d["model"].items() if k not in ("name", "drop_path_rate", "published")}
    return d


def test_the_cifar10_experiments_on_disk_are_the_ones_checked_here():
    assert {p.stem for p in (CONF / "experiment").glob("cifar10_*.yaml")} == {
        "cifar10_t2", "cifar10_s6", "cifar10_b1", "cifar10_t2_kd", "cifar10_repvit_m0_9"}


@pytest.mark.parametrize("size", SIZES)
def test_each_size_is_the_published_recipe_scaled_down(size, cifar_env):
    cfg = compose_train(f"experiment=cifar10_{size}")
    assert cfg.name == f"cifar10_{size}" and cfg.model.name == SIZES[size] and cfg.model.img_size == 128
    d = cfg.data
    assert (d.root, d.train_split, d.val_split, d.num_classes) == (str(cifar_env / "cifar10_jpg"), "train", "test", 10)
    assert d.loader == "dali"
    t = cfg.trainer
    assert (t.epochs, t.eval_every, t.eval_every_from, t.global_batch) == (30, 1, 1, 256)
    assert t.amp == "fp16" and t.grad_clip == 5.0 and t.ema and t.ema_decay == pytest.approx(0.9987)
    assert cfg.sched.name == "cosine" and cfg.sched.warmup_epochs == 3
    a = cfg.aug  # the published augmentation, unchanged
    assert a.auto_augment == "rand-m9-mstd0.5-inc1" and (a.mixup, a.cutmix, a.smoothing, a.reprob) == (0.8, 1.0, 0.1, 0.25)
    assert resolve_phases(cfg)[0].distill is None and len(resolve_phases(cfg)) == 1


@pytest.mark.parametrize("world_size", [1, 2, 8])
def test_lr_follows_the_recipe_rule_at_a_fixed_global_batch_of_256(world_size):
    cfg = compose_train("experiment=cifar10_s6")
    validate_train_config(cfg, world_size, check_paths=False)
    plan = lr_plan(cfg, world_size)
    assert cfg.data.batch_size * world_size == plan.global_batch == 256
    assert plan.lr == pytest.approx(1.5e-3 * 256 / 512) and plan.min_lr == pytest.approx(1.5e-5 * 256 / 512)


def test_the_three_sizes_share_one_recipe():
    t2, s6, b1 = (recipe(compose_train(f"experiment=cifar10_{s}")) for s in SIZES)
    assert t2 == s6 == b1


def test_the_timm_baseline_is_cifar10_t2_with_another_model():
    plain, baseline = compose_train("experiment=cifar10_t2"), compose_train("experiment=cifar10_repvit_m0_9")
    assert baseline.name == "cifar10_repvit_m0_9" and baseline.model.name == "repvit_m0_9"
    assert baseline.model.img_size == plain.model.img_size == 128
    a, b = OmegaConf.to_container(plain, resolve=True), OmegaConf.to_container(baseline, resolve=True)
    for d in (a, b):
        d.pop("name"), d.pop("model")
    assert a == b


def test_the_kd_run_is_cifar10_t2_with_a_b1_teacher_of_this_project_and_twice_the_epochs(cifar_env):
    plain, kd = compose_train("experiment=cifar10_t2"), compose_train("experiment=cifar10_t2_kd")
    assert kd.name == "cifar10_t2_kd" and kd.model.name == "mobilemamba_t2"
    (phase,) = resolve_phases(kd)
    assert phase.epochs == 2 * plain.trainer.epochs == 60
    assert phase.distill["kind"] == "soft" and (phase.distill["alpha"], phase.distill["tau"]) == (5.0, 1.0)
    assert phase.distill["teacher"] == str(cifar_env / "b1" / "best.ckpt")
    a, b = recipe(plain), recipe(kd)
    for d in (a, b):
        d.pop("distill")
        d["trainer"].pop("epochs")
    assert a == b


def test_the_kd_group_has_only_keys_distill_knows():
    from distill.config import to_dict

    cfg = to_dict(OmegaConf.to_container(compose_train("experiment=cifar10_t2_kd").distill, resolve=True))
    assert cfg["kind"] == "soft" and cfg["teacher"].endswith("best.ckpt")


def test_without_the_env_vars_the_data_sits_in_the_cache_and_the_teacher_in_outputs(monkeypatch):
    monkeypatch.delenv("CIFAR10_ROOT")
    monkeypatch.delenv("CIFAR10_TEACHER")
    monkeypatch.setenv("MOBILEMAMBA_CACHE", "/cache")
    cfg = compose_train("experiment=cifar10_t2_kd")
    assert cfg.data.root == "/cache/cifar10_jpg" and cfg.distill.teacher == "outputs/cifar10_b1/best.ckpt"
