"""The update on the device (engine/step.py): how trainer.compile=auto resolves, a skipped update that changes nothing
and needs no host read, the max_nonfinite latch, deferred read-back that logs what per-update read-back logs, a loop
that reads back only at its read-back points, and the captured update's plumbing on CPU."""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mobilemamba.engine import step as S
from mobilemamba.engine.ema import ModelEma
from mobilemamba.engine.step import DeviceUpdate, StepPlan, resolve_step_plan

from .helpers import REPO, assert_same_state, load, run

HOST_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__")
ENGINE_CODE = (str(REPO / "src" / "mobilemamba" / "engine"), str(REPO / "distill"))


# ------------------------------------------------------------------------------------------------ trainer.compile=auto
@pytest.mark.parametrize("device, compile, mode, capture, expected", [
    ("cpu", "auto", "auto", "model", StepPlan(None, "default", "model", "")),
    ("cuda", "auto", "auto", "model", StepPlan("whole", "reduce-overhead", "model", "")),
    ("cuda", "auto", "auto", "update", StepPlan("whole", "default", "update", "")),  # no graph inside the graph
    ("cuda", "auto", "reduce-overhead", "update", StepPlan("whole", "default", "update", "")),
    ("cuda", None, "auto", "model", StepPlan(None, "reduce-overhead", "model", "")),  # compile=false: eager
    ("cpu", "whole", "auto", "model", StepPlan("whole", "default", "model", "")),  # asked for: compiled on CPU too
    ("cuda", "regional", "default", "model", StepPlan("regional", "default", "model", "")),
])
def test_compile_auto_is_the_graphed_whole_model_on_cuda_and_eager_on_cpu(device, compile, mode, capture, expected):
    plan = resolve_step_plan(device, compile, mode, capture)
    assert (plan.compile, plan.mode, plan.capture) == (expected.compile, expected.mode, expected.capture)
    assert plan.describe()  # the one line logged at start


def test_compile_auto_stays_eager_where_the_compiler_cannot_run():
    plan = resolve_step_plan("cuda", "auto", "auto", "model", compiler_ready=False)
    assert plan.compile is None and "cannot generate code" in plan.describe()


@pytest.mark.slow
def test_a_cpu_run_with_the_default_config_is_eager_and_logs_its_startup_cost(cache_dir, tmp_path):
    assert run(cache_dir, tmp_path, "trainer.epochs=1") == 0
    (startup,) = [r for r in _records(tmp_path) if r.get("event") == "startup"]
    assert (startup["compile"], startup["capture"], startup["first_update"], startup["resumed"]) == ("none", "model", 1, False)
    assert startup["first_update_s"] > 0 and startup["update_s"] > 0
    assert startup["startup_s"] == pytest.approx(max(0.0, startup["first_update_s"] - startup["update_s"]))


# ------------------------------------------------------------------------------------------------ the device update
def _parts(max_nonfinite: int = 20, ema: bool = True):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    poison = torch.ones(())

    def forward_loss(images, targets):
        return nn.functional.cross_entropy(model(images), targets) * poison, None

    update = DeviceUpdate(model=model, optimizer=optimizer, scaler=None, ema=ModelEma(model, decay=0.5) if ema else None,
                          ddp=None, forward_loss=forward_loss, accum=1, max_nonfinite=max_nonfinite,
                          device=torch.device("cpu"))
    update.set_phase(clip=5.0)
    return update, poison


def _batch(seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(4, 3, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g)


def _state(update: DeviceUpdate) -> list[torch.Tensor]:
    """Everything an update may change: weights, BN buffers, optimizer moments and step counts, the EMA."""
    out = [t.detach().clone() for t in update.model.state_dict().values()]
    out += [v.clone() for st in update.optimizer.state.values() for v in st.values()]
    return out + [t.detach().clone() for t in update.ema.module.state_dict().values()]


@pytest.fixture
def no_host_read(monkeypatch):
    """Fails the test on any read-back the update itself makes (the fused AdamW decides on the device)."""
    def refuse(values):
        raise AssertionError("the update read a value back to the host")
    monkeypatch.setattr(S, "read_back", refuse)


def test_a_non_finite_update_changes_nothing_and_is_flagged_on_the_device(no_host_read):
    update, poison = _parts()
    update([_batch(0)])  # a first update makes the optimizer's state
    before = _state(update)
    poison.fill_(float("nan"))
    record = update([_batch(1)])
    loss, kd, bad, skipped, stop = record.tolist()
    assert loss != loss and (bad, skipped, stop) == (1.0, 1.0, 0.0)
    after = _state(update)
    assert len(after) == len(before) and all(torch.equal(a, b) for a, b in zip(after, before)), \
        "weights, BN statistics, AdamW moments and step count, EMA: all as before the NaN batch"
    poison.fill_(1.0)
    assert update([_batch(2)]).tolist()[3] == 0.0 and not all(torch.equal(a, b) for a, b in zip(_state(update), before))


def test_after_max_nonfinite_in_a_row_every_update_is_skipped_until_read_back():
    update, poison = _parts(max_nonfinite=2)
    flags = []
    for i, value in enumerate([1.0, float("nan"), float("nan"), 1.0, 1.0]):
        poison.fill_(value)
        flags.append(update([_batch(i)]).tolist()[2:4])
    assert flags == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]], \
        "(bad, skipped): the two good updates after the second NaN are held (the latch)"
    assert update.consecutive.item() == 2


def test_a_rehearsal_changes_nothing():
    update, _ = _parts()
    update([_batch(0)])
    before = _state(update)
    update([_batch(1)], rehearse=True)
    assert all(torch.equal(a, b) for a, b in zip(_state(update), before))


# ------------------------------------------------------------------------------------------------ read-back
def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _trace(run_dir: Path) -> dict:
    recs = _records(run_dir)
    return {
        "train": {r["iteration"]: (r["epoch"], r["loss"], r["kd"], r["lr"], r["skipped"]) for r in recs if r["kind"] == "train"},
        "eval": [(r["epoch"], r["top1"], r["val_loss"], r["ema_top1"]) for r in recs if r["kind"] == "eval"],
        "events": [(r["event"], r["iteration"], r.get("consecutive"), r.get("train_loss")) for r in recs
                   if r["kind"] == "event" and r["event"] in ("nonfinite", "epoch_end")],
    }


@pytest.mark.slow
def test_metrics_read_back_every_k_updates_are_those_read_back_every_update(cache_dir, tmp_path):
    nan = "trainer.debug.nan_at=[2]"
    assert run(cache_dir, tmp_path / "every", nan, "trainer.log_every=1") == 0
    assert run(cache_dir, tmp_path / "k", nan, "trainer.log_every=4") == 0
    every, k = _trace(tmp_path / "every"), _trace(tmp_path / "k")
    assert sorted(k["train"]) == [1, 4] and sorted(every["train"]) == [1, 2, 3, 4, 5, 6]
    assert {i: every["train"][i] for i in k["train"]} == k["train"]
    assert every["train"][2][-1] is True, "update 2 (a NaN loss) was skipped"
    assert k["eval"] == every["eval"] and k["events"] == every["events"]
    assert [e[:3] for e in k["events"] if e[0] == "nonfinite"] == [("nonfinite", 2, 1)]
    assert_same_state(load(tmp_path / "k" / "last.ckpt"), load(tmp_path / "every" / "last.ckpt"))
    assert load(tmp_path / "k" / "last.ckpt")["nonfinite"] == {"total": 1, "consecutive": 0}


@contextlib.contextmanager
def _counting_host_reads(monkeypatch):
    """Counts the device-to-host reads (Tensor.item/tolist/numpy/bool()/float()/int()) made by the engine's code."""
    reads: list[str] = []
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            frame = sys._getframe(1)
            if frame.f_code.co_filename.startswith(ENGINE_CODE):
                reads.append(f"{_name} at {Path(frame.f_code.co_filename).name}:{frame.f_lineno}")
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    yield reads
    monkeypatch.undo()


@pytest.mark.slow
def test_the_update_loop_reads_the_device_back_only_at_its_read_back_points(cache_dir, tmp_path, monkeypatch):
    """4 more updates in an epoch (log_every=4) cost one more read-back (update 8), not one per update."""
    reads = {}
    for n in (4, 8):
        with _counting_host_reads(monkeypatch) as seen:
            assert run(cache_dir, tmp_path / str(n), "trainer.epochs=1", f"trainer.max_iters_per_epoch={n}",
                       "trainer.log_every=4") == 0
        reads[n] = seen
    assert len(reads[8]) - len(reads[4]) == 1, reads[8]


# ------------------------------------------------------------------------------------------------ capture=update
@pytest.mark.slow
def test_a_captured_update_computes_the_eager_losses_on_cpu(cache_dir, tmp_path):
    """trainer.capture=update on CPU: static buffers and rehearsals, no graph. The rehearsals change nothing, so the
    run is the eager one bit for bit; with the model compiled (aot_eager) the losses agree to rounding."""
    variants = {"eager": (), "captured": ("trainer.capture=update",),
                "captured_compiled": ("trainer.capture=update", "trainer.compile=true", "trainer.compile_backend=aot_eager")}
    losses = {}
    for name, extra in variants.items():
        assert run(cache_dir, tmp_path / name, "trainer.epochs=1", *extra) == 0
        losses[name] = [r["loss"] for r in _records(tmp_path / name) if r["kind"] == "train"]
    assert len(losses["eager"]) == 3 and losses["captured"] == losses["eager"]
    assert_same_state(load(tmp_path / "captured" / "last.ckpt"), load(tmp_path / "eager" / "last.ckpt"))
    assert losses["captured_compiled"] == pytest.approx(losses["eager"], rel=1e-4)
    (startup,) = [r for r in _records(tmp_path / "captured") if r.get("event") == "startup"]
    assert startup["capture"] == "update" and startup["capture_s"] > 0


def test_capture_update_refuses_what_it_cannot_capture(cache_dir):
    from mobilemamba.engine.config import ConfigError, validate_train_config

    from .helpers import compose_cfg

    for overrides, key in ((("trainer.capture=update", "trainer.accum_steps=2"), "trainer.accum_steps=2"),
                           (("trainer.capture=update", "optim.fused=false"), "optim.fused=false"),
                           (("trainer.capture=graph",), "trainer.capture must be model or update")):
        with pytest.raises(ConfigError, match=key):
            validate_train_config(compose_cfg(cache_dir, *overrides), check_paths=False)
