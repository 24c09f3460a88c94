"""The weight EMA: timm's ModelEmaV3 (parameters and buffers, one foreach lerp), with its tensor lists built once.

Why: ModelEmaV3.apply_update_ walks both models' state_dicts and copies every integer buffer (BN's
num_batches_tracked) with its own copy, on every update. For S6 on an H200 that is ~13 ms of host time per update
(trainer.profile, GPU session Q), more than half of the GPU's whole training step, and the step is host-bound. Here
the pairs are collected once per model object; an update is one lerp over the float tensors and one copy over the
integer ones, the same arithmetic as ModelEmaV3's.
"""
from __future__ import annotations

import torch
from timm.utils import ModelEmaV3
from torch import nn


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by state-dict name (the objects themselves, not state_dict()'s detached views)."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


class ModelEma(ModelEmaV3):
    """ModelEmaV3 whose update reuses the (float, integer) tensor pairs of the model it last saw."""

    _pairs: tuple | None = None  # (model, ema floats, model floats, ema others, model others)

    def _build_pairs(self, model: nn.Module) -> tuple | None:
        ema, live = _state_tensors(self.module), _state_tensors(model)
        if list(ema) != list(live):
            raise ValueError("EMA: the model's parameters/buffers are not the EMA copy's (was the model changed after "
                             "the EMA was made?)")
        floats = [(e, m) for e, m in zip(ema.values(), live.values()) if e.is_floating_point()]
        others = [(e, m) for e, m in zip(ema.values(), live.values()) if not e.is_floating_point()]
        same = all(e.dtype == m.dtype and e.device == m.device for e, m in floats + others)
        if not (self.foreach and same) or any(e.dtype in (torch.bfloat16, torch.float16) for e, _ in floats):
            return None  # a different device or dtype, or low-precision EMA (stochastic rounding): timm's own path
        split = lambda pairs: ([e for e, _ in pairs], [m for _, m in pairs])  # noqa: E731
        return (model, *split(floats), *split(others))

    @torch.no_grad()
    def apply_update_(self, model: nn.Module, decay: float) -> None:
        if self._pairs is None or self._pairs[0] is not model:
            self._pairs = self._build_pairs(model) or (model, None, None, None, None)
        _, ema_f, model_f, ema_o, model_o = self._pairs
        if ema_f is None:
            super().apply_update_(model, decay)
            return
        if ema_f:
            torch._foreach_lerp_(ema_f, model_f, weight=1.0 - decay)
        if ema_o:
            torch._foreach_copy_(ema_o, model_o)
