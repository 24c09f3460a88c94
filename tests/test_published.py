"""The published learning curves (spec §6.2) ship with the package and are looked up by variant and epoch:
logged values at an evaluated epoch, linear interpolation between two evaluations, None where nothing was published."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from mobilemamba import published

REPO = Path(__file__).resolve().parents[1]


def test_every_variant_has_its_300_epoch_curve_and_no_dagger_curve_exists():
    assert published.variants() == ("T2", "T4", "S6", "B1", "B2", "B4")
    for v in published.variants():
        epochs = [p.epoch for p in published.curve(v)]
        assert len(epochs) == 140 and epochs[:3] == [5, 10, 15] and epochs[-2:] == [299, 300]
        assert epochs[39:41] == [200, 201], "every 5 epochs up to 200, then every epoch"
    assert published.curve("T2†") == () and published.variant_key("T2†") is None


def test_an_evaluated_epoch_gives_the_logged_values():
    # spec §6.2 table: S6 at epoch 100 is 63.6 raw / 71.0 EMA, B1 at 300 is 79.4 / 79.9
    s6 = published.at("S6", 100)
    assert (round(s6.top1, 1), round(s6.top1_ema, 1), s6.interpolated) == (63.6, 71.0, False)
    b1 = published.at("mobilemamba_b1", 300)
    assert (round(b1.top1, 1), round(b1.top1_ema, 1)) == (79.4, 79.9)
    t2 = published.at("t2", 5)
    assert (t2.top1, t2.top1_ema, t2.top5, t2.top5_ema, t2.train_ce) == (26.834, 0.098, 50.804, 0.528, 5.679)


def test_an_epoch_between_two_evaluations_is_interpolated_linearly():
    # T2 logged 26.834 at epoch 5 and 41.752 at epoch 10: epoch 7 lies 2/5 of the way
    p = published.at("T2", 7)
    assert p.interpolated and p.epoch == 7
    assert p.top1 == pytest.approx(26.834 + 0.4 * (41.752 - 26.834))
    assert p.top1_ema == pytest.approx(0.098 + 0.4 * (1.000 - 0.098))
    assert p.train_ce == pytest.approx(5.679 + 0.4 * (5.219 - 5.679))


@pytest.mark.parametrize("variant, epoch", [("T2", 4), ("T2", 0), ("T2", 301), ("T2†", 100), ("resnet18", 100),
                                            (None, 100)])
def test_no_published_value_is_none(variant, epoch):
    assert published.at(variant, epoch) is None


def test_series_stops_at_the_epoch_asked_for():
    assert published.series("B4", "top1_ema", until=20) == [(e, published.at("B4", e).top1_ema) for e in (5, 10, 15, 20)]
    with pytest.raises(ValueError, match="unknown column 'acc'"):
        published.series("B4", "acc")


def test_a_plotted_curve_ends_at_the_epoch_asked_for_interpolated_there():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    drawn = published.plot_series(ax, "S6", "top1", until=12)
    assert drawn == [(5, published.at("S6", 5).top1), (10, published.at("S6", 10).top1),
                     (12, published.at("S6", 12).top1)]
    assert [tuple(xy) for xy in ax.lines[0].get_xydata()] == drawn
    assert published.plot_series(ax, "T2†", "top1", until=12) == [] and len(ax.lines) == 1
    plt.close(fig)


def test_the_recipe_the_curves_were_logged_with():
    assert (published.GLOBAL_BATCH, published.EPOCHS) == (1024, 300)
    assert [published.img_size(v) for v in published.variants()] == [192, 192, 224, 256, 384, 512]


def test_the_curves_are_in_the_built_wheel(tmp_path):
    """Package data: an installed copy (not only this checkout) finds curves.csv."""
    src = tmp_path / "src_tree"  # a copy: building writes build/ and *.egg-info beside the sources
    for name in ("src", "distill"):
        shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("mobilemamba-*.whl")
    assert "mobilemamba/published/curves.csv" in zipfile.ZipFile(wheel).namelist()
