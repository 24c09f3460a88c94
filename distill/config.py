"""Reading the `distill` config group: one place for keys, defaults and their checks.

`distill_cfg` may be a plain dict, an OmegaConf `DictConfig` or `None` (= distillation off).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

KINDS = ("none", "soft", "hard")
REDUCTIONS = ("batchmean", "numel")
WEIGHTINGS = ("add", "convex")
DTYPES = ("bf16", "fp16", "fp32")
COMPILE_CHOICES = ("auto", "true", "false")

# Every key the `distill` group may carry, with its default (None = decided at build time).
DEFAULTS: dict[str, Any] = {
    "kind": "none",
    "alpha": 5.0,  # the reference's weight on the KD term, added to the base loss
    "tau": 1.0,
    "reduction": "batchmean",
    "weighting": "add",
    "teacher": "tresnet_v2_l",
    "teacher_checkpoint": None,
    "teacher_ema": None,  # project checkpoints: use the EMA weights? None = EMA when present
    "teacher_kwargs": None,  # extra kwargs for the teacher constructor (tiny test teachers)
    "num_classes": None,  # teacher classes; None = the constructor's default
    "pretrained": False,
    "img_size": None,
    "mean": None,
    "std": None,
    "dtype": None,
    "channels_last": None,
    "compile": "auto",  # CUDA: compiled, with CUDA graphs; CPU: eager (teachers.compile_mode)
    "fuse_bn": True,
}


class DistillConfigError(ValueError):
    """A bad value in the `distill` config group (the message names the key)."""


def to_dict(distill_cfg: Any) -> dict[str, Any]:
    """Plain dict of the config with defaults filled in; unknown keys are an error (typos)."""
    if distill_cfg is None:
        raw: dict[str, Any] = {}
    elif isinstance(distill_cfg, Mapping):
        raw = dict(distill_cfg)
    elif hasattr(distill_cfg, "items"):  # DictConfig without importing omegaconf here
        raw = dict(distill_cfg.items())
    else:
        raise DistillConfigError(f"distill config must be a mapping, got {type(distill_cfg).__name__}")
    raw = {k: _plain(v) for k, v in raw.items()}
    unknown = sorted(set(raw) - set(DEFAULTS))
    if unknown:
        raise DistillConfigError(f"unknown distill key(s) {unknown}; known: {sorted(DEFAULTS)}")
    return {**DEFAULTS, **{k: v for k, v in raw.items() if v is not None}}


def _plain(value: Any) -> Any:
    """OmegaConf containers → python dict/list so later code needs no omegaconf."""
    try:
        from omegaconf import DictConfig, ListConfig, OmegaConf
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        return value
    if isinstance(value, (DictConfig, ListConfig)):
        return OmegaConf.to_container(value, resolve=True)
    return value


def choice(cfg: Mapping[str, Any], key: str, allowed: tuple[str, ...]) -> str:
    """`cfg[key]` checked against `allowed` with a one-line error."""
    value = cfg[key]
    if value not in allowed:
        raise DistillConfigError(f"distill.{key} must be one of {'|'.join(allowed)}, got {value!r}")
    return value


def number(cfg: Mapping[str, Any], key: str) -> float:
    """`cfg[key]` as a float, with a one-line error for non-numbers."""
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise DistillConfigError(f"distill.{key} must be a number, got {value!r}")
    return float(value)
