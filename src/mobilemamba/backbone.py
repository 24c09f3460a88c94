"""MobileMamba as a backbone for detection and segmentation (timm's features_only conventions).

`create_backbone('mobilemamba_b1', checkpoint=PATH, out_indices=(0, 1, 2))` returns timm's `FeatureGetterNet`:
calling it gives the NCHW outputs of the chosen stages (strides 16, 32, 64), `feature_info.channels()` and
`feature_info.reduction()` describe them. An ImageNet checkpoint (ours or the published one) is loaded with its
classifier dropped: the `head.*` / `head_dist.*` tensors (and those of stages after the last one kept) are
removed, every other tensor must fit the backbone exactly.
"""
from __future__ import annotations

import os
from typing import Any, Iterable, Mapping

import timm
import torch
import torch.nn as nn
from timm.models._features import feature_take_indices

from .models import VARIANTS
from .models.checkpoint import HEAD_PREFIXES, CheckpointError, extract_state_dict, load_into, load_state_dict_file

N_STAGES = 3


def backbone_state_dict(state: Mapping[str, torch.Tensor], out_indices: Iterable[int] = (0, 1, 2),
                        ) -> dict[str, torch.Tensor]:
    """A classifier state dict without its head(s) and without the stages after max(out_indices)."""
    _, last = feature_take_indices(N_STAGES, list(out_indices))
    dropped = HEAD_PREFIXES + tuple(f"blocks{i + 1}." for i in range(last + 1, N_STAGES))
    return {k: v for k, v in state.items() if not k.startswith(dropped)}


def create_backbone(name: str, *, checkpoint: str | os.PathLike | None = None, out_indices: Iterable[int] = (0, 1, 2),
                    ema: bool = False, fused: bool = False, scan_backend: str = "auto", **overrides: Any) -> nn.Module:
    """timm `features_only` MobileMamba (a FeatureGetterNet) with optional ImageNet weights, head dropped.

    fused=True builds the BN-folded inference form, and then expects a checkpoint of a fused model.
    """
    if name not in VARIANTS:
        raise ValueError(f"unknown model {name!r}; expected one of {', '.join(VARIANTS)}")
    out_indices = tuple(out_indices)
    backbone = timm.create_model(name, features_only=True, out_indices=out_indices, scan_backend=scan_backend,
                                 **overrides)
    if fused:
        backbone.model.fuse()
    if checkpoint is not None:
        state = extract_state_dict(load_state_dict_file(checkpoint), ema=ema, source=str(checkpoint))
        load_into(backbone.model, backbone_state_dict(state, out_indices), source=str(checkpoint),
                  model_name=f"{name} backbone" + (" (fused)" if fused else ""))
    return backbone


__all__ = ["CheckpointError", "backbone_state_dict", "create_backbone"]
