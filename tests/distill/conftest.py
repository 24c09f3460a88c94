"""Fixtures of the distillation tests: a small teacher with a sharp, varied output."""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from tests.distill.kd_helpers import NUM_CLASSES, randomize_bn, smooth_images, to_teacher_input
from torch import nn


@pytest.fixture(scope="session")
def sharp_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    """resnet10t (5 classes) whose classifier is centred on the data, so its top-1 varies with the
    input (a random-init net predicts one class for everything); saved as a raw state_dict."""
    torch.manual_seed(0)
    model = randomize_bn(timm.create_model("resnet10t", num_classes=NUM_CLASSES)).eval()
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(to_teacher_input(smooth_images(512, 1))), pre_logits=True)
        weight = torch.randn(NUM_CLASSES, feats.shape[1], generator=torch.Generator().manual_seed(3))
        weight = weight / (feats.std(0) + 1e-6) * 3 / feats.shape[1] ** 0.5
        model.fc.weight.copy_(weight)
        model.fc.bias.copy_(-(weight @ feats.mean(0)))
    path = tmp_path_factory.mktemp("teacher") / "resnet10t_sharp.pth"
    torch.save(model.state_dict(), path)
    return model, path
