"""`fuse()` folds every BN and leaves the function unchanged (fp32, CPU), for every variant."""
import pytest
import torch

import mobilemamba
from mobilemamba.models.mobilemamba import VARIANTS
from tests.models.helpers import randomize_bn


@pytest.mark.parametrize("name", list(VARIANTS))
def test_fused_model_equals_unfused_with_random_bn(name):
    torch.manual_seed(0)
    model = randomize_bn(mobilemamba.create_model(name, scan_backend="torch")).eval()
    size = VARIANTS[name].img_size
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        ref = model(x)
        fused = mobilemamba.fuse_model_copy(model)
        out = fused(x)
    assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.BatchNorm1d)) for m in fused.modules())
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-5


def test_fused_model_keeps_layernorm_se_and_scales():
    model = mobilemamba.create_model("mobilemamba_t2", embed_dim=(16, 32, 48), depth=(1, 1, 1)).fuse()
    names = {type(m).__name__ for m in model.modules()}
    assert {"LayerNorm2d", "SEModule", "ScaleModule"} <= names
    assert "Conv2d_BN" not in names and "BN_Linear" not in names
    assert not model.training
