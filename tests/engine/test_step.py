"""The update on the device (engine/step.py): how trainer.compile=auto resolves, a skipped update that changes nothing
and needs no host read, the max_nonfinite latch, deferred read-back that logs what per-update read-back logs, a loop
that reads back only at its read-back points, and the captured update's plumbing on CPU."""
from __future__ import annotations

import contextlib
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mobilemamba.engine import step as S
from mobilemamba.engine.ema import ModelEma
from mobilemamba.engine.step import DeviceUpdate, resolve_step_plan

from .helpers import REPO, NoHostRead, assert_same_state, load, run

HOST_READS = ("item", "tolist", "numpy", "__bool__", "__float__", "__int__")
ENGINE_CODE = (str(REPO / "src" / "mobilemamba" / "engine"), str(REPO / "distill"))


# ------------------------------------------------------------------------------------------------ trainer.compile=auto
@pytest.mark.parametrize("device, compile, mode, capture, expected", [
    ("cpu", "auto", "auto", "auto", (None, "default", "model")),
    ("cuda", "auto", "auto", "auto", ("whole", "default", "update")),  # the default on one GPU: the update captured
    ("cuda", "auto", "auto", "model", ("whole", "reduce-overhead", "model")),
    ("cuda", "auto", "auto", "update", ("whole", "default", "update")),  # no graph inside the update's graph
    ("cuda", "auto", "reduce-overhead", "update", ("whole", "default", "update")),
    ("cuda", None, "auto", "auto", (None, "reduce-overhead", "model")),  # compile=false: eager, nothing captured
    ("cpu", "whole", "auto", "auto", ("whole", "default", "model")),  # asked for: compiled on CPU too
    ("cuda", "regional", "default", "model", ("regional", "default", "model")),
])
def test_compile_auto_is_the_captured_whole_update_on_cuda_and_eager_on_cpu(device, compile, mode, capture, expected):
    plan = resolve_step_plan(device, compile, mode, capture)
    assert (plan.compile, plan.mode, plan.capture) == expected
    assert plan.describe()  # the one line logged at start


@pytest.mark.parametrize("why, kwargs", [("accumulation or a non-fused optimizer", dict(update_capturable=False)),
                                         ("DDP", dict(distributed=True))])
def test_capture_auto_keeps_the_model_graphs_where_the_update_cannot_be_one_graph(why, kwargs):
    plan = resolve_step_plan("cuda", "auto", "auto", "auto", **kwargs)
    assert (plan.compile, plan.mode, plan.capture) == ("whole", "reduce-overhead", "model"), why


def test_capture_auto_reads_accumulation_and_the_optimizer_from_the_config(cache_dir):
    from mobilemamba.engine.config import update_capturable

    from .helpers import compose_cfg

    assert update_capturable(compose_cfg(cache_dir))
    assert not update_capturable(compose_cfg(cache_dir, "trainer.accum_steps=2"))
    assert not update_capturable(compose_cfg(cache_dir, "optim.fused=false"))


def test_compile_auto_stays_eager_where_the_compiler_cannot_run():
    plan = resolve_step_plan("cuda", "auto", "auto", "auto", compiler_ready=False)
    assert plan.compile is None and plan.capture == "model" and "cannot generate code" in plan.describe()


# ------------------------------------------------------------------------------------------------ the device update
def _parts(max_nonfinite: int = 20):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 6 * 6, 3)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    poison = torch.ones(())

    def forward_loss(images, targets):
        return nn.functional.cross_entropy(model(images), targets) * poison, None

    update = DeviceUpdate(model=model, optimizer=optimizer, scaler=None, ema=ModelEma(model, decay=0.5),
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
    """Fails the test on any host read the update makes (the fused AdamW decides on the device)."""
    def refuse(values):
        raise AssertionError("the update read a value back to the host")
    monkeypatch.setattr(S, "read_back", refuse)
    return NoHostRead


def test_a_non_finite_update_changes_nothing_and_is_flagged_on_the_device(no_host_read):
    update, poison = _parts()
    update([_batch(0)])  # a first update makes the optimizer's state
    before = _state(update)
    poison.fill_(float("nan"))
    with no_host_read():
        record = update([_batch(1)])
    loss, kd, bad, skipped, stop = record.tolist()
    assert loss != loss and (bad, skipped, stop) == (1.0, 1.0, 0.0)
    after = _state(update)
    assert len(after) == len(before) and all(torch.equal(a, b) for a, b in zip(after, before)), \
        "weights, BN statistics, AdamW moments and step count, EMA: all as before the NaN batch"
    poison.fill_(1.0)
    with no_host_read():
        record = update([_batch(2)])
    assert record.tolist()[3] == 0.0 and not all(torch.equal(a, b) for a, b in zip(_state(update), before))


def test_after_max_nonfinite_in_a_row_every_update_is_skipped_until_read_back():
    update, poison = _parts(max_nonfinite=2)
    flags = []
    for i, value in enumerate([1.0, float("nan"), float("nan"), 1.0, 1.0]):
        poison.fill_(value)
        flags.append(update([_batch(i)]).tolist()[2:4])
    assert flags == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [0.0, 1.0], [0.0, 1.0]], \
        "(bad, skipped): the two good updates after the second NaN are held (the latch)"
    assert (update.consecutive.item(), update.tripped.item()) == (0, 1)
    update.restart_count(2)  # a run resumed after that stop: good updates go through, one more NaN trips it again
    poison.fill_(1.0)
    assert update([_batch(5)]).tolist()[2:4] == [0.0, 0.0]
    update.restart_count(2)
    poison.fill_(float("nan"))
    update([_batch(6)])
    assert update.tripped.item() == 1


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


NAN_AT_2 = "trainer.debug.nan_at=[2]"


@pytest.fixture(scope="module")
def per_update(cache_dir, tmp_path_factory) -> Path:
    """The reference: 2 epochs x 3 updates, eager, read back after every update, update 2's loss made NaN."""
    run_dir = tmp_path_factory.mktemp("per_update")
    assert run(cache_dir, run_dir, NAN_AT_2, "trainer.log_every=1") == 0
    return run_dir


@pytest.mark.slow
def test_metrics_read_back_every_k_updates_are_those_read_back_every_update(cache_dir, tmp_path, per_update):
    assert run(cache_dir, tmp_path, NAN_AT_2, "trainer.log_every=4") == 0
    every, k = _trace(per_update), _trace(tmp_path)
    # reading back less often changes when rows reach the host, not which rows are recorded (a 6-update run
    # records every update: runlog.log_interval)
    assert sorted(k["train"]) == sorted(every["train"]) == [1, 2, 3, 4, 5, 6]
    assert k["train"] == every["train"]
    assert every["train"][2][-1] is True, "update 2 (a NaN loss) was skipped"
    assert k["eval"] == every["eval"] and k["events"] == every["events"]
    assert [e[:3] for e in k["events"] if e[0] == "nonfinite"] == [("nonfinite", 2, 1)]
    assert_same_state(load(tmp_path / "last.ckpt"), load(per_update / "last.ckpt"))
    assert load(tmp_path / "last.ckpt")["nonfinite"] == {"total": 1, "consecutive": 0}
    (startup,) = [r for r in _records(tmp_path) if r.get("event") == "startup"]  # CPU: eager, as compile=auto says
    assert (startup["compile"], startup["capture"], startup["first_update"], startup["resumed"]) == ("none", "model", 1, False)
    assert startup["startup_s"] == pytest.approx(max(0.0, startup["first_update_s"] - startup["update_s"]))


@contextlib.contextmanager
def _counting_host_reads(monkeypatch):
    """Counts the device-to-host reads (Tensor.item/tolist/numpy/bool()/float()/int()) the engine's code makes inside
    the update loop (`Trainer._train_updates` on the stack; the loader's own work on CPU tensors is not counted)."""
    reads: list[str] = []
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            caller = frame = sys._getframe(1)
            while frame is not None and frame.f_code.co_name != "_train_updates":
                frame = frame.f_back
            if frame is not None and caller.f_code.co_filename.startswith(ENGINE_CODE):
                reads.append(f"{_name} at {Path(caller.f_code.co_filename).name}:{caller.f_lineno}")
            return _real(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    yield reads
    monkeypatch.undo()


@pytest.mark.slow
def test_the_update_loop_reads_the_device_back_only_at_its_read_back_points(cache_dir, tmp_path, monkeypatch):
    """3 more updates in an epoch (log_every=3) cost one more read-back (update 6), not one per update; a run this
    short still writes a train record for every update (runlog.log_interval), from the rows read back."""
    reads = {}
    for n in (3, 6):
        with _counting_host_reads(monkeypatch) as seen:
            assert run(cache_dir, tmp_path / str(n), "trainer.epochs=1", f"trainer.max_iters_per_epoch={n}",
                       "trainer.log_every=3") == 0
        reads[n] = seen
    assert len(reads[6]) - len(reads[3]) == 1, reads[6]
    assert [r["iteration"] for r in _records(tmp_path / "6") if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]


# ------------------------------------------------------------------------------------------------ capture=update
@pytest.mark.slow
def test_a_captured_update_computes_the_eager_run_on_cpu(cache_dir, tmp_path, per_update):
    """trainer.capture=update on CPU: static input buffers and rehearsals, no graph. The rehearsals change nothing,
    so the run, its skipped NaN update included, is the eager one bit for bit."""
    assert run(cache_dir, tmp_path, NAN_AT_2, "trainer.log_every=1", "trainer.capture=update") == 0
    assert _trace(tmp_path) == _trace(per_update)
    assert_same_state(load(tmp_path / "last.ckpt"), load(per_update / "last.ckpt"))
    (startup,) = [r for r in _records(tmp_path) if r.get("event") == "startup"]
    assert startup["capture"] == "update" and startup["capture_s"] > 0


@pytest.mark.slow
def test_checkpoints_resume_across_the_eager_and_the_compiled_captured_paths(cache_dir, tmp_path, per_update):
    """Compiled + captured (aot_eager on CPU) stopped after update 2, resumed eager and stopped after update 5,
    resumed compiled + captured to the end: one run, with the losses of the eager one."""
    fast = ("trainer.compile=true", "trainer.compile_backend=aot_eager", "trainer.capture=update")
    for stop_at, path in ((1, fast), (4, ()), (None, fast)):  # a signal after update N stops after N + 1
        stop = () if stop_at is None else (f"trainer.debug.stop_at={stop_at}",)
        assert run(cache_dir, tmp_path, NAN_AT_2, "trainer.log_every=1", *path, *stop) == (0 if stop_at is None else 75)
        ck, ref = load(tmp_path / "last.ckpt"), load(per_update / "last.ckpt")
        for key in ("model", "ema"):
            assert list(ck[key]) == list(ref[key]), f"{key}: the eager model's keys (no _orig_mod. or module.)"
        assert ck["optimizer"]["param_groups"][0].keys() == ref["optimizer"]["param_groups"][0].keys()
    assert [r["iteration"] for r in _records(tmp_path) if r.get("event") == "resume"] == [2, 5]
    losses = {k: v[1] for k, v in _trace(tmp_path)["train"].items()}
    reference = {k: v[1] for k, v in _trace(per_update)["train"].items()}
    assert sorted(losses) == [1, 2, 3, 4, 5, 6]
    assert math.isnan(losses.pop(2)) and math.isnan(reference.pop(2))  # the NaN update, skipped on both
    assert losses == pytest.approx(reference, rel=1e-4)


def test_capture_update_refuses_what_it_cannot_capture(cache_dir):
    from mobilemamba.engine.config import ConfigError, validate_train_config

    from .helpers import compose_cfg

    for overrides, key in ((("trainer.capture=update", "trainer.accum_steps=2"), "trainer.accum_steps=2"),
                           (("trainer.capture=update", "optim.fused=false"), "optim.fused=false"),
                           (("trainer.capture=graph",), "trainer.capture must be auto, model or update")):
        with pytest.raises(ConfigError, match=key):
            validate_train_config(compose_cfg(cache_dir, *overrides), check_paths=False)
