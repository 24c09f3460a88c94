"""The engine's EMA computes what timm's ModelEmaV3 computes, from tensor lists it builds once per model."""
from __future__ import annotations

import copy

import pytest
import torch
from timm.utils import ModelEmaV3
from torch import nn

from mobilemamba.engine.ema import ModelEma

from .helpers import NoHostRead


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4))


def _train_a_little(model: nn.Module, emas: list, steps: int = 4) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    for i in range(steps):
        out = model(torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(i)))
        (out * torch.arange(out.numel(), dtype=out.dtype).view_as(out)).mean().backward()  # moves every weight
        opt.step()
        opt.zero_grad()
        for ema in emas:
            ema.update(model)


def test_same_state_as_timm_model_ema_v3_params_and_buffers():
    model = _net()
    ours = ModelEma(model, decay=0.9, exclude_buffers=False)
    timms = ModelEmaV3(model, decay=0.9, exclude_buffers=False)
    _train_a_little(model, [ours, timms])
    mine, ref = ours.module.state_dict(), timms.module.state_dict()
    assert list(mine) == list(ref)
    for name in ref:
        torch.testing.assert_close(mine[name], ref[name], rtol=0, atol=0, msg=name)
    assert int(mine["1.num_batches_tracked"]) == 4  # integer buffers are copied, not averaged
    assert (mine["0.weight"] - model.state_dict()["0.weight"]).abs().max() > 1e-3  # averaged, not copied


def test_lists_follow_the_model_object_they_are_given():
    model, other = _net(), _net()
    ema = ModelEma(model, decay=0.5)
    _train_a_little(model, [ema], steps=1)
    with torch.no_grad():
        for p in other.parameters():
            p.fill_(1.0)
    before = ema.module[0].weight.clone()
    ema.update(other)  # a new model object: its tensors, not the cached ones of `model`
    torch.testing.assert_close(ema.module[0].weight, 0.5 * (before + 1.0))


def test_a_model_with_different_tensors_is_an_error():
    ema = ModelEma(_net(), decay=0.5)
    with pytest.raises(ValueError, match="not the EMA copy's"):
        ema.update(nn.Sequential(nn.Conv2d(3, 8, 3)))


def test_low_precision_ema_takes_timms_own_path():
    model = _net().to(torch.bfloat16)
    ours = ModelEma(model, decay=0.9)
    timms = ModelEmaV3(copy.deepcopy(model), decay=0.9)
    ours.update(model)
    timms.update(model)
    torch.testing.assert_close(ours.module.state_dict(), timms.module.state_dict(), rtol=0, atol=0)


def test_update_unless_averages_as_timm_does_or_leaves_the_average_alone_without_a_host_read():
    model = _net()
    ours, timms = ModelEma(model, decay=0.9, exclude_buffers=False), ModelEmaV3(model, decay=0.9, exclude_buffers=False)
    _train_a_little(model, [])
    with NoHostRead():  # the skip flag stays on the device
        ours.update_unless(model, torch.tensor(0.0))
    timms.update(model)
    torch.testing.assert_close(ours.module.state_dict(), timms.module.state_dict())
    before = {k: v.clone() for k, v in ours.module.state_dict().items()}
    with NoHostRead():
        ours.update_unless(model, torch.tensor(1.0))
    assert all(torch.equal(v, before[k]) for k, v in ours.module.state_dict().items())
