"""Reading the composed config: validation (one-line errors naming the key), lr scaling, phases, eval cadence."""
from __future__ import annotations

import difflib
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from torch import nn

from ..data.config import DataParams
from ..models.compiling import COMPILE_MODES

AMP_MODES = ("fp16", "bf16", "none")
SCHEDULE_MODES = ("continue", "restart")
PHASE_KEYS = {"name", "epochs", "distill", "overrides"}
OVERRIDE_KEYS = {"lr_scale", "schedule", "warmup_epochs", "ema_decay", "grad_clip"}


class ConfigError(ValueError):
    """A bad config value; the message names the key and fits on one line."""


def plain(value: Any) -> Any:
    """OmegaConf containers → python containers (resolved); anything else unchanged."""
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


# ----------------------------------------------------------------------------------------------- lr scaling
@dataclass(frozen=True)
class LrPlan:
    """The learning rates a run uses, after scaling by the global batch (spec §2: base × batch / 512)."""

    global_batch: int
    lr: float
    warmup_lr: float
    min_lr: float


def global_batch(cfg: DictConfig, world_size: int) -> int:
    return int(cfg.data.batch_size) * int(world_size) * int(cfg.trainer.accum_steps)


def lr_plan(cfg: DictConfig, world_size: int) -> LrPlan:
    """lr, warmup lr and min lr for this world size. `optim.lr` (absolute) wins over `optim.lr_base`."""
    gb = global_batch(cfg, world_size)
    scale = gb / float(cfg.optim.lr_base_batch)
    if cfg.optim.get("lr") is not None:
        lr = float(cfg.optim.lr)
        # keep the recipe's ratios: warmup starts at lr/1000, cosine ends at lr/100
        ratio_warm = float(cfg.sched.warmup_lr_base) / float(cfg.optim.lr_base)
        ratio_min = float(cfg.sched.min_lr_base) / float(cfg.optim.lr_base)
        return LrPlan(gb, lr, lr * ratio_warm, lr * ratio_min)
    return LrPlan(
        gb,
        float(cfg.optim.lr_base) * scale,
        float(cfg.sched.warmup_lr_base) * scale,
        float(cfg.sched.min_lr_base) * scale,
    )


# ----------------------------------------------------------------------------------------------- phases
@dataclass(frozen=True)
class Phase:
    """One stretch of training with its own length, loss and overrides; state carries over between phases."""

    name: str
    epochs: int
    distill: dict[str, Any] | None  # None = no teacher
    lr_scale: float = 1.0
    schedule: str = "continue"  # continue: one cosine over consecutive phases; restart: a fresh cosine
    warmup_epochs: float | None = None  # for a restarted schedule (None = sched.warmup_epochs)
    ema_decay: float | None = None
    grad_clip: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _distill_for_phase(value: Any, top: dict[str, Any] | None, where: str) -> dict[str, Any] | None:
    """null → the top-level distill group; 'none'/false → off; a kind name or mapping → merged over top-level."""
    if value is None:
        chosen = top
    elif value is False or (isinstance(value, str) and value.lower() in ("none", "off", "false")):
        return None
    elif isinstance(value, str):
        chosen = {**(top or {}), "kind": value}
    elif isinstance(value, dict):
        chosen = {**(top or {}), **value}
    else:
        raise ConfigError(f"{where}.distill must be null, 'none', a kind name or a mapping, got {value!r}")
    if not chosen or str(chosen.get("kind", "none")).lower() == "none":
        return None
    return chosen


def resolve_phases(cfg: DictConfig) -> list[Phase]:
    """trainer.phases as a list of Phase; null → one phase of trainer.epochs with the top-level distill."""
    top = plain(cfg.get("distill"))
    raw = plain(cfg.trainer.get("phases"))
    if raw is None:
        _positive(cfg, "trainer.epochs", integer=True)
        raw = [{"name": "main", "epochs": int(cfg.trainer.epochs), "distill": None}]
    if not isinstance(raw, list) or not raw:
        raise ConfigError("trainer.phases must be a non-empty list of {name, epochs, distill, overrides}")
    phases: list[Phase] = []
    for i, entry in enumerate(raw):
        where = f"trainer.phases[{i}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping, got {entry!r}")
        unknown = set(entry) - PHASE_KEYS
        if unknown:
            raise ConfigError(f"{where} has unknown key(s) {sorted(unknown)}; known: {sorted(PHASE_KEYS)}")
        epochs = entry.get("epochs")
        if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs <= 0:
            raise ConfigError(f"{where}.epochs must be a positive integer, got {epochs!r}")
        ov = entry.get("overrides") or {}
        unknown = set(ov) - OVERRIDE_KEYS
        if unknown:
            raise ConfigError(f"{where}.overrides has unknown key(s) {sorted(unknown)}; known: {sorted(OVERRIDE_KEYS)}")
        schedule = ov.get("schedule", "continue")
        if schedule not in SCHEDULE_MODES:
            raise ConfigError(f"{where}.overrides.schedule must be continue|restart, got {schedule!r}")
        lr_scale = float(ov.get("lr_scale", 1.0))
        if lr_scale <= 0:
            raise ConfigError(f"{where}.overrides.lr_scale must be > 0, got {lr_scale}")
        phases.append(
            Phase(
                name=str(entry.get("name") or f"phase{i}"),
                epochs=epochs,
                distill=_distill_for_phase(entry.get("distill"), top, where),
                lr_scale=lr_scale,
                schedule=schedule if i > 0 else "restart",
                warmup_epochs=ov.get("warmup_epochs"),
                ema_decay=ov.get("ema_decay"),
                grad_clip=ov.get("grad_clip"),
            )
        )
    if cfg.trainer.get("phases") is not None:
        _check_epochs_unused(cfg.trainer.get("epochs"), phases)
    return phases


def _check_epochs_unused(epochs: Any, phases: list[Phase]) -> None:
    """With trainer.phases the phases decide the run's length: a trainer.epochs that disagrees would be ignored."""
    total = sum(ph.epochs for ph in phases)
    if epochs is None or epochs == total:
        return
    each = " ".join(f"trainer.phases.{i}.epochs={ph.epochs}" for i, ph in enumerate(phases))
    raise ConfigError(
        f"trainer.epochs={epochs} is not used: trainer.phases decide the run's length ({total} epochs); "
        f"set the length of each phase instead, e.g. {each}"
    )


@dataclass(frozen=True)
class Segment:
    """Phases under one cosine: a segment starts at phase 0 and at every phase with schedule=restart."""

    first: int  # index of its first phase
    last: int  # index of its last phase (inclusive)
    epochs: int
    warmup_epochs: float
    warmup_key: str  # the config key its warm-up comes from


def schedule_segments(phases: list[Phase], warmup_epochs: float) -> list[Segment]:
    """The cosine segments of a run; `warmup_epochs` is sched.warmup_epochs (a restarted phase may override it)."""
    starts = [i for i, ph in enumerate(phases) if i == 0 or ph.schedule == "restart"]
    segments = []
    for j, first in enumerate(starts):
        last = (starts[j + 1] if j + 1 < len(starts) else len(phases)) - 1
        own = phases[first].warmup_epochs
        segments.append(Segment(
            first, last, sum(ph.epochs for ph in phases[first:last + 1]),
            float(warmup_epochs if own is None else own),
            "sched.warmup_epochs" if own is None else f"trainer.phases.{first}.overrides.warmup_epochs",
        ))
    return segments


def check_warmup(cfg: DictConfig, phases: list[Phase]) -> list[str]:
    """Warm-up longer than the stretch of training it starts is an error (the lr would never leave it);
    longer than a third of it, a warning (returned)."""
    warnings = []
    for seg in schedule_segments(phases, cfg.sched.warmup_epochs):
        if cfg.trainer.get("phases") is None:
            length = f"trainer.epochs={seg.epochs}"
        else:
            length = " + ".join(f"trainer.phases.{i}.epochs={phases[i].epochs}" for i in range(seg.first, seg.last + 1))
        said = f"{seg.warmup_key}={seg.warmup_epochs:g} is longer than"
        if seg.warmup_epochs > seg.epochs:
            raise ConfigError(f"{said} the run ({length}): the lr would never leave warm-up; set {seg.warmup_key} "
                              f"to a third of the run or less (e.g. {seg.warmup_key}={seg.epochs / 3:.2g})")
        if seg.warmup_epochs > seg.epochs / 3:
            warnings.append(f"{said} a third of the run ({length}): most of it is spent warming up")
    return warnings


def should_evaluate(epoch: int, last_epoch_of_phase: bool, every: int, every_from: int) -> bool:
    """Reference cadence: every `every` epochs, every epoch from `every_from`, and always at a phase end.

    `epoch` is 1-based and counts over the whole run.
    """
    return last_epoch_of_phase or epoch % max(1, every) == 0 or epoch >= every_from


# ----------------------------------------------------------------------------------------------- validation
def check_model(model_cfg: DictConfig) -> None:
    """model.name is a MobileMamba variant or any timm model; model.img_size unset (null) takes the model's default
    input size (its timm pretrained_cfg)."""
    import timm

    import mobilemamba  # noqa: F401 - registers the variants with timm
    from mobilemamba.models import VARIANTS, default_img_size

    if OmegaConf.is_missing(model_cfg, "name"):
        raise ConfigError("model.name is not set: pass model.name=NAME, a timm model name (e.g. repvit_m0_9)")
    name = str(model_cfg.get("name"))
    if not timm.is_model(name):
        raise ConfigError(f"model.name: unknown model {name!r}; expected a MobileMamba variant ({', '.join(VARIANTS)}) "
                          f"or a timm model name (timm.list_models())")
    if model_cfg.get("img_size") is None:
        size = default_img_size(name)
        if size is None:
            raise ConfigError(f"model.img_size is not set and {name} has no default input size; pass model.img_size=N")
        with open_dict(model_cfg):
            model_cfg.img_size = size


def build_model(model_cfg: DictConfig, num_classes: int, **override: Any) -> nn.Module:
    """The model `model_cfg` describes (name, drop_path_rate, scan_backend, kwargs), untrained; `override` replaces
    any of those (e.g. scan_backend='torch' for counting on the meta device)."""
    from mobilemamba.models import create_classifier

    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in (plain(model_cfg.get("kwargs")) or {}).items()}
    args = dict(img_size=model_cfg.get("img_size"), drop_path_rate=model_cfg.get("drop_path_rate"),
                scan_backend=str(model_cfg.get("scan_backend") or "auto"), **kwargs)
    args.update(override)
    return create_classifier(str(model_cfg.name), num_classes=int(num_classes), **args)


def _positive(cfg: DictConfig, key: str, *, integer: bool = False, allow_zero: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value >= 0 if allow_zero else value > 0)
    if integer:
        ok = ok and float(value).is_integer()
    if value is None:
        example = "N" if integer else "VALUE"
        raise ConfigError(f"{key} is not set (pass {key}={example})")
    if not ok:
        kind = "a non-negative" if allow_zero else "a positive"
        raise ConfigError(f"{key} must be {kind} {'integer' if integer else 'number'}, got {value!r}")


def validate_train_config(cfg: DictConfig, world_size: int = 1, *, check_paths: bool = True) -> list[str]:
    """Every check that can fail before any work: raises ConfigError naming the key; returns the warnings."""
    for key in ("model", "data", "optim", "sched", "aug", "trainer"):
        if key not in cfg:
            raise ConfigError(f"config group '{key}' is missing")
    check_model(cfg.model)
    _positive(cfg, "model.img_size", integer=True)
    dpr = cfg.model.get("drop_path_rate")
    if dpr is not None and not 0.0 <= float(dpr) < 1.0:
        raise ConfigError(f"model.drop_path_rate must be in [0, 1), got {dpr!r}")
    if cfg.optim.get("lr") is not None:
        _positive(cfg, "optim.lr")
    else:
        _positive(cfg, "optim.lr_base")
    _positive(cfg, "optim.lr_base_batch")
    _positive(cfg, "optim.weight_decay", allow_zero=True)
    _positive(cfg, "data.batch_size", integer=True)
    _positive(cfg, "data.eval_batch_size", integer=True)
    _positive(cfg, "data.num_classes", integer=True)
    _positive(cfg, "trainer.accum_steps", integer=True)
    _positive(cfg, "trainer.ema_decay", allow_zero=True)
    _positive(cfg, "trainer.max_nonfinite", integer=True)
    if OmegaConf.select(cfg, "trainer.profile") is not None:
        _positive(cfg, "trainer.profile", integer=True, allow_zero=True)
    _positive(cfg, "sched.warmup_epochs", allow_zero=True)
    if str(cfg.trainer.amp) not in AMP_MODES:
        raise ConfigError(f"trainer.amp must be one of {'|'.join(AMP_MODES)}, got {cfg.trainer.amp!r}")
    compile_how(cfg.trainer.get("compile"))
    mode = str(cfg.trainer.get("compile_mode") or "auto")
    if mode not in ("auto", *COMPILE_MODES):
        raise ConfigError(f"trainer.compile_mode must be one of auto|{'|'.join(COMPILE_MODES)}, got {mode!r}")
    check_capture(cfg)
    apply_global_batch(cfg, world_size)
    mixing = float(cfg.aug.get("mixup", 0) or 0) > 0 or float(cfg.aug.get("cutmix", 0) or 0) > 0
    if mixing and int(cfg.data.batch_size) % 2:
        raise ConfigError(f"data.batch_size must be even with mixup/cutmix (timm Mixup), got {cfg.data.batch_size}")
    warnings = check_warmup(cfg, resolve_phases(cfg))
    if check_paths:
        check_data_paths(cfg.data)
    return warnings


def compile_how(value: Any) -> str | None:
    """trainer.compile: false (None), true (the whole train model: 'whole'), 'regional' (each block) or 'auto'
    (decided by the device: engine/step.py, resolve_step_plan)."""
    if value is None or value is False or str(value).lower() in ("false", "none"):
        return None
    if value is True or str(value).lower() in ("true", "whole"):
        return "whole"
    if str(value).lower() in ("regional", "auto"):
        return str(value).lower()
    raise ConfigError(f"trainer.compile must be auto, false, true or regional, got {value!r}")


def check_capture(cfg: DictConfig) -> str:
    """trainer.capture: auto (the default; `resolve_step_plan` decides), model (CUDA graphs of the compiled model) or
    update (the whole update as one CUDA graph: one micro-batch per update, the fused AdamW that skips on the device)."""
    capture = str(cfg.trainer.get("capture") or "auto")
    if capture not in ("auto", "model", "update"):
        raise ConfigError(f"trainer.capture must be auto, model or update, got {capture!r}")
    if capture == "update" and int(cfg.trainer.accum_steps) != 1:
        raise ConfigError(f"trainer.capture=update captures one micro-batch per update; trainer.accum_steps="
                          f"{cfg.trainer.accum_steps} needs trainer.capture=model")
    if capture == "update" and cfg.optim.get("fused", "auto") is False:
        raise ConfigError("trainer.capture=update needs the fused AdamW (optim.fused=auto or true), got optim.fused=false")
    return capture


def update_capturable(cfg: DictConfig) -> bool:
    """The whole update can be one CUDA graph: one micro-batch per update and the fused AdamW."""
    return int(cfg.trainer.accum_steps) == 1 and cfg.optim.get("fused", "auto") is not False


def apply_global_batch(cfg: DictConfig, world_size: int) -> None:
    """trainer.global_batch (when set) decides data.batch_size = global / (world size x accum_steps)."""
    gb = cfg.trainer.get("global_batch")
    if gb is None:
        return
    per = int(world_size) * int(cfg.trainer.accum_steps)
    if not isinstance(gb, int) or gb <= 0 or gb % per:
        raise ConfigError(
            f"trainer.global_batch={gb!r} is not divisible by world size {world_size} x trainer.accum_steps "
            f"{cfg.trainer.accum_steps}"
        )
    with open_dict(cfg):
        cfg.data.batch_size = gb // per


def dataset_name(data_cfg: DictConfig) -> str:
    """What run.json calls the dataset: the name of its folder (cifar10_jpg, imagenet, ...), or the loader's for
    generated data; the report compares only runs of one dataset."""
    root = data_cfg.get("root")
    return Path(str(root)).name if root and data_cfg.get("loader") != "synthetic" else str(data_cfg.get("loader"))


def check_data_paths(data_cfg: DictConfig) -> None:
    """A folder dataset's root must exist (unless the smoke data can generate it)."""
    if data_cfg.get("loader") == "synthetic":
        return
    root = data_cfg.get("root")
    if root is None or str(root) in ("", "???"):
        raise ConfigError("data.root is not set (pass data.root=/path/to/dataset)")
    if not Path(str(root)).exists() and not data_cfg.get("generate"):
        raise ConfigError(f"data.root: dataset path does not exist: {root} (pass data.root=/path/to/dataset)")


# ----------------------------------------------------------------------------------------------- known keys
KeyTree = dict[str, Any]  # key -> KeyTree of its known sub-keys, or None: any value (a leaf, or a free-form mapping)


def _merge_keys(tree: KeyTree, node: Mapping[str, Any]) -> None:
    for key, value in node.items():
        if isinstance(value, Mapping) and value and (key not in tree or tree[key] is not None):
            _merge_keys(tree.setdefault(key, {}), value)
        else:  # a leaf in one option, or an empty mapping (model.kwargs): what lies below is free-form
            tree[key] = None


def _config_file(path: Path) -> dict[str, Any]:
    node = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    return {k: v for k, v in (node or {}).items() if k not in ("defaults", "hydra")}


def known_keys(conf_dirs: Iterable[str | Path], config_name: str, groups: Iterable[str]) -> KeyTree:
    """Every key the config can hold: the primary file's, and for each group the union of its options' keys
    (plus the data keys the data layer reads without a file naming them, e.g. data.exclude_file)."""
    tree: KeyTree = {}
    groups = set(groups)
    for conf in map(Path, conf_dirs):
        if (conf / f"{config_name}.yaml").is_file():
            _merge_keys(tree, _config_file(conf / f"{config_name}.yaml"))
        for group in groups:
            for option in sorted((conf / group).glob("*.yaml")):
                if "@package _global_" not in option.read_text().split("\n", 1)[0]:
                    _merge_keys(tree.setdefault(group, {}), _config_file(option))
    if isinstance(tree.get("data"), dict):
        _merge_keys(tree["data"], {f.name: None for f in fields(DataParams)})
    return tree


def unknown_keys(node: Mapping[str, Any], tree: KeyTree, prefix: str = "") -> list[tuple[str, str | None]]:
    """(key, the nearest known key or None) for each key of `node` (a composed config as a plain mapping) that
    `tree` does not know."""
    found: list[tuple[str, str | None]] = []
    for key, value in node.items():
        if key not in tree:
            near = difflib.get_close_matches(str(key), [str(k) for k in tree], n=1)
            found.append((f"{prefix}{key}", f"{prefix}{near[0]}" if near else None))
        elif tree[key] is not None and isinstance(value, Mapping):
            found += unknown_keys(value, tree[key], f"{prefix}{key}.")
    return found


def check_known_keys(cfg: DictConfig, tree: KeyTree) -> None:
    """A key no config file defines (a typo, or `+key=...`) would be silently ignored: refuse it."""
    found = unknown_keys(OmegaConf.to_container(cfg, resolve=False), tree)
    if found:
        raise ConfigError(no_such_key(*found[0]) + (f"; also {', '.join(k for k, _ in found[1:])}" if found[1:] else ""))


def no_such_key(key: str, near: str | None) -> str:
    return f"{key}: no such config key" + (f" (did you mean {near}?)" if near else "")
