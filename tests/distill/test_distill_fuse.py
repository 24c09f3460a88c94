"""BN folding for inference teachers: outputs unchanged, every certain Conv→BN pair folded."""
from __future__ import annotations

import timm
import torch
from torch import nn

from distill.fuse import find_conv_bn_pairs, fold_conv_bn, fuse_bn
from tests.distill.kd_helpers import randomize_bn


def count_bn(model: nn.Module) -> int:
    return sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_fold_conv_bn_matches_conv_then_bn():
    conv, bn = nn.Conv2d(3, 8, 3, padding=1), randomize_bn(nn.Sequential(nn.BatchNorm2d(8)))[0]
    x = torch.randn(2, 3, 9, 9)
    expected = bn.eval()(conv(x)).detach()
    replacement = fold_conv_bn(conv, bn)
    torch.testing.assert_close(replacement(conv(x)), expected, rtol=1e-5, atol=1e-5)


def test_resnet_attribute_pairs_and_sequentials_are_all_folded():
    """ResNet blocks call conv1/bn1 by attribute, the stem and downsample are Sequentials."""
    model = randomize_bn(timm.create_model("resnet10t", num_classes=5)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    fused, folded = fuse_bn(model, x)
    assert folded == 14 and count_bn(fused) == 0
    with torch.no_grad():
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)
    assert count_bn(model) == 14  # the original is left as it was


def test_timm_batchnorm_act_keeps_its_activation():
    """EfficientNet's BatchNormAct2d (BN + SiLU in one module) folds to its activation."""
    model = randomize_bn(timm.create_model("test_efficientnet", num_classes=5)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    fused, folded = fuse_bn(model, x)
    assert folded > 0 and count_bn(fused) == 0
    with torch.no_grad():
        torch.testing.assert_close(fused(x), expected, rtol=1e-5, atol=1e-5)


class ConvFeedsTwo(nn.Module):
    """conv's output goes to the BN *and* to a skip: folding would change the skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return self.bn(y) + y


def test_a_fold_that_would_change_outputs_is_refused():
    model = randomize_bn(ConvFeedsTwo()).eval()
    x = torch.randn(2, 3, 8, 8)
    assert len(find_conv_bn_pairs(model, x)) == 1  # hooks see the pair, not the second use ...
    fused, folded = fuse_bn(model, x)
    assert folded == -1 and fused is model and count_bn(fused) == 1  # ... the output check does


def test_bn_before_conv_is_not_a_pair():
    model = randomize_bn(nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 3, 1))).eval()
    assert find_conv_bn_pairs(model, torch.randn(1, 3, 4, 4)) == []
