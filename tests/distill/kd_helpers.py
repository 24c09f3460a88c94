"""Helpers shared by the distillation tests (`from tests.distill.kd_helpers import ...`; "." is on pytest's pythonpath)."""
from __future__ import annotations

import timm
import torch
import torch.nn.functional as F
from torch import nn

NUM_CLASSES = 5
STUDENT_MEAN, STUDENT_STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
IMAGENET_MEAN, IMAGENET_STD = timm.data.IMAGENET_DEFAULT_MEAN, timm.data.IMAGENET_DEFAULT_STD


def smooth_images(n: int, seed: int, size: int = 32, grid: int = 2) -> torch.Tensor:
    """Random colour fields bilinearly upsampled from a grid×grid image: an input distribution a
    tiny student can learn a teacher's function on in a few dozen steps. Student-normalized."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(n, 3, grid, grid, generator=g), size=size, mode="bilinear", align_corners=False)


def tiny_cnn(num_classes: int = NUM_CLASSES) -> nn.Module:
    """A three-conv student, fast on CPU."""
    def block(a: int, b: int) -> list[nn.Module]:
        return [nn.Conv2d(a, b, 3, 2, 1), nn.BatchNorm2d(b), nn.ReLU()]
    return nn.Sequential(*block(3, 16), *block(16, 32), *block(32, 32),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))


def to_teacher_input(x: torch.Tensor) -> torch.Tensor:
    """Student normalization → ImageNet normalization (what resnet10t's pretrained_cfg asks for)."""
    raw = x * torch.tensor(STUDENT_STD).view(1, 3, 1, 1) + torch.tensor(STUDENT_MEAN).view(1, 3, 1, 1)
    return (raw - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics, so that folding them is actually tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


