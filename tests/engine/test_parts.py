"""Small parts of the engine: atomic checkpoints, safe loading, RNG capture, weight-decay groups, EMA."""
from __future__ import annotations

import errno
import sys
import os
import pickle
import random
import signal

import numpy as np
import pytest
import torch
from torch import nn

from mobilemamba.engine.checkpoint import (
    CheckpointLoadError, CheckpointSaveError, atomic_save, capture_rng, load_file, restore_rng,
)
from mobilemamba.engine.optim import build_optimizer, reference_param_groups


# ------------------------------------------------------------------------------------------ checkpoints
def test_atomic_save_then_load_roundtrip(tmp_path):
    atomic_save({"model": {"w": torch.arange(3.0)}, "epoch": 1}, tmp_path / "last.ckpt")
    assert torch.equal(load_file(tmp_path / "last.ckpt")["model"]["w"], torch.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_failed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    atomic_save({"epoch": 1}, path)

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(CheckpointSaveError, match="No space left on device.*previous checkpoint is intact"):
        atomic_save({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_file(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"], "the partial temp file is removed"


def test_an_unwritable_directory_is_a_clear_error(tmp_path):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(CheckpointSaveError, match="could not write checkpoint"):
        atomic_save({"epoch": 1}, blocker / "last.ckpt")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_loading_never_runs_code_from_a_checkpoint(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"model": _RunsCode()}, path)
    with pytest.raises(CheckpointLoadError, match=r"evil\.ckpt") as info:
        load_file(path)
    assert "\n" not in str(info.value)


def test_a_truncated_checkpoint_is_refused_in_one_line(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_save({"model": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointLoadError) as info:
        load_file(path)
    assert "\n" not in str(info.value)


def test_rng_states_roundtrip_through_a_weights_only_checkpoint(tmp_path):
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    atomic_save({"rng": capture_rng()}, tmp_path / "r.ckpt")
    expected = (random.random(), np.random.rand(), torch.rand(1))
    restore_rng(load_file(tmp_path / "r.ckpt")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1)) == expected


# ------------------------------------------------------------------------------------------ optimizer
class _Tiny(nn.Module):
    """Names and shapes like MobileMamba's special parameters."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.A_logs = nn.Parameter(torch.zeros(8, 1))
        self.dt_projs_bias = nn.Parameter(torch.zeros(2, 4))
        self.x_proj_weight = nn.Parameter(torch.zeros(2, 3, 4))
        self.scale = nn.Parameter(torch.ones(1, 4, 1, 1))
        self.Ds = nn.Parameter(torch.ones(8))
        self.head = nn.Linear(4, 2)
        self.frozen = nn.Parameter(torch.ones(4, 1, 2, 2), requires_grad=False)

    def no_weight_decay(self):  # must NOT be consulted (the reference's list matches nothing)
        return {"A_logs", "scale"}


def test_weight_decay_follows_the_reference_rule():
    model = _Tiny()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = {g["weight_decay"]: {names[id(p)] for p in g["params"]} for g in reference_param_groups(model, 0.05)}
    assert groups[0.05] == {"conv.weight", "A_logs", "dt_projs_bias", "x_proj_weight", "scale", "head.weight"}
    assert groups[0.0] == {"bn.weight", "bn.bias", "Ds", "head.bias"}
    assert "frozen" not in groups[0.05] | groups[0.0]


def test_adamw_gets_the_recipe_hyperparameters():
    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"name": "adamw", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.05})
    opt = build_optimizer(_Tiny(), cfg, lr=3e-3)
    assert isinstance(opt, torch.optim.AdamW)
    assert {(g["lr"], g["betas"], g["eps"]) for g in opt.param_groups} == {(3e-3, (0.9, 0.999), 1e-8)}
    assert sorted(g["weight_decay"] for g in opt.param_groups) == [0.0, 0.05]
    assert opt.defaults.get("fused")  # fused=auto: torch's fused kernel, on CPU too (it skips a bad update on the device)


def test_a_bad_fused_setting_is_a_config_error():
    from omegaconf import OmegaConf

    from mobilemamba.engine.config import ConfigError

    cfg = OmegaConf.create({"name": "adamw", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.05, "fused": "yes"})
    with pytest.raises(ConfigError, match="auto, true or false"):
        build_optimizer(_Tiny(), cfg, lr=3e-3)


@pytest.mark.parametrize("saved_fused, loading_fused", [(True, False), (False, True)])
def test_optimizer_state_of_a_fused_run_loads_into_a_foreach_one_and_back(saved_fused, loading_fused):
    """Resuming across implementations: the loader keeps its own (torch's would take the file's), steps on."""
    from omegaconf import OmegaConf

    from mobilemamba.engine.optim import load_optimizer_state

    def optimizer(fused: bool) -> torch.optim.Optimizer:
        torch.manual_seed(0)
        model = _Tiny()
        cfg = OmegaConf.create({"name": "adamw", "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.05, "fused": fused})
        opt = build_optimizer(model, cfg, lr=1e-3)
        for p in model.parameters():
            p.grad = torch.ones_like(p)
        return opt

    saved = optimizer(saved_fused)
    saved.step()
    loading = optimizer(loading_fused)
    load_optimizer_state(loading, saved.state_dict())
    assert all(bool(g["fused"]) == loading_fused for g in loading.param_groups)
    assert all(s["step"].item() == 1 for s in loading.state.values())
    loading.step()  # a foreach AdamW refuses a step counter on another device than it keeps it
    assert all(s["step"].item() == 2 for s in loading.state.values())


# ------------------------------------------------------------------------------------------ EMA
def test_ema_as_configured_averages_bn_buffers_from_the_first_update():
    """The trainer's EMA (timm ModelEmaV3, use_warmup=False, exclude_buffers=False) updated with step=None: constant
    decay, stats too."""
    from mobilemamba.engine.ema import ModelEma

    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    ema = ModelEma(model, decay=0.75, use_warmup=False, exclude_buffers=False)
    model.train()(torch.randn(8, 3, 4, 4) + 5)  # moves the BN running mean
    ema.update(model)
    rm_model, rm_ema = model[1].running_mean, ema.module[1].running_mean
    assert torch.allclose(rm_ema, 0.25 * rm_model)  # 0.75 * 0 + 0.25 * new: no warmup, no bias correction


# ------------------------------------------------------------------------------------------ wandb
class _FakeWandb:
    """Records wandb.init's arguments; a run object with an id, log and finish."""

    def __init__(self):
        self.calls = []

    def init(self, **kwargs):
        self.calls.append(kwargs)
        run = type("Run", (), {})()
        run.id = kwargs.get("id") or "new-run-id"
        run.logged = []
        run.log = lambda data, step=None: run.logged.append((step, data))
        run.finish = lambda: None
        return run


@pytest.mark.parametrize("env_mode, expected", [(None, "offline"), ("online", "online")])
def test_wandb_is_offline_by_default_and_honours_wandb_mode(tmp_path, monkeypatch, env_mode, expected):
    from omegaconf import OmegaConf

    from mobilemamba.engine.runlog import RunLogger

    fake = _FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    if env_mode:
        monkeypatch.setenv("WANDB_MODE", env_mode)
    else:
        monkeypatch.delenv("WANDB_MODE", raising=False)
    logger = RunLogger(tmp_path, True, OmegaConf.create({"wandb": True, "mode": "offline", "project": "p"}))
    logger.start_wandb({"a": 1}, run_id="stored-id", name="smoke")
    logger.log("train", iteration=3, loss=1.5)
    assert fake.calls[0]["mode"] == expected and fake.calls[0]["id"] == "stored-id" and fake.calls[0]["resume"] == "allow"
    assert logger.wandb_id == "stored-id"
    assert logger.wandb_run.logged == [(3, {"train/iteration": 3, "train/loss": 1.5})]


# ------------------------------------------------------------------------------------------ eval throughput
class _GradProbe(nn.Module):
    """Records whether autograd was on during its forwards."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.grad_seen: list[bool] = []

    def forward(self, x):
        self.grad_seen.append(torch.is_grad_enabled())
        return self.conv(x)


def test_throughput_times_forwards_without_autograd():
    from mobilemamba.engine.evaluate import throughput

    probe = _GradProbe()
    ips = throughput(probe, batch_size=2, img_size=8, device=torch.device("cpu"), warmup=1, iters=2)
    assert ips > 0 and probe.grad_seen == [False, False, False]


def test_throughput_through_torch_compile_and_cuda_graph_needs_cuda():
    from mobilemamba import create_model
    from mobilemamba.engine.evaluate import throughput

    model = create_model("mobilemamba_t2", num_classes=10, scan_backend="torch")
    kw = dict(batch_size=1, img_size=32, device=torch.device("cpu"), warmup=1, iters=1)
    assert throughput(model, compile=True, compile_backend="eager", **kw) > 0
    with pytest.raises(ValueError, match="CUDA graph needs a CUDA device"):
        throughput(model, cuda_graph=True, **kw)


def test_ieee_fp32_switches_tf32_off_inside_and_restores_the_flags_even_on_error():
    from mobilemamba.engine.evaluate import ieee_fp32

    def flags():
        return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32

    saved = flags()
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
        with pytest.raises(RuntimeError, match="inside"):
            with ieee_fp32():
                assert flags() == (False, False)
                raise RuntimeError("inside")
        assert flags() == (True, True)
        with ieee_fp32(enabled=False):  # eval.py tf32=true
            assert flags() == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def test_eval_tf32_must_be_true_or_false(tmp_path):
    from omegaconf import OmegaConf

    from mobilemamba.engine.config import ConfigError
    from mobilemamba.engine.evalrun import _validate

    ckpt = tmp_path / "model.ckpt"
    ckpt.write_bytes(b"not read by the validation")
    cfg = OmegaConf.create({"model": {"name": "mobilemamba_t2"}, "checkpoint": str(ckpt), "tf32": "yes",
                            "data": {"loader": "synthetic", "root": None}})
    with pytest.raises(ConfigError, match="tf32 must be true or false, got 'yes'"):
        _validate(cfg)


# ------------------------------------------------------------------------------------------ stop signals
@pytest.fixture
def stop_handler():
    from mobilemamba.engine.preempt import PreemptionHandler

    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    handler = PreemptionHandler()
    yield handler
    handler.uninstall()
    for s, h in saved.items():
        signal.signal(s, h)


def test_ctrl_c_asks_for_an_orderly_stop_and_a_second_one_stops_at_once(stop_handler):
    from mobilemamba.engine.preempt import EXIT_INTERRUPTED, EXIT_PREEMPTED, Preempted

    stop_handler.install()
    os.kill(os.getpid(), signal.SIGINT)
    assert stop_handler.requested == signal.SIGINT, "the first Ctrl-C only raises the flag"
    os.kill(os.getpid(), signal.SIGTERM)
    assert stop_handler.requested == signal.SIGINT, "the first signal names the stop"
    stop_handler.chain()  # Python's own SIGINT handler is not called: it would raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
    assert Preempted(signal.SIGINT).exit_code == EXIT_INTERRUPTED == 130
    assert Preempted(signal.SIGTERM).exit_code == Preempted(signal.SIGUSR1).exit_code == EXIT_PREEMPTED == 75


def test_ctrl_c_stays_ignored_where_the_launcher_ignores_it(stop_handler):
    """A background job of a shell starts with SIGINT ignored: the terminal's Ctrl-C is not meant for it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_handler.install()
    assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    assert signal.getsignal(signal.SIGTERM) == stop_handler._on_signal


def test_worker_processes_started_by_a_loader_never_see_the_stop_signals():
    from mobilemamba.data.base import STOP_SIGNALS, stop_signals_blocked

    with stop_signals_blocked():
        assert set(STOP_SIGNALS) <= signal.pthread_sigmask(signal.SIG_BLOCK, [])  # inherited by a fork
    assert not set(STOP_SIGNALS) & signal.pthread_sigmask(signal.SIG_BLOCK, []), "the trainer's own mask is restored"


# ------------------------------------------------------------------------------------------ console output
def test_ranks_other_than_0_show_their_errors_and_their_own_warnings_only():
    import io
    import logging
    import warnings

    from mobilemamba.engine.distributed import RANK_SPECIFIC, quiet_other_ranks

    log = logging.getLogger("mobilemamba.test_ranks")
    shown = {}
    for rank in (0, 1):
        stream = io.StringIO()
        root, saved = logging.getLogger(), logging.getLogger().handlers[:]
        root.handlers = [logging.StreamHandler(stream)]  # this console alone (pytest's own handlers stay untouched)
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                quiet_other_ranks(rank)
                log.warning("the same on every rank")
                log.warning("an unreadable image of this rank's shard", extra=RANK_SPECIFIC)
                log.error("a crash")
                warnings.warn("a library's warning")
        finally:
            root.handlers = saved
        shown[rank] = stream.getvalue().splitlines() + [str(w.message) for w in caught]
    assert shown[0] == ["the same on every rank", "an unreadable image of this rank's shard", "a crash",
                        "a library's warning"]
    assert shown[1] == ["an unreadable image of this rank's shard", "a crash"]


def test_the_progress_bar_shows_one_eta_for_the_whole_run():
    import io

    from mobilemamba.engine.trainer import progress_bar

    bar = progress_bar(total=10, initial=0, desc="[main] epoch 1/2", file=io.StringIO())
    bar.update(4)
    bar.set_postfix(loss="1.0", eta="0:01:00")
    text = str(bar)
    bar.close()
    assert "4/10" in text and "eta=0:01:00" in text
    assert "<" not in text, f"tqdm's own remaining time of the epoch is a second ETA: {text}"


# ------------------------------------------------------------------------------------------ eval.py's defaults
def test_eval_takes_the_image_size_and_class_count_from_the_checkpoint_unless_given(tmp_path, caplog):
    """This project's checkpoints record their config (a T2 trained at 48 px on 4 classes is evaluated so); a
    published one (weights only) gives its class count through its head and keeps the variant's resolution; a value
    on the command line wins, and eval says so in one line."""
    import logging
    from pathlib import Path

    from hydra import compose, initialize_config_dir

    import mobilemamba
    from mobilemamba.engine.evalrun import take_checkpoint_layout

    state = mobilemamba.create_model("mobilemamba_t2", num_classes=4, embed_dim=(16, 32, 48), depth=(1, 1, 1)).state_dict()
    ours, published = tmp_path / "last.ckpt", tmp_path / "published.pth"
    torch.save({"model": state, "ema": state, "config": {"model": {"name": "mobilemamba_t2", "img_size": 48},
                                                          "data": {"num_classes": 4}}}, ours)
    torch.save(state, published)

    def composed(*overrides):
        with initialize_config_dir(config_dir=str(Path(__file__).resolve().parents[2] / "conf"), version_base="1.3"):
            return compose("eval", overrides=["model=t2", "data=folder", *overrides])

    cfg = composed(f"checkpoint={ours}", "ema=true")
    take_checkpoint_layout(cfg)
    assert (cfg.model.img_size, cfg.data.num_classes) == (48, 4)
    cfg = composed(f"checkpoint={published}")
    take_checkpoint_layout(cfg)
    assert (cfg.model.img_size, cfg.data.num_classes) == (192, 4)
    cfg = composed(f"checkpoint={ours}", "model.img_size=64")
    with caplog.at_level(logging.INFO, logger="mobilemamba.engine"):
        take_checkpoint_layout(cfg, {"model", "model.img_size", "checkpoint"})
    assert (cfg.model.img_size, cfg.data.num_classes) == (64, 4)
    assert [r.getMessage() for r in caplog.records] == ["model.img_size=64 from the command line overrides the checkpoint's 48"]
