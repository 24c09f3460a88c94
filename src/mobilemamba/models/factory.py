"""`create_model`: build a variant by name, optionally load weights (raw/EMA, fused or not)."""
from __future__ import annotations

import copy
import os
from typing import Any

import timm
import torch.nn as nn

from .checkpoint import load_checkpoint
from .mobilemamba import VARIANTS, MobileMamba


def create_model(name: str, *, num_classes: int = 1000, drop_path_rate: float | None = None,
                 scan_backend: str = "auto", checkpoint: str | os.PathLike | None = None, ema: bool = False,
                 fused: bool = False, **overrides: Any) -> MobileMamba:
    """Build `name` (one of `VARIANTS`); `overrides` (e.g. embed_dim, depth) change the architecture.

    With `checkpoint`, loads a raw state dict or the one held under `model`/`net` (`ema`/`net_E` with ema=True),
    strictly. With `fused=True` the returned model is fused, and a checkpoint is expected to be a fused one.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(VARIANTS)}")
    kwargs: dict[str, Any] = dict(num_classes=num_classes, scan_backend=scan_backend, **overrides)
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    model = timm.create_model(name, **kwargs)
    if fused:
        model.fuse()
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, ema=ema, model_name=name + (" (fused)" if fused else ""))
    return model


def fuse_model_copy(model: nn.Module) -> nn.Module:
    """A fused eval copy of `model`, leaving the original (e.g. the one being trained) untouched."""
    return copy.deepcopy(model).fuse()
