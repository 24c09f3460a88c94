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


def plot_curves(run_dir: Path, out_name: str = "curves.png") -> Path | None:
    """Train loss and lr per update, top-1 raw/EMA per epoch, from metrics.jsonl (matplotlib Agg)."""
    records = read_metrics(run_dir)
    train = [r for r in records if r.get("kind") == "train" and "loss" in r]
    evals = [r for r in records if r.get("kind") == "eval"]
    if not train and not evals:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if train:
        it = [r["iteration"] for r in train]
        axes[0].plot(it, [r["loss"] for r in train], label="train loss")
        axes[0].set_xlabel("update")
        axes[0].set_title("loss")
        axes[1].plot(it, [r["lr"] for r in train])
        axes[1].set_xlabel("update")
        axes[1].set_title("learning rate")
    if evals:
        ep = [r["epoch"] for r in evals]
        axes[2].plot(ep, [r.get("top1") for r in evals], "o-", label="raw")
        if any(r.get("ema_top1") is not None for r in evals):
            axes[2].plot(ep, [r.get("ema_top1") for r in evals], "s-", label="EMA")
        overlay_published(axes[2], run_dir, until=max(ep))
        axes[2].set_xlabel("epoch")
        axes[2].set_title("val top-1 (%)")
        axes[2].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
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
