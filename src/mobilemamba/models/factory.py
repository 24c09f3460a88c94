"""`create_model`: build a variant by name, optionally load weights (raw/EMA, fused or not); `create_classifier`:
a variant or any other timm model, the student of a training run."""
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


def create_classifier(name: str, *, num_classes: int, img_size: int | None = None, drop_path_rate: float | None = None,
                      scan_backend: str = "auto", **kwargs: Any) -> nn.Module:
    """A MobileMamba variant (`create_model`) or any other timm model, untrained, by name.

    `img_size` reaches a timm model only when it differs from the model's default input size and the model takes
    it (models that size a position embedding at creation, e.g. ViTs); convolutional models take any size as is.
    `scan_backend` concerns MobileMamba only.
    """
    if name in VARIANTS:
        return create_model(name, num_classes=num_classes, drop_path_rate=drop_path_rate, scan_backend=scan_backend,
                            **kwargs)
    if not timm.is_model(name):
        raise ValueError(f"unknown model {name!r}: neither a MobileMamba variant ({', '.join(VARIANTS)}) "
                         f"nor a timm model (timm.list_models())")
    if drop_path_rate is not None:
        kwargs["drop_path_rate"] = drop_path_rate
    if img_size is not None and img_size != default_img_size(name):
        try:
            return timm.create_model(name, num_classes=num_classes, img_size=img_size, **kwargs)
        except TypeError as exc:
            if "img_size" not in str(exc):
                raise
    return timm.create_model(name, num_classes=num_classes, **kwargs)


def default_img_size(name: str) -> int | None:
    """The input size a timm model (MobileMamba included) was defined for (its pretrained_cfg), or None."""
    size = getattr(timm.get_pretrained_cfg(name), "input_size", None)
    return int(size[-1]) if size else None


def fuse_model_copy(model: nn.Module) -> nn.Module:
    """A fused eval copy of `model`, leaving the original (e.g. the one being trained) untouched: MobileMamba's
    `fuse()`, or timm's `reparameterize_model` for any other model (RepVGG-style branches and Conv+BN folded where
    the model defines it; a model without such parts comes back as an equal copy)."""
    fused = copy.deepcopy(model).eval()
    if callable(getattr(fused, "fuse", None)):
        out = fused.fuse()
        return (out if isinstance(out, nn.Module) else fused).eval()
    return reparameterized(fused).eval()


def reparameterized(model: nn.Module) -> nn.Module:
    """timm's in-place `reparameterize_model`, the result back on the model's device and dtype: some timm models'
    fuse() build their merged layers as new CPU float32 modules (LeViT's ConvNorm), which a CUDA or bf16 model
    cannot call."""
    from timm.utils import reparameterize_model

    first = next(model.parameters(), None)
    model = reparameterize_model(model, inplace=True)
    return model if first is None else model.to(device=first.device, dtype=first.dtype)
