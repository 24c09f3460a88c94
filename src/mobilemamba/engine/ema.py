"""The weight EMA: timm's ModelEmaV3 (parameters and buffers, one foreach lerp), with its tensor lists built once.

Why: ModelEmaV3.apply_update_ walks both models' state_dicts and copies every integer buffer (BN's
num_batches_tracked) with its own copy, on every update. For S6 on an H200 that is ~13 ms of host time per update
(trainer.profile, docs/results.md#superseded), more than half of the GPU's whole training step, and the step is
host-bound. Here the pairs are collected once per model object; an update is one lerp over the float tensors and one
copy over the integer ones, the same arithmetic as ModelEmaV3's.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from timm.utils import ModelEmaV3
from torch import nn


def _state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers by state-dict name (the objects themselves, not state_dict()'s detached views)."""
    return {**dict(model.named_parameters()), **dict(model.named_buffers())}


class ModelEma(ModelEmaV3):
    """ModelEmaV3 whose update reuses the (float, integer) tensor lists of the model it last saw."""

    _seen: tuple[nn.Module, "_Lists | None"] | None = None  # the model last updated from, and its lists (None: timm's path)

    def _build_lists(self, model: nn.Module) -> "_Lists | None":
        ema, live = _state_tensors(self.module), _state_tensors(model)
        if list(ema) != list(live):
            raise ValueError("EMA: the model's parameters/buffers are not the EMA copy's (was the model changed after "
                             "the EMA was made?)")
        pairs = list(zip(ema.values(), live.values()))
        same = all(e.dtype == m.dtype and e.device == m.device for e, m in pairs)
        low_precision = any(e.dtype in (torch.bfloat16, torch.float16) for e, _ in pairs)
        if not (self.foreach and same) or low_precision:
            return None  # a different device or dtype, or low-precision EMA (stochastic rounding): timm's own path
        floats = [(e, m) for e, m in pairs if e.is_floating_point()]
        others = [(e, m) for e, m in pairs if not e.is_floating_point()]
        return _Lists([e for e, _ in floats], [m for _, m in floats], [e for e, _ in others], [m for _, m in others])

    def _lists(self, model: nn.Module) -> "_Lists | None":
        if self._seen is None or self._seen[0] is not model:
            self._seen = (model, self._build_lists(model))
        return self._seen[1]

    @torch.no_grad()
    def apply_update_(self, model: nn.Module, decay: float) -> None:
        lists = self._lists(model)
        if lists is None:
            super().apply_update_(model, decay)
            return
        if lists.ema_floats:
            torch._foreach_lerp_(lists.ema_floats, lists.model_floats, weight=1.0 - decay)
        if lists.ema_others:
            torch._foreach_copy_(lists.ema_others, lists.model_others)

    @torch.no_grad()
    def update_unless(self, model: nn.Module, skip: torch.Tensor) -> None:
        """The update, left out where `skip` (a 0/1 float on the device) is 1: the weight is 0 then, and the integer
        buffers copied are the model's, which a skipped update put back. No host read: the lerp as sub, mul by the
        device weight, add (torch's foreach lerp takes its weight as a host number, which would read it back)."""
        weight = (1.0 - skip) * (1.0 - self.decay)
        lists = self._lists(model)
        if lists is None:  # another device or dtype: tensor by tensor
            for e, m in zip(_state_tensors(self.module).values(), _state_tensors(model).values()):
                e.lerp_(m.to(e), weight.to(e.device)) if e.is_floating_point() else e.copy_(m)
            return
        if lists.ema_floats:
            delta = torch._foreach_sub(lists.model_floats, lists.ema_floats)
            torch._foreach_mul_(delta, weight)
            torch._foreach_add_(lists.ema_floats, delta)
        if lists.ema_others:
            torch._foreach_copy_(lists.ema_others, lists.model_others)


class _Lists(NamedTuple):
    """Matching tensors of the EMA copy and the model: floats are averaged, the rest (integer buffers) copied."""

    ema_floats: list[torch.Tensor]
    model_floats: list[torch.Tensor]
    ema_others: list[torch.Tensor]
    model_others: list[torch.Tensor]
