"""On track: each evaluation of a run of a published variant beside the published learning curve at the same epoch.

A run is compared when its model config names a published curve (`model.published`, set by conf/model/{t2,t4,s6,
b1,b2,b4}.yaml) and its data is ImageNet-like (1000 classes of real images: not data=synthetic). Any other run (CIFAR,
the smoke model, a timm student) skips this silently. A distilling run (the † recipe) has no published curve, as the
† training logs were not published: it says so once. The curve is read at the run's epoch (see mobilemamba.published
for epochs between the logged evaluations); a run whose recipe differs from the published one in global batch,
epochs, resolution, model overrides or a train subset says once that the comparison is approximate.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from omegaconf import DictConfig

from .. import published
from .config import ConfigError, Phase, plain

FIELDS = ("published_top1", "published_top1_ema", "vs_published", "vs_published_ema")
NO_DAGGER_CURVE = "the † (KD, 1000-epoch) training logs were not published"


@dataclass(frozen=True)
class OnTrack:
    """The published curve a run is compared with (`curve` None for a † run) and how its recipe differs."""

    variant: str  # "T2", or "T2†" for a distilling run
    curve: Optional[str]
    approximate: tuple[str, ...] = ()

    def fields(self, epoch: int, record: dict[str, Any]) -> dict[str, Optional[float]]:
        """The published top-1 (raw, EMA) at `epoch` and the run's difference to it, in points (None where the curve
        has no value); {} for a † run."""
        if self.curve is None:
            return {}
        point = published.at(self.curve, epoch)
        pub_raw, pub_ema = (point.top1, point.top1_ema) if point else (None, None)
        return {"published_top1": _round(pub_raw), "published_top1_ema": _round(pub_ema),
                "vs_published": _diff(record.get("top1"), pub_raw),
                "vs_published_ema": _diff(record.get("ema_top1"), pub_ema)}

    def describe(self, record: dict[str, Any]) -> str:
        """' | published T2 26.83 / EMA 0.10 (-0.73 / +0.10)' for the epoch's log line; '' without a value."""
        if record.get("published_top1") is None:
            return ""
        text = f" | published {self.curve} {record['published_top1']:.2f}"
        if record.get("published_top1_ema") is not None:
            text += f" / EMA {record['published_top1_ema']:.2f}"
        diffs = [f"{record[k]:+.2f}" for k in ("vs_published", "vs_published_ema") if record.get(k) is not None]
        return text + (f" ({' / '.join(diffs)})" if diffs else "")

    def summary(self, last_eval: Optional[dict[str, Any]]) -> dict[str, Any]:
        """run.json's `published`: the curve, why the comparison is approximate, the last evaluation against it and
        the curve's best (the reported number is the best evaluation of raw or EMA weights)."""
        if self.curve is None:
            return {"variant": self.variant, "curve": None, "note": f"no published curve: {NO_DAGGER_CURVE}"}
        points = published.curve(self.curve)
        last = {k: (last_eval or {}).get(k) for k in ("epoch", *FIELDS)} if last_eval else None
        return {"variant": self.variant, "curve": self.curve, "approximate": list(self.approximate), "last": last,
                "published_best_top1": max(p.top1 for p in points),
                "published_best_top1_ema": max(p.top1_ema for p in points)}

    def announce(self, log: logging.Logger) -> None:
        """Say once what this run is compared with, and why only approximately."""
        if self.curve is None:
            log.warning("no published learning curve for %s (%s): evaluations are not compared", self.variant,
                        NO_DAGGER_CURVE)
        elif self.approximate:
            log.warning("each evaluation is compared with the published %s curve (ImageNet-1k); the comparison is "
                        "approximate, this run differs from the published recipe: %s", self.curve,
                        ", ".join(self.approximate))
        else:
            log.info("each evaluation is compared with the published %s curve (ImageNet-1k; the published global "
                     "batch, epochs and resolution)", self.curve)


def on_track(cfg: DictConfig, phases: Sequence[Phase], global_batch: int) -> Optional[OnTrack]:
    """The comparison this run gets, or None (no `model.published`, or data that is not ImageNet-like)."""
    name = cfg.model.get("published")
    if name is None:
        return None
    curve = published.variant_key(name)
    if curve is None:
        raise ConfigError(f"model.published: no published curve named {name!r}; "
                          f"known: {', '.join(published.variants())} (or null)")
    if int(cfg.data.num_classes) != 1000 or cfg.data.get("loader") == "synthetic":
        return None
    if any(ph.distill for ph in phases):
        return OnTrack(f"{curve}†", None)
    return OnTrack(curve, curve, _differences(cfg, curve, sum(ph.epochs for ph in phases), global_batch))


def _differences(cfg: DictConfig, curve: str, epochs: int, global_batch: int) -> tuple[str, ...]:
    """How this run's recipe differs from the one the published curve was logged with."""
    out = []
    if global_batch != published.GLOBAL_BATCH:
        out.append(f"global batch {global_batch} (published {published.GLOBAL_BATCH})")
    if epochs != published.EPOCHS:
        out.append(f"{epochs} epochs (published {published.EPOCHS})")
    if int(cfg.model.img_size) != published.img_size(curve):
        out.append(f"{cfg.model.img_size} px (published {published.img_size(curve)})")
    if plain(cfg.model.get("kwargs")):
        out.append(f"model.kwargs {plain(cfg.model.kwargs)} (published: none)")
    if cfg.data.get("max_per_class"):
        out.append(f"at most {cfg.data.max_per_class} train images per class (published: all)")
    return tuple(out)


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)


def _diff(run: Optional[float], pub: Optional[float]) -> Optional[float]:
    return None if run is None or pub is None else round(run - pub, 3)
