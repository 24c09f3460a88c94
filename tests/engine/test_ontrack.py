"""On track: a run of a published variant on ImageNet-like data logs, at each evaluation, the published top-1 (raw and
EMA) at the same epoch and its difference to it; run.json and curves.png carry the published curve; other runs skip
it silently, a † run says once that no curve exists, a recipe unlike the published one says once it is approximate."""
from __future__ import annotations

import json
import logging

import pytest
from hydra import compose, initialize_config_dir

from mobilemamba import published
from mobilemamba.engine.config import ConfigError, lr_plan, resolve_phases, validate_train_config
from mobilemamba.engine.ontrack import on_track
from mobilemamba.engine.runlog import overlay_published

from .helpers import REPO, run


@pytest.fixture(scope="module")
def imagenet_like(tmp_path_factory):
    """1000 classes of generated JPEGs, one train and one val image each: the data check of a published run."""
    from mobilemamba.data.prepare import make_synthetic_jpeg_folder

    return make_synthetic_jpeg_folder(tmp_path_factory.mktemp("in1k") / "in1k", classes=1000, per_class_train=1,
                                      per_class_val=1, size=32)


@pytest.fixture(scope="module")
def pretend_t2(cache_dir, imagenet_like, tmp_path_factory):
    """The smoke model pretending to be T2: 6 epochs of one update each, evaluated after epochs 4, 5 and 6 (the
    published log starts at epoch 5)."""
    run_dir = tmp_path_factory.mktemp("pretend_t2")
    handler, logger = _Capture(), logging.getLogger("mobilemamba.engine")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        code = run(cache_dir, run_dir, "model.published=T2", f"data.root={imagenet_like}", "data.num_classes=1000",
                   "trainer.epochs=6", "trainer.max_iters_per_epoch=1", "sched.warmup_epochs=1",
                   "trainer.eval_every=4", "trainer.eval_every_from=5")
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert code == 0
    return run_dir, handler.messages


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def _evals(run_dir):
    return [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "eval"]


@pytest.mark.slow
def test_each_evaluation_logs_the_published_top1_at_the_same_epoch_and_the_difference(pretend_t2):
    run_dir, _ = pretend_t2
    evals = {r["epoch"]: r for r in _evals(run_dir)}
    assert sorted(evals) == [4, 5, 6]
    four = evals[4]  # before the published log's first evaluation
    assert [four[k] for k in ("published_top1", "published_top1_ema", "vs_published", "vs_published_ema")] == [None] * 4
    five = evals[5]
    assert (five["published_top1"], five["published_top1_ema"]) == (26.834, 0.098)
    assert five["vs_published"] == pytest.approx(five["top1"] - 26.834, abs=1e-3)
    assert five["vs_published_ema"] == pytest.approx(five["ema_top1"] - 0.098, abs=1e-3)
    six = evals[6]  # between the logged epochs 5 and 10
    assert six["published_top1"] == pytest.approx(26.834 + (41.752 - 26.834) / 5, abs=1e-3)
    assert six["vs_published"] == pytest.approx(six["top1"] - six["published_top1"], abs=1e-3)


@pytest.mark.slow
def test_a_recipe_unlike_the_published_one_says_once_that_the_comparison_is_approximate(pretend_t2):
    _, messages = pretend_t2
    notes = [m for m in messages if "comparison is approximate" in m]
    assert len(notes) == 1
    for what in ("global batch 8 (published 1024)", "6 epochs (published 300)", "32 px (published 192)"):
        assert what in notes[0]
    assert any("| published T2 26.83 / EMA 0.10 (" in m for m in messages if m.startswith("epoch 5/6")), \
        "the epoch's log line shows the published values beside the run's"


@pytest.mark.slow
def test_run_json_and_curves_png_carry_the_published_curve(pretend_t2):
    run_dir, _ = pretend_t2
    pub = json.loads((run_dir / "run.json").read_text())["published"]
    assert (pub["variant"], pub["curve"], pub["last"]["epoch"]) == ("T2", "T2", 6)
    assert pub["last"]["published_top1"] == _evals(run_dir)[-1]["published_top1"]
    assert (pub["published_best_top1"], pub["published_best_top1_ema"]) == (73.502, 73.634)  # spec §6.1
    assert "global batch 8 (published 1024)" in pub["approximate"]

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    raw, ema = overlay_published(ax, run_dir, until=6)
    six = published.at("T2", 6)  # the curve drawn to the run's last evaluation, interpolated there
    assert raw == [(5, 26.834), (6, six.top1)] and ema == [(5, 0.098), (6, six.top1_ema)]
    assert [line.get_label() for line in ax.lines] == ["published T2 raw (ImageNet)", "published T2 EMA (ImageNet)"]
    plt.close(fig)
    assert (run_dir / "curves.png").exists()


@pytest.mark.slow
def test_a_run_on_other_data_is_not_compared_and_says_nothing(cache_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="mobilemamba.engine"):
        assert run(cache_dir, tmp_path, "model.published=T2", "trainer.epochs=1", "trainer.max_iters_per_epoch=1") == 0
    assert not any("published" in r.getMessage() for r in caplog.records)
    assert not any(k.startswith(("published", "vs_published")) for r in _evals(tmp_path) for k in r)
    assert json.loads((tmp_path / "run.json").read_text())["published"] is None


# ------------------------------------------------------------------------------------------- which runs compare
def _on_track(*overrides, world_size=1):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=list(overrides))
    validate_train_config(cfg, world_size, check_paths=False)
    return on_track(cfg, resolve_phases(cfg), lr_plan(cfg, world_size).global_batch)


def test_the_published_recipe_on_eight_gpus_is_compared_exactly():
    track = _on_track("experiment=mobilemamba_s6", world_size=8)
    assert (track.variant, track.curve, track.approximate) == ("S6", "S6", ())
    assert _on_track("experiment=mobilemamba_s6").approximate == ("global batch 128 (published 1024)",)


def test_a_dagger_run_has_no_published_curve_and_says_so_once(caplog):
    track = _on_track("experiment=mobilemamba_t2_kd")
    assert (track.variant, track.curve) == ("T2†", None)
    assert track.fields(100, {"top1": 50.0}) == {}
    with caplog.at_level(logging.INFO, logger="mobilemamba.engine"):
        track.announce(logging.getLogger("mobilemamba.engine"))
    assert [r.getMessage() for r in caplog.records] == [
        "no published learning curve for T2† (the † (KD, 1000-epoch) training logs were not published): "
        "evaluations are not compared"]
    assert track.summary(None)["note"].startswith("no published curve")


@pytest.mark.parametrize("overrides", [
    ["experiment=cifar10_t2"],                     # 10 classes
    ["experiment=mobilemamba_t2", "data=synthetic"],  # 1000 classes of noise
    ["experiment=smoke"],                           # a shrunken T2: model.published is null
    ["experiment=mobilemamba_b1", "model=timm", "model.name=resnet10t"],  # another model
])
def test_other_runs_skip_the_comparison(tmp_path, monkeypatch, overrides):
    monkeypatch.setenv("CIFAR10_ROOT", str(tmp_path))
    assert _on_track(*overrides) is None


def test_an_unknown_published_curve_is_a_config_error():
    with pytest.raises(ConfigError, match=r"model.published: no published curve named 'T3'; known: T2, T4, S6, B1"):
        _on_track("experiment=mobilemamba_t2", "model.published=T3")


def test_every_variant_config_names_its_own_curve():
    for v in published.variants():
        assert _on_track(f"experiment=mobilemamba_{v.lower()}", world_size=8).approximate == ()
