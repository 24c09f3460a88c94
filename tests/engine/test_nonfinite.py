"""A non-finite loss is traced to the first module whose output overflowed (engine/nonfinite.py): the line a user
needs when fp16 training stops with "non-finite loss"."""
from __future__ import annotations

import torch
from torch import nn

from mobilemamba.engine.nonfinite import locate_nonfinite


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


def _net(factor: float) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.ReLU(), Scale(factor)), nn.Dropout(0.5), nn.Linear(8, 2))


def test_the_first_overflowing_module_is_named_with_the_size_of_what_it_was_given():
    site = locate_nonfinite(_net(1e38), torch.full((2, 4), 1e3))
    assert site is not None
    assert (site.module, site.module_class, site.dtype, site.inputs_finite) == ("1.1", "Scale", "float32", True)
    assert 1.0 < site.input_absmax < float("inf")
    assert "'1.1' (Scale, float32)" in site.describe()


def test_a_non_finite_batch_is_reported_as_such_at_the_first_module():
    site = locate_nonfinite(_net(1.0), torch.full((2, 4), float("nan")))
    assert (site.module, site.inputs_finite) == ("0", False)
    assert "already non-finite" in site.describe()


def test_a_finite_forward_gives_none_and_leaves_the_rng_and_the_hooks_as_they_were():
    net = _net(1.0).train()  # dropout draws random numbers
    torch.manual_seed(1)
    assert locate_nonfinite(net, torch.randn(3, 4)) is None
    after = torch.rand(3)
    torch.manual_seed(1)
    torch.randn(3, 4)
    assert torch.equal(after, torch.rand(3)), "the rerun must not shift the training's random stream"
    assert all(not m._forward_hooks for m in net.modules())
