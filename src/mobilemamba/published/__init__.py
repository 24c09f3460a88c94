"""The published learning curves of MobileMamba (spec §6.2), shipped with the package, looked up by variant and epoch.

`curves.csv` holds the figures of the reference's own 300-epoch ImageNet-1k training logs (8 GPUs, global batch 1024,
the recipe of spec §2): every evaluation of each variant, every 5 epochs up to 200, then every epoch. Columns:
`top1`/`top5` of the raw weights and `top1_ema`/`top5_ema` of the EMA weights (% of the 50,000 val images),
`train_ce` (running mean of the mixup soft-target CE at the end of the epoch) and `hours` (the log's wall clock).
The † (KD, 1000-epoch) logs were not published: T2† ... B4† have no curve.

Lookup rule: at an evaluated epoch, the logged values; between two evaluations, the linear interpolation of the two
neighbours (`interpolated=True`); before the first evaluation (epoch 5), after the last (epoch 300), and for a
variant without a curve, None.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any, Optional

GLOBAL_BATCH = 1024  # the recipe the curves were logged with (spec §2)
EPOCHS = 300
COLUMNS = ("top1", "top1_ema", "top5", "top5_ema", "train_ce", "hours")


@dataclass(frozen=True)
class CurvePoint:
    """The published values of one variant at one epoch (interpolated between two logged evaluations)."""

    epoch: int
    top1: float
    top1_ema: float
    top5: float
    top5_ema: float
    train_ce: float
    hours: float
    interpolated: bool = False


@lru_cache(maxsize=1)
def _curves() -> dict[str, tuple[CurvePoint, ...]]:
    text = resources.files(__package__).joinpath("curves.csv").read_text()
    out: dict[str, list[CurvePoint]] = {}
    for row in csv.DictReader(text.splitlines()):
        point = CurvePoint(int(row["epoch"]), *(float(row[c]) for c in COLUMNS))
        out.setdefault(row["variant"], []).append(point)
    return {v: tuple(sorted(points, key=lambda p: p.epoch)) for v, points in out.items()}


def variants() -> tuple[str, ...]:
    """The variants with a published curve, smallest first: ('T2', 'T4', 'S6', 'B1', 'B2', 'B4')."""
    return tuple(_curves())


def variant_key(name: Optional[str]) -> Optional[str]:
    """'T2' for 'T2', 't2' or 'mobilemamba_t2'; None when no curve was published under that name (e.g. 'T2†')."""
    if not name:
        return None
    key = str(name).rsplit("_", 1)[-1].upper() if str(name).lower().startswith("mobilemamba_") else str(name).upper()
    return key if key in _curves() else None


def img_size(variant: str) -> int:
    """The resolution the variant was trained and evaluated at (T2/T4 192, S6 224, B1 256, B2 384, B4 512)."""
    from ..models import VARIANTS

    return VARIANTS[f"mobilemamba_{variant.lower()}"].img_size


def curve(variant: Optional[str]) -> tuple[CurvePoint, ...]:
    """Every logged evaluation of `variant` (any spelling `variant_key` accepts); () when none was published."""
    key = variant_key(variant)
    return _curves()[key] if key else ()


def at(variant: Optional[str], epoch: int) -> Optional[CurvePoint]:
    """The published values at `epoch` (1-based), interpolated between evaluations; None outside the curve."""
    points = curve(variant)
    if not points or not points[0].epoch <= epoch <= points[-1].epoch:
        return None
    for before, after in zip(points, points[1:]):
        if before.epoch == epoch:
            return before
        if before.epoch < epoch < after.epoch:
            w = (epoch - before.epoch) / (after.epoch - before.epoch)
            values = {c: getattr(before, c) + w * (getattr(after, c) - getattr(before, c)) for c in COLUMNS}
            return CurvePoint(epoch, **values, interpolated=True)
    return points[-1]


def series(variant: Optional[str], column: str, until: Optional[float] = None) -> list[tuple[int, float]]:
    """(epoch, value) of every logged evaluation of `variant` up to epoch `until` (all when None)."""
    if column not in COLUMNS:
        raise ValueError(f"unknown column {column!r}; expected one of {', '.join(COLUMNS)}")
    return [(p.epoch, getattr(p, column)) for p in curve(variant) if until is None or p.epoch <= until]


def plot_series(ax: Any, variant: Optional[str], column: str, until: Optional[float] = None,
                **style: Any) -> list[tuple[int, float]]:
    """Draw the published `column` of `variant` up to epoch `until` (interpolated there when it falls between two
    evaluations) on a matplotlib axis, dashed grey unless `style` says otherwise; returns the points drawn ([] when
    there is no curve)."""
    points = series(variant, column, until)
    end = at(variant, until) if until is not None and points and points[-1][0] < until else None
    if end is not None:
        points.append((end.epoch, getattr(end, column)))
    if points:
        style = {"color": "0.45", "ls": "--", "lw": 1.2, "marker": ".", "ms": 4,
                 "label": f"published {variant_key(variant)} (ImageNet)", **style}
        ax.plot(*zip(*points), **style)
    return points


__all__ = ["COLUMNS", "EPOCHS", "GLOBAL_BATCH", "CurvePoint", "at", "curve", "img_size", "plot_series", "series",
           "variant_key", "variants"]
