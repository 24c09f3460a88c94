"""Run-directory logging (rank 0 only): metrics.jsonl, metrics.csv, optional wandb, run.json, curves.png.

metrics.jsonl holds one JSON object per line with `kind` in train|eval|event. Its byte length (and the CSV's)
is stored in each checkpoint; a resumed run truncates both files back to that point, so lines written after
the checkpoint by the killed run are not duplicated.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("mobilemamba.engine")

JSONL = "metrics.jsonl"
CSV = "metrics.csv"
CSV_FIELDS = [
    "epoch", "phase", "iteration", "lr", "train_loss", "train_kd", "img_per_s",
    "top1", "top5", "ema_top1", "ema_top5", "nonfinite_total", "time",
]


def _jsonable(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


class RunLogger:
    """Writes the run's metrics; on ranks other than 0 every method does nothing."""

    def __init__(self, run_dir: Path, enabled: bool, logger_cfg: Any = None):
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.cfg = logger_cfg
        self.wandb_run = None
        self.wandb_id: str | None = None
        if enabled:
            self.run_dir.mkdir(parents=True, exist_ok=True)

    # ------------------------------------------------------------------ files
    def offsets(self) -> dict[str, int]:
        """Current byte length of each metrics file (stored in checkpoints)."""
        out = {}
        for name in (JSONL, CSV):
            p = self.run_dir / name
            out[name] = p.stat().st_size if p.exists() else 0
        return out

    def truncate(self, offsets: dict[str, int] | None) -> None:
        """Cut the metrics files back to what they held when the checkpoint was written."""
        if not self.enabled or not offsets:
            return
        for name, size in offsets.items():
            p = self.run_dir / name
            if p.exists() and p.stat().st_size > size:
                with open(p, "r+b") as f:
                    f.truncate(size)

    def log(self, kind: str, **record: Any) -> None:
        if not self.enabled:
            return
        rec = {"kind": kind, "time": round(time.time(), 3), **{k: _jsonable(v) for k, v in record.items()}}
        with open(self.run_dir / JSONL, "a") as f:
            f.write(json.dumps(rec) + "\n")
        if self.wandb_run is not None and kind in ("train", "eval"):
            step = rec.get("iteration")
            data = {f"{kind}/{k}": v for k, v in rec.items() if isinstance(v, (int, float)) and k not in ("time",)}
            try:
                self.wandb_run.log(data, step=step)
            except Exception as exc:  # noqa: BLE001 - a logging backend never ends a run
                log.warning("wandb log failed: %s", exc)

    def epoch_row(self, **row: Any) -> None:
        """One CSV row per epoch (eval columns empty when the epoch was not evaluated)."""
        if not self.enabled:
            return
        path = self.run_dir / CSV
        new = not path.exists() or path.stat().st_size == 0
        with open(path, "a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow({k: _jsonable(v) for k, v in row.items()})

    # ------------------------------------------------------------------ wandb
    def start_wandb(self, config: dict[str, Any], run_id: str | None, name: str) -> None:
        """Offline by default (no login); WANDB_MODE wins over logger.mode. Resumes `run_id` if given."""
        if not self.enabled or self.cfg is None or not self.cfg.get("wandb", False):
            return
        try:
            import wandb
        except ImportError:
            log.warning("logger.wandb=true but wandb is not installed; skipping wandb")
            return
        mode = os.environ.get("WANDB_MODE", str(self.cfg.get("mode", "offline")))
        try:
            self.wandb_run = wandb.init(
                project=self.cfg.get("project", "mobilemamba"), entity=self.cfg.get("entity"), name=name,
                id=run_id, resume="allow", mode=mode, dir=str(self.run_dir), config=config,
                tags=list(self.cfg.get("tags") or []),
            )
            self.wandb_id = self.wandb_run.id
        except Exception as exc:  # noqa: BLE001
            log.warning("wandb.init failed (%s); continuing without wandb", exc)
            self.wandb_run = None

    def close(self) -> None:
        if self.wandb_run is not None:
            try:
                self.wandb_run.finish()
            except Exception:  # noqa: BLE001
                pass
            self.wandb_run = None

    # ------------------------------------------------------------------ summaries
    def write_json(self, name: str, data: dict[str, Any]) -> None:
        if not self.enabled:
            return
        tmp = self.run_dir / f".{name}.tmp"
        tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
        os.replace(tmp, self.run_dir / name)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / JSONL
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


CURVE_POINTS = 100  # train records a run writes at least (every update when it has fewer)


def log_interval(log_every: int, total_updates: int) -> int:
    """Updates between train records: `trainer.log_every` at most, less in a short run, so that curves.png has
    about CURVE_POINTS points per curve (a 30-update run logs every update, a 300-epoch one every `log_every`)."""
    return max(1, min(int(log_every), total_updates // CURVE_POINTS))


Series = tuple[list[float], list[float]]


def curve_data(records: list[dict[str, Any]]) -> dict[str, Series]:
    """The (x, y) series curves.png draws, from every record of the run: per update (train records) the train loss
    and lr; per epoch the mean train loss (`epoch_end` events, every update of the epoch counted), the val loss
    (x: update) and top-1 raw/EMA (x: epoch). Series without a value are left out."""
    train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
    ends = [r for r in records if r.get("event") == "epoch_end" and r.get("train_loss") is not None]
    evals = [r for r in records if r.get("kind") == "eval"]

    def series(rows: list[dict[str, Any]], x: str, y: str) -> Series:
        points = [(r[x], r[y]) for r in rows if r.get(y) is not None]
        return [p[0] for p in points], [p[1] for p in points]

    out = {
        "train_loss": series(train, "iteration", "loss"),
        "epoch_train_loss": series(ends, "iteration", "train_loss"),
        "val_loss": series(evals, "iteration", "val_loss"),
        "lr": series(train, "iteration", "lr"),
        "top1": series(evals, "epoch", "top1"),
        "ema_top1": series(evals, "epoch", "ema_top1"),
    }
    return {name: xy for name, xy in out.items() if xy[0]}


def plot_curves(run_dir: Path, out_name: str = "curves.png") -> Path | None:
    """Loss (per update, per-epoch means, val) and lr against updates, top-1 raw/EMA against epochs, from
    metrics.jsonl (matplotlib Agg): the series of :func:`curve_data`."""
    data = curve_data(read_metrics(run_dir))
    if not data:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (loss, lr, top1) = plt.subplots(1, 3, figsize=(15, 4))
    styles = {  # series: (axis, style, label)
        "train_loss": (loss, "-", "train loss"), "epoch_train_loss": (loss, "o-", "train loss, epoch mean"),
        "val_loss": (loss, "s-", "val loss"), "lr": (lr, "-", None),
        "top1": (top1, "o-", "raw"), "ema_top1": (top1, "s-", "EMA"),
    }
    for name, (x, y) in data.items():
        ax, style, label = styles[name]
        ax.plot(x, y, style, label=label, markersize=4)
    if "top1" in data:
        overlay_published(top1, run_dir, until=max(data["top1"][0]))
    for ax, title, xlabel in ((loss, "loss", "update"), (lr, "learning rate", "update"),
                              (top1, "val top-1 (%)", "epoch")):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    out = Path(run_dir) / out_name
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def overlay_published(ax: Any, run_dir: Path, until: float) -> list[list[tuple[int, float]]]:
    """The published curve the run is compared with (run.json `published.curve`, see engine/ontrack.py), raw and EMA
    top-1 up to epoch `until`, on the run's top-1 axis; returns the series drawn ([] for other runs)."""
    from .. import published

    try:
        summary = json.loads((Path(run_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return []
    curve = (summary.get("published") or {}).get("curve") if isinstance(summary, dict) else None
    if curve is None:
        return []
    return [published.plot_series(ax, curve, "top1", until, label=f"published {curve} raw (ImageNet)"),
            published.plot_series(ax, curve, "top1_ema", until, ls=":", label=f"published {curve} EMA (ImageNet)")]
