"""Any timm model as the student: `model=timm model.name=NAME` trains with the same recipe, loop, checkpoints, fused
check (timm's reparameterize_model) and eval.py as a MobileMamba; the MobileMamba-only parts step aside."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import timm
import torch
from torch import nn

from mobilemamba.engine import EXIT_PREEMPTED
from mobilemamba.engine.config import ConfigError, build_model, validate_train_config
from mobilemamba.info import count_flops, count_macs
from mobilemamba.models import create_classifier, default_img_size, fuse_model_copy
from mobilemamba.models.compiling import compile_model

from .helpers import compose_cfg

REPO = Path(__file__).resolve().parents[2]
# a RepViT shrunk to ~50k parameters: RepVGG-style branches that reparameterize_model folds, fast on CPU at 32 px
TINY_REPVIT = ["model=timm", "model.name=repvit_m0_9", "model.img_size=32", "+model.kwargs.embed_dim=[16,24,32,48]",
               "+model.kwargs.depth=[1,1,1,1]"]


def _tiny_repvit() -> nn.Module:
    return create_classifier("repvit_m0_9", num_classes=4, embed_dim=(16, 24, 32, 48), depth=(1, 1, 1, 1))


def _batchnorms(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_the_fused_copy_of_a_timm_model_is_reparameterized_and_computes_the_same():
    model = _tiny_repvit().eval()
    for m in model.modules():  # non-trivial BN statistics, or folding them would change nothing
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    fused = fuse_model_copy(model)
    assert _batchnorms(fused) < _batchnorms(model), "timm's reparameterize_model folded the branches and their BNs"
    assert _batchnorms(model) > 0 and not getattr(model, "fused", False), "the original is left as it was"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), atol=1e-5)


def test_a_timm_model_takes_img_size_when_it_sizes_itself_at_creation():
    vit = create_classifier("test_vit", num_classes=4, img_size=32)  # a ViT: position embedding for 32 px
    assert vit.patch_embed.img_size == (32, 32)
    cnn = create_classifier("resnet10t", num_classes=4, img_size=32)  # a CNN takes any size; no img_size argument
    assert cnn.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    assert default_img_size("resnet10t") == 176 and default_img_size("mobilemamba_s6") == 224
    with pytest.raises(ValueError, match="unknown model 'nonet_x1'"):
        create_classifier("nonet_x1", num_classes=4)


def test_img_size_defaults_to_the_timm_models_own_input_size(tmp_path):
    cfg = compose_cfg(tmp_path, "model=timm", "model.name=resnet10t")
    assert cfg.model.img_size is None
    validate_train_config(cfg, check_paths=False)
    assert cfg.model.img_size == 176
    cfg = compose_cfg(tmp_path, *TINY_REPVIT)
    validate_train_config(cfg, check_paths=False)
    assert cfg.model.img_size == 32, "an explicit model.img_size wins"


@pytest.mark.parametrize("overrides, message", [
    (["model=timm"], "model.name is not set: pass model.name=NAME"),
    (["model=timm", "model.name=nonet_x1"], "model.name: unknown model 'nonet_x1'"),
])
def test_a_missing_or_unknown_model_name_is_a_one_line_config_error(tmp_path, overrides, message):
    with pytest.raises(ConfigError, match=message):
        validate_train_config(compose_cfg(tmp_path, *overrides), check_paths=False)


def test_flops_of_a_timm_model_are_a_generic_count_and_mobilemamba_keeps_the_published_convention():
    with torch.device("meta"):
        resnet = timm.create_model("resnet18")
        t2 = create_classifier("mobilemamba_t2", num_classes=1000, scan_backend="torch")
    assert count_macs(resnet, 224) == pytest.approx(1.814e9, rel=1e-3)  # timm's published 1.82 GMACs
    assert count_macs(t2, 192) == count_flops(t2, 192)


def test_regional_compile_of_a_model_without_regions_compiles_it_whole():
    model = _tiny_repvit()
    compiled = compile_model(model, model, "regional", backend="aot_eager")
    assert compiled is not model  # wrapped whole, no MobileMamba regions or Haar step asked for
    assert compiled(torch.randn(2, 3, 32, 32)).shape == (2, 4)


def test_the_cifar10_baseline_experiment_is_a_timm_student(monkeypatch, tmp_path):
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path))
    cfg = compose_cfg(tmp_path, "experiment=cifar10_repvit_m0_9")
    validate_train_config(cfg, check_paths=False)
    with torch.device("meta"):
        model = build_model(cfg.model, cfg.data.num_classes)
    assert type(model).__name__ == "RepVit" and model.head.head.l.out_features == 10


# ------------------------------------------------------------------------------------------- the command line
def _train(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "train.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=570)


@pytest.mark.slow
def test_a_timm_student_trains_resumes_and_evaluates_fused(tmp_path, subprocess_env):
    run_dir = tmp_path / "run"
    args = ["experiment=smoke", *TINY_REPVIT, "trainer.max_iters_per_epoch=2", "trainer.eval_max_batches=1",
            "trainer.progress=false", f"hydra.run.dir={run_dir}"]
    stopped = _train([*args, "trainer.debug.stop_at=1"], subprocess_env, tmp_path)
    assert stopped.returncode == EXIT_PREEMPTED, stopped.stderr[-3000:]
    assert json.loads((run_dir / "run.json").read_text())["status"] == "preempted"
    done = _train(args, subprocess_env, tmp_path)  # the same command again: resumes from last.ckpt
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((run_dir / "run.json").read_text())
    assert (summary["status"], summary["model"], summary["img_size"], summary["iterations"]) == \
           ("finished", "repvit_m0_9", 32, 4)
    assert summary["params"] == sum(p.numel() for p in _tiny_repvit().parameters()) and summary["flops"] > 0
    for weights in ("raw", "ema"):  # the final check: reparameterized vs as trained, on the val images
        assert summary["final"][weights]["fused_agree"] is True
    events = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events if e.get("event") in ("resume", "finished")] == ["resume", "finished"]

    proc = subprocess.run([sys.executable, str(REPO / "eval.py"), *TINY_REPVIT, "data=smoke",
                           f"checkpoint={run_dir / 'last.ckpt'}", "ema=true", "fuse=true", "throughput.batch_size=8",
                           "throughput.iters=2", f"hydra.run.dir={tmp_path / 'eval'}"],
                          cwd=tmp_path, env=subprocess_env, capture_output=True, text=True, timeout=570)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert (res["model"], res["fused"], res["fused_agree"], res["images"]) == ("repvit_m0_9", True, True, 32)
    assert res["top1"] == pytest.approx(summary["final"]["ema"]["fused_top1"])
