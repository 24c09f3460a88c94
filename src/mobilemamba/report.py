"""Collect run directories (a Hydra multirun, or any tree of runs) into one table and a few plots.

    python -m mobilemamba.report DIR [--out OUT]

A run directory is any directory under DIR holding `run.json` and/or `metrics.jsonl` (written by the engine,
see docs/interfaces.md "Run directory"). `results.json` files written by eval.py anywhere inside a run directory
(e.g. `RUN/eval_fused/results.json`) add the inference throughput and the fused-vs-unfused check.

Writes, in DIR (or OUT): report.md, report.csv, accuracy_vs_speed.png (top-1 against inference img/s and
against FLOPs, with the published ImageNet points of spec §6/§7 for reference) and training_curves.png (train loss
and val top-1 raw/EMA per epoch, every run overlaid, with the published curve of each variant compared on ImageNet).
Runs that crashed or are still running are kept with their status when they have at least one evaluation, and
listed under "Skipped" otherwise.

"Checks" compare only runs of one dataset (same val images), resolution and epochs, and call a difference decided
only when it exceeds twice its sampling error: the binomial standard error sqrt(p(1-p)/n) of each top-1 p on the n
val images, combined over the two runs as sqrt(SE1^2 + SE2^2).
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional

from . import published

RUN_FILES = ("run.json", "metrics.jsonl")
VARIANT_ORDER = ("t2", "t4", "s6", "b1", "b2", "b4")


@dataclass(frozen=True)
class Published:
    """One row of spec §6 (ImageNet-1k top-1, plain 300-epoch and † = KD + 1000 epochs) and §7 (H200 speed)."""

    variant: str
    img_size: int
    params_m: float
    flops_m: float
    top1: float
    top1_kd: float
    infer_img_s: float  # fused, bf16 autocast, batch 256, one H200 (spec §7, second run)


PUBLISHED = (
    Published("T2", 192, 8.8, 255, 73.6, 76.9, 21_300),
    Published("T4", 192, 14.2, 413, 76.1, 78.9, 16_000),
    Published("S6", 224, 15.0, 652, 78.0, 80.7, 18_500),
    Published("B1", 256, 17.1, 1080, 79.9, 82.2, 11_700),
    Published("B2", 384, 17.1, 2427, 81.6, 83.3, 5_900),
    Published("B4", 512, 17.1, 4313, 82.5, 83.6, 3_700),
)


@dataclass
class EpochPoint:
    epoch: int
    train_loss: Optional[float] = None
    top1: Optional[float] = None
    ema_top1: Optional[float] = None
    images: Optional[int] = None  # val images of the evaluation


@dataclass
class Run:
    """What the report knows about one run directory."""

    path: Path
    label: str = ""
    name: str = ""
    model: Optional[str] = None
    img_size: Optional[int] = None
    params: Optional[int] = None
    flops: Optional[int] = None
    best_top1_raw: Optional[float] = None
    best_top1_ema: Optional[float] = None
    last_top1_raw: Optional[float] = None
    last_top1_ema: Optional[float] = None
    epochs_done: Optional[int] = None
    epochs: Optional[int] = None
    train_img_s: Optional[float] = None
    infer_img_s: Optional[float] = None
    infer_note: str = ""
    fused_equal: Optional[bool] = None
    kd: bool = False
    status: str = "unknown"
    curve: list[EpochPoint] = field(default_factory=list)
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # architecture overrides (a shrunken test model)
    dataset: Optional[str] = None  # the data folder's name (run.json `dataset`)
    num_classes: Optional[int] = None
    published_curve: Optional[str] = None  # the published curve the run was compared with (ImageNet runs)
    published_note: str = ""  # why a run of a published variant has none (a † run)

    @property
    def is_variant(self) -> bool:
        """The run trained a published MobileMamba architecture (T2 ... B4, no overrides), at any resolution."""
        return bool(self.model) and self.model.startswith("mobilemamba_") and _short(self) in VARIANT_ORDER \
            and not self.model_kwargs

    @property
    def variant(self) -> str:
        """"T2" for mobilemamba_t2, "T2†" when the run distilled; any other model (a timm model, a MobileMamba with
        overrides) by its name and overrides, e.g. "mobilemamba_t2 (embed_dim 16/32/48, depth 1/1/1)"."""
        if not self.model:
            return "?"
        base = _short(self).upper() if self.is_variant else self.model + _overrides(self.model_kwargs)
        return base + ("†" if self.kd else "")

    @property
    def last_eval(self) -> Optional[EpochPoint]:
        evals = [p for p in self.curve if p.top1 is not None or p.ema_top1 is not None]
        return evals[-1] if evals else None

    @property
    def val_images(self) -> Optional[int]:
        """n of the sampling error: the images of the last evaluation."""
        return self.last_eval.images if self.last_eval else None

    @property
    def best_top1(self) -> Optional[float]:
        vals = [v for v in (self.best_top1_raw, self.best_top1_ema) if v is not None]
        return max(vals) if vals else None

    def sort_key(self) -> tuple:
        rank = VARIANT_ORDER.index(_short(self)) if self.is_variant else len(VARIANT_ORDER)
        return (rank, self.kd, self.label)


def _short(run: Run) -> str:
    return (run.model or "").rsplit("_", 1)[-1]


def _overrides(kwargs: dict[str, Any]) -> str:
    """' (embed_dim 16/32/48, depth 1/1/1)' for model kwargs; '' without any."""
    def value(v: Any) -> str:
        return "/".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)

    return f" ({', '.join(f'{k} {value(v)}' for k, v in kwargs.items())})" if kwargs else ""


# ---------------------------------------------------------------------------------------------- reading files
def find_run_dirs(root: Path) -> list[Path]:
    """Every directory under `root` (itself included) holding run.json or metrics.jsonl; hidden dirs skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if any(f in filenames for f in RUN_FILES):
            found.append(Path(dirpath))
    return found


def read_json(path: Path) -> Optional[dict[str, Any]]:
    """The JSON object in `path`, or None when missing, unreadable or truncated."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The JSON objects of a metrics.jsonl; a torn last line (a killed run) is ignored."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    records = []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def epoch_curve(records: Iterable[dict[str, Any]]) -> list[EpochPoint]:
    """Train loss (epoch_end events) and val top-1 raw/EMA (eval records) per epoch; a repeated epoch keeps its
    last record (a resumed run)."""
    points: dict[int, EpochPoint] = {}
    for rec in records:
        epoch = rec.get("epoch")
        if not isinstance(epoch, int):
            continue
        if rec.get("kind") == "event" and rec.get("event") == "epoch_end":
            points.setdefault(epoch, EpochPoint(epoch)).train_loss = _num(rec.get("train_loss"))
        elif rec.get("kind") == "eval":
            p = points.setdefault(epoch, EpochPoint(epoch))
            p.top1, p.ema_top1, p.images = _num(rec.get("top1")), _num(rec.get("ema_top1")), _int(rec.get("images"))
    return [points[e] for e in sorted(points)]


def _num(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return None if math.isnan(value) else float(value)


def _int(value: Any) -> Optional[int]:
    v = _num(value)
    return None if v is None else int(v)


# ---------------------------------------------------------------------------------------------- one run
def load_run(path: Path) -> tuple[Optional[Run], str]:
    """(Run, "") when the directory holds at least one evaluation, else (None, why it is skipped)."""
    summary = read_json(path / "run.json") or {}
    records = read_jsonl(path / "metrics.jsonl")
    if not summary and not records:
        return None, "run.json unreadable and metrics.jsonl empty"
    run = Run(path=path, curve=epoch_curve(records))
    _fill_from_summary(run, summary)
    _fill_from_records(run, records)
    _fill_sizes(run, path)
    _fill_inference(run, path)
    if run.best_top1 is None and run.last_top1_raw is None:
        done = f"after {len(run.curve)} epoch(s)" if run.curve else "before the first epoch ended"
        return None, f"no evaluation recorded (status {run.status}, stopped {done})"
    return run, ""


def _fill_from_summary(run: Run, s: dict[str, Any]) -> None:
    run.name = str(s.get("name") or "")
    run.model = s.get("model")
    run.img_size = _int(s.get("img_size"))
    run.params, run.flops = _int(s.get("params")), _int(s.get("flops"))
    run.best_top1_raw, run.best_top1_ema = _num(s.get("best_top1_raw")), _num(s.get("best_top1_ema"))
    run.last_top1_raw, run.last_top1_ema = _num(s.get("last_top1")), _num(s.get("last_top1_ema"))
    run.epochs_done, run.epochs = _int(s.get("epochs_done")), _int(s.get("epochs"))
    run.train_img_s = _num(s.get("train_img_per_s"))
    run.status = str(s.get("status") or "unknown")
    phases = s.get("phases") or []
    run.kd = bool(s.get("teacher")) or any((ph or {}).get("distill") not in (None, "none") for ph in phases)
    run.model_kwargs = dict(s.get("model_kwargs") or {})
    dataset = s.get("dataset") or {}
    run.dataset, run.num_classes = dataset.get("name"), _int(dataset.get("num_classes"))
    pub = s.get("published") or {}
    run.published_curve, run.published_note = pub.get("curve"), str(pub.get("note") or "")
    final = s.get("final") or {}
    checks = [f for f in final.values() if isinstance(f, dict) and "fused_top1" in f]
    if checks:
        run.fused_equal = all(f.get("fused_agree") is not False and f.get("fused_top1") == f.get("top1")
                              for f in checks)


def _fill_from_records(run: Run, records: list[dict[str, Any]]) -> None:
    """What run.json lacks (a run killed before writing it), from metrics.jsonl and .hydra/config.yaml."""
    evals = [p for p in run.curve if p.top1 is not None or p.ema_top1 is not None]
    if run.best_top1_raw is None and evals:
        run.best_top1_raw = _max(p.top1 for p in evals)
        run.best_top1_ema = _max(p.ema_top1 for p in evals)
    if run.last_top1_raw is None and evals:
        run.last_top1_raw, run.last_top1_ema = evals[-1].top1, evals[-1].ema_top1
    if run.epochs_done is None:
        run.epochs_done = _max(float(p.epoch) for p in run.curve if p.train_loss is not None)
        run.epochs_done = None if run.epochs_done is None else int(run.epochs_done)
    if run.train_img_s is None:
        speeds = sorted(v for r in records if r.get("kind") == "train" and (v := _num(r.get("img_per_s"))) is not None)
        run.train_img_s = speeds[len(speeds) // 2] if speeds else None
    if run.status == "unknown" and records:
        events = {r.get("event") for r in records if r.get("kind") == "event"}
        run.status = "finished" if "finished" in events else "incomplete"
    cfg = _hydra_config(run.path)
    if not run.name:
        run.name = str(cfg.get("name") or run.path.name)
    model_cfg = cfg.get("model") or {}
    run.model = run.model or model_cfg.get("name")
    run.img_size = run.img_size or _int(model_cfg.get("img_size"))
    run.model_kwargs = run.model_kwargs or dict(model_cfg.get("kwargs") or {})
    if run.epochs is None:
        run.epochs = _int((cfg.get("trainer") or {}).get("epochs"))
    if not run.kd:
        run.kd = str((cfg.get("distill") or {}).get("kind", "none")) not in ("none", "None")


def _max(values: Iterable[Optional[float]]) -> Optional[float]:
    vals = [v for v in values if v is not None]
    return max(vals) if vals else None


def _hydra_config(path: Path) -> dict[str, Any]:
    """The run's composed config (.hydra/config.yaml), unresolved; {} when absent or unreadable."""
    cfg_file = path / ".hydra" / "config.yaml"
    if not cfg_file.exists():
        return {}
    try:
        from omegaconf import OmegaConf

        data = OmegaConf.to_container(OmegaConf.load(cfg_file), resolve=False)
    except Exception:  # noqa: BLE001 - a report never fails on one bad file
        return {}
    return data if isinstance(data, dict) else {}


def _fill_sizes(run: Run, path: Path) -> None:
    """Params/FLOPs from mobilemamba.info when run.json lacks them, for an unmodified variant at its resolution."""
    if run.params is not None and run.flops is not None or not run.is_variant:
        return  # a shrunken test model or another model: the variant's counts would be wrong
    info = _variant_info(run.model)
    if info and info["img_size"] == run.img_size:
        run.params = run.params if run.params is not None else info["params"]
        run.flops = run.flops if run.flops is not None else info["flops"]


_INFO_CACHE: dict[str, Optional[dict]] = {}


def _variant_info(model: str) -> Optional[dict]:
    if model not in _INFO_CACHE:
        try:
            from mobilemamba.info import variant_info

            _INFO_CACHE[model] = variant_info(model)
        except Exception:  # noqa: BLE001 - unknown model names just leave the columns blank
            _INFO_CACHE[model] = None
    return _INFO_CACHE[model]


def eval_results(path: Path) -> list[dict[str, Any]]:
    """Every eval.py results.json inside the run directory (not inside a nested run directory)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        here = Path(dirpath)
        if here != path and any(f in filenames for f in RUN_FILES):
            dirnames[:] = []
            continue
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        if "results.json" in filenames and (res := read_json(here / "results.json")) is not None:
            out.append(res)
    return out


def _fill_inference(run: Run, path: Path) -> None:
    """Fastest fused throughput among the eval results; fused == unfused when a fused and an unfused eval of the
    same weights give the same top-1 on the same number of images."""
    results = eval_results(path)
    fused = [r for r in results if r.get("fused") and _num(r.get("throughput")) is not None]
    if fused:
        best = max(fused, key=lambda r: r["throughput"])
        run.infer_img_s = float(best["throughput"])
        extras = [name for key, name in (("throughput_compiled", "compiled"), ("throughput_cuda_graph", "CUDA graph"))
                  if best.get(key)]
        run.infer_note = ", ".join([best.get("amp", "none"), f"batch {best.get('throughput_batch', '?')}",
                                    str(best.get("device", "?")), *extras])
    for f in (r for r in results if r.get("fused")):
        for u in (r for r in results if not r.get("fused")):
            if (f.get("checkpoint"), f.get("ema"), f.get("amp")) == (u.get("checkpoint"), u.get("ema"), u.get("amp")):
                same = f.get("top1") == u.get("top1") and f.get("images") == u.get("images")
                run.fused_equal = same if run.fused_equal is None else (run.fused_equal and same)


# ---------------------------------------------------------------------------------------------- collecting
def collect(root: Path) -> tuple[list[Run], list[tuple[Path, str]]]:
    """(runs sorted by variant, [(dir, reason)] skipped); labels are run names, made unique by their path."""
    runs, skipped = [], []
    for path in find_run_dirs(root):
        run, why = load_run(path)
        if run is None:
            skipped.append((path, why))
        else:
            runs.append(run)
    counts: dict[str, int] = {}
    for run in runs:
        counts[run.name] = counts.get(run.name, 0) + 1
    for run in runs:
        rel = run.path.relative_to(root).as_posix() if run.path != root else "."
        run.label = run.name if counts[run.name] == 1 else f"{run.name} ({rel})"
    runs.sort(key=Run.sort_key)
    return runs, skipped


# ---------------------------------------------------------------------------------------------- table
COLUMNS = [  # (csv key, markdown header)
    ("run", "run"), ("variant", "variant"), ("img_size", "res"), ("params_m", "params (M)"), ("flops_m", "FLOPs (M)"),
    ("best_top1_raw", "best top-1 raw"), ("best_top1_ema", "best top-1 EMA"), ("last_top1_raw", "last top-1 raw"),
    ("last_top1_ema", "last top-1 EMA"), ("epochs", "epochs"), ("train_img_s", "train img/s"),
    ("infer_img_s_fused", "infer img/s (fused)"), ("fused_equals_unfused", "fused = unfused"),
    ("vs_published", "vs published at this epoch"), ("status", "status"),
]
EXTRA_CSV = ["vs_published_epoch", "vs_published_raw", "vs_published_ema", "infer_setting", "path"]


def vs_published(run: Run) -> Optional[dict[str, Any]]:
    """The run's last evaluation against its published curve at the same epoch: {epoch, raw, ema} in points (None
    where either side has no value); None for a run without a published curve or an epoch outside it."""
    last = run.last_eval
    point = published.at(run.published_curve, last.epoch) if last and run.published_curve else None
    if point is None:
        return None
    diff = {"raw": (last.top1, point.top1), "ema": (last.ema_top1, point.top1_ema)}
    return {"epoch": last.epoch, **{k: None if a is None else a - b for k, (a, b) in diff.items()}}


def _vs_published_text(run: Run, vs: Optional[dict[str, Any]]) -> Optional[str]:
    """'raw -0.73, EMA +0.10 (epoch 5, T2)' for the table; the reason a † run has none."""
    if vs is None:
        return "no published † curve" if run.published_note else None
    parts = [f"{name} {vs[k]:+.2f}" for k, name in (("raw", "raw"), ("ema", "EMA")) if vs[k] is not None]
    return f"{', '.join(parts)} (epoch {vs['epoch']}, {run.published_curve})"


def row(run: Run, root: Path) -> dict[str, Any]:
    """One table row with plain values (the CSV); the Markdown formats them."""
    epochs = None if run.epochs_done is None else f"{run.epochs_done}/{run.epochs if run.epochs is not None else '?'}"
    vs = vs_published(run)
    return {
        "run": run.label, "variant": run.variant, "img_size": run.img_size,
        "params_m": None if run.params is None else run.params / 1e6,
        "flops_m": None if run.flops is None else run.flops / 1e6,
        "best_top1_raw": run.best_top1_raw, "best_top1_ema": run.best_top1_ema,
        "last_top1_raw": run.last_top1_raw, "last_top1_ema": run.last_top1_ema,
        "epochs": epochs, "train_img_s": run.train_img_s, "infer_img_s_fused": run.infer_img_s,
        "fused_equals_unfused": None if run.fused_equal is None else ("yes" if run.fused_equal else "NO"),
        "vs_published": _vs_published_text(run, vs),
        **{f"vs_published_{k}": vs[k] if vs else None for k in ("epoch", "raw", "ema")},
        "status": run.status, "infer_setting": run.infer_note,
        "path": run.path.relative_to(root).as_posix() if run.path != root else ".",
    }


def fmt(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key in ("params_m", "flops_m"):
        return f"{value:.2f}" if value < 10 else f"{value:.1f}"
    if key.startswith(("best_", "last_")):
        return f"{value:.2f}"
    if key in ("train_img_s", "infer_img_s_fused"):
        return f"{value:,.0f}" if value >= 100 else f"{value:.1f}"
    return str(value)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    keys = [k for k, _ in COLUMNS] + EXTRA_CSV
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for r in rows:
            writer.writerow({k: "" if r[k] is None else r[k] for k in keys})


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| " + " | ".join(h for _, h in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(k, r[k]).replace("|", "\\|") for k, _ in COLUMNS) + " |")
    return lines


def published_table() -> list[str]:
    lines = ["| variant | res | params (M) | FLOPs (M) | top-1 | top-1 † | H200 img/s (fused, bf16, batch 256) |",
             "|---|---|---|---|---|---|---|"]
    for p in PUBLISHED:
        lines.append(f"| {p.variant} | {p.img_size} | {p.params_m} | {p.flops_m:.0f} | {p.top1} | {p.top1_kd} "
                     f"| {p.infer_img_s:,.0f} |")
    return lines


CHECKS_NOTE = ("Runs are compared only on the same dataset, val images, resolution and epochs (a KD run may be "
               "longer, as the † recipe is). A difference decides a check only when it exceeds twice its sampling "
               "error: the binomial standard error sqrt(p(1-p)/n) of each best top-1 p on the n val images, combined "
               "as sqrt(SE1^2 + SE2^2); otherwise the check is \"not decided\".")


def write_markdown(root: Path, rows: list[dict[str, Any]], skipped: list[tuple[Path, str]], plots: list[Path],
                   path: Path, claims: list[str] = ()) -> None:
    when = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"# Runs under `{root}`", "", f"{len(rows)} run(s), {len(skipped)} skipped; generated {when}.", ""]
    lines += [f"![{p.stem}]({os.path.relpath(p, path.parent)})" for p in plots]
    lines += ["", *markdown_table(rows), ""]
    lines += ["top-1 in %: best = best evaluated epoch, last = last evaluation; † = trained with KD; "
              "infer img/s = fastest fused eval.py throughput found in the run dir (setting in report.csv); "
              "fused = unfused: same top-1 on the same images (engine's final eval and/or eval.py); "
              "vs published: the last evaluation minus the published ImageNet curve (spec §6.2) at the same epoch, "
              "for ImageNet runs of a published variant (no † curves were published).", ""]
    if claims:
        lines += ["## Checks", "", *[f"- {c}" for c in claims], "", CHECKS_NOTE, ""]
    if skipped:
        lines += ["## Skipped", ""]
        lines += [f"- `{_rel(p, root)}`: {why}" for p, why in skipped]
        lines.append("")
    lines += ["## Published reference (ImageNet-1k, spec §6/§7; † = KD + 1000 epochs)", "", *published_table(), ""]
    path.write_text("\n".join(lines))


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix() if path != root else "."


# ---------------------------------------------------------------------------------------------- checks
def sampling_error(top1: float, n: int) -> float:
    """Binomial standard error, in points, of a top-1 (%) measured on n images."""
    p = min(max(top1 / 100.0, 0.0), 1.0)
    return 100.0 * math.sqrt(p * (1.0 - p) / n)


def decide(a: float, b: float, n: int) -> tuple[float, float, str]:
    """(b - a, margin, verdict) for two top-1s on the same n val images: 'higher' or 'lower' when |b - a| exceeds
    the margin, twice the combined standard error sqrt(SE_a^2 + SE_b^2); 'not decided' otherwise."""
    diff = b - a
    margin = 2.0 * math.hypot(sampling_error(a, n), sampling_error(b, n))
    return diff, margin, "higher" if diff > margin else "lower" if diff < -margin else "not decided"


def _data(run: Run) -> tuple:
    """What makes two runs' accuracies comparable: the dataset, its classes and the val images evaluated."""
    return (run.dataset, run.num_classes, run.val_images)


def _data_text(run: Run) -> str:
    classes = f"{run.num_classes} classes, " if run.num_classes else ""
    return f"{run.dataset or 'an unnamed dataset'} ({classes}{run.val_images:,} val images)"


def _checkable(run: Run) -> bool:
    return run.best_top1 is not None and bool(run.val_images)


def check_size_ranking(runs: list[Run]) -> list[str]:
    """Among plain (non-KD) runs of the published architectures on one dataset, resolution and number of epochs
    (planned and done), best top-1 must grow with the model size by more than its sampling error, step by step.
    Several runs of one variant (seeds) enter as their mean."""
    groups: dict[tuple, list[Run]] = {}
    for run in runs:
        if not run.kd and run.is_variant and _checkable(run):
            groups.setdefault((*_data(run), run.img_size, run.epochs, run.epochs_done), []).append(run)
    lines = []
    for key, group in sorted(groups.items(), key=lambda kv: str(kv[0])):
        by_variant: dict[str, list[float]] = {}
        for run in sorted(group, key=Run.sort_key):
            by_variant.setdefault(run.variant, []).append(run.best_top1)
        if len(by_variant) < 2:
            continue
        tops = {v: sum(t) / len(t) for v, t in by_variant.items()}
        chain = " < ".join(f"{v} {t:.2f}" + (f" (mean of {len(by_variant[v])})" if len(by_variant[v]) > 1 else "")
                           for v, t in tops.items())
        steps = [(a, b, *decide(tops[a], tops[b], group[0].val_images)) for a, b in zip(tops, list(tops)[1:])]
        verdicts = {verdict for *_, verdict in steps}
        verdict = ("does NOT hold" if "lower" in verdicts else "holds" if verdicts == {"higher"} else "not decided")
        detail = ", ".join(f"{a}→{b} {d:+.2f} vs 2 SE {m:.2f}" for a, b, d, m, _ in steps)
        img, epochs, done = key[3:]
        lines.append(f"size ranking on {_data_text(group[0])}, {img} px, {done}/{epochs} epochs: {chain}: "
                     f"{verdict} ({detail})")
    return lines


def check_kd_gain(runs: list[Run]) -> list[str]:
    """Each finished KD run against each finished plain run of the same model, dataset and resolution (the †
    mechanism: KD and a longer schedule, so the epochs may differ and are stated)."""
    finished = [r for r in runs if _checkable(r) and r.epochs_done is not None and r.epochs_done == r.epochs]
    lines = []
    for kd in (r for r in finished if r.kd):
        for plain in (r for r in finished if not r.kd and (r.model, r.model_kwargs, r.img_size, *_data(r))
                      == (kd.model, kd.model_kwargs, kd.img_size, *_data(kd))):
            gain, margin, verdict = decide(plain.best_top1, kd.best_top1, kd.val_images)
            outcome = {"higher": "holds", "lower": "does NOT hold (KD lost)", "not decided": "not decided"}[verdict]
            lines.append(f"KD: {kd.label} ({kd.variant}, {kd.epochs_done} epochs) {kd.best_top1:.2f} vs {plain.label} "
                         f"({plain.variant}, {plain.epochs_done} epochs) {plain.best_top1:.2f} on {_data_text(kd)}, "
                         f"{kd.img_size} px: {gain:+.2f} points vs 2 SE {margin:.2f}: {outcome} "
                         "(published † gains on ImageNet: +1.1 to +3.3, 1000 vs 300 epochs)")
    return lines


def check_fused(runs: list[Run]) -> list[str]:
    checked = [r for r in runs if r.fused_equal is not None]
    if not checked:
        return []
    bad = [r.label for r in checked if not r.fused_equal]
    return [f"fused = unfused (same top-1 on the same images): {len(checked) - len(bad)}/{len(checked)} runs"
            + (f"; DIFFERENT: {', '.join(bad)}" if bad else "")]


def checks(runs: list[Run]) -> list[str]:
    """The paper's claims as far as these runs can show them (best top-1 = best of raw/EMA)."""
    return check_size_ranking(runs) + check_kd_gain(runs) + check_fused(runs)


# ---------------------------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colors(n: int) -> list:
    plt = _pyplot()
    cmap = plt.get_cmap("tab10" if n <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n)]


def _plot_published(ax, x_of: str) -> None:
    """Plain (circles) and † (stars) points of each variant, joined by a dotted line (same model, same x)."""
    xs = [getattr(p, x_of) for p in PUBLISHED]
    ax.plot(xs, [p.top1 for p in PUBLISHED], "o", color="0.55", ms=6, label="published (ImageNet-1k, 300 ep)")
    ax.plot(xs, [p.top1_kd for p in PUBLISHED], "*", color="0.55", ms=10, label="published † (KD, 1000 ep)")
    for p, x in zip(PUBLISHED, xs):
        ax.plot([x, x], [p.top1, p.top1_kd], ":", color="0.6", lw=1)
        ax.annotate(p.variant, (x, p.top1), textcoords="offset points", xytext=(5, -4), fontsize=8, color="0.4")


def _plot_runs(ax, runs: list[Run], colors: list, x_of) -> int:
    shown = 0
    for run, color in zip(runs, colors):
        x, y = x_of(run), run.best_top1
        if x is None or y is None:
            continue
        ax.plot([x], [y], "*" if run.kd else "o", color=color, ms=11 if run.kd else 8, mec="black", mew=0.6,
                label=f"{run.label} [{run.variant}]")
        ax.annotate(run.variant, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=9)
        shown += 1
    return shown


def plot_accuracy_vs_speed(runs: list[Run], out: Path) -> Path:
    """Best top-1 against fused inference img/s (left) and FLOPs (right); published points in grey."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(15, 6))
    colors = _colors(len(runs))
    panels = (
        (axes[0], "infer_img_s", lambda r: r.infer_img_s, "inference throughput (img/s, fused, log scale)"),
        (axes[1], "flops_m", lambda r: None if r.flops is None else r.flops / 1e6, "FLOPs (M MACs, log scale)"),
    )
    for ax, pub_key, x_of, xlabel in panels:
        _plot_published(ax, pub_key)
        shown = _plot_runs(ax, runs, colors, x_of)
        missing = len(runs) - shown
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("top-1 (%), best of raw/EMA")
        ax.grid(alpha=0.3, which="both")
        title = "top-1 vs inference speed" if pub_key == "infer_img_s" else "top-1 vs FLOPs"
        ax.set_title(title + (f"  ({missing} run(s) without a value not shown)" if missing else ""), fontsize=10)
    legend = {}
    for ax in axes:  # one legend under both panels, so it never hides a point
        for handle, label in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    ncol = min(4, max(1, len(legend)))
    fig.legend(list(legend.values()), list(legend.keys()), loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle("This report's runs (coloured) vs the published MobileMamba (grey: ImageNet-1k, one H200, bf16, "
                 "batch 256)", fontsize=11)
    rows = math.ceil(len(legend) / ncol)
    fig.tight_layout(rect=(0, min(0.4, 0.035 * rows + 0.02), 1, 1))
    path = out / "accuracy_vs_speed.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def published_overlays(runs: list[Run]) -> dict[str, tuple[int, int]]:
    """{curve: (last epoch, index of its first run)}: the published curves the training-curves plot adds, each up to
    the last evaluated epoch of the runs compared with it, in the colour of the first of them."""
    out: dict[str, tuple[int, int]] = {}
    for i, run in enumerate(runs):
        if run.published_curve and run.last_eval:
            until, first = out.get(run.published_curve, (0, i))
            out[run.published_curve] = (max(until, run.last_eval.epoch), first)
    return out


def plot_training_curves(runs: list[Run], out: Path) -> Path:
    """Train loss, val top-1 raw and val top-1 EMA per epoch, one colour per run; the published curve (dashed, the
    colour of its first run) beside the runs compared with it."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(17, 5))
    colors = _colors(len(runs))
    for curve, (until, first) in published_overlays(runs).items():
        for ax, column in zip(axes, ("train_ce", "top1", "top1_ema")):
            published.plot_series(ax, curve, column, until, color=colors[first], alpha=0.7)
    for run, color in zip(runs, colors):
        c = run.curve
        series = (
            (axes[0], [(p.epoch, p.train_loss) for p in c if p.train_loss is not None]),
            (axes[1], [(p.epoch, p.top1) for p in c if p.top1 is not None]),
            (axes[2], [(p.epoch, p.ema_top1) for p in c if p.ema_top1 is not None]),
        )
        for ax, pts in series:
            if pts:
                ax.plot(*zip(*pts), "o-" if len(pts) < 30 else "-", color=color, ms=3, lw=1.4, label=run.label)
    from matplotlib.ticker import MaxNLocator

    titles = ("train loss (epoch mean; † runs include the KD term)", "val top-1 raw (%)", "val top-1 EMA (%)")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / "training_curves.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------- entry point
def make_report(root: Path, out: Optional[Path] = None) -> dict[str, Any]:
    """Write report.md, report.csv and the PNGs; returns {"runs", "skipped", "files"}."""
    root = Path(root).resolve()
    if not root.is_dir():
        raise FileNotFoundError(f"not a directory: {root}")
    out = Path(out).resolve() if out is not None else root
    out.mkdir(parents=True, exist_ok=True)
    runs, skipped = collect(root)
    rows = [row(r, root) for r in runs]
    plots = [plot_accuracy_vs_speed(runs, out), plot_training_curves(runs, out)]
    write_csv(rows, out / "report.csv")
    claims = checks(runs)
    write_markdown(root, rows, skipped, plots, out / "report.md", claims)
    return {"runs": runs, "skipped": skipped, "checks": claims,
            "files": [out / "report.md", out / "report.csv", *plots]}


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mobilemamba.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("dir", type=Path, help="a Hydra multirun dir, or any directory holding run directories")
    parser.add_argument("--out", type=Path, default=None, help="where to write report.md/.csv and PNGs (default DIR)")
    args = parser.parse_args(argv)
    try:
        result = make_report(args.dir, args.out)
    except FileNotFoundError as exc:
        parser.error(str(exc))
    print("\n".join(markdown_table([row(r, args.dir.resolve()) for r in result["runs"]])))
    print("\n".join(result["checks"]))
    for path, why in result["skipped"]:
        print(f"skipped {path}: {why}")
    print("wrote " + ", ".join(str(p) for p in result["files"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
