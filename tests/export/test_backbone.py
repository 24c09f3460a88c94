"""MobileMamba as a detection/segmentation backbone: timm features_only, feature_info, ImageNet weights in."""
import pytest
import timm
import torch

import mobilemamba
from mobilemamba import CheckpointError, create_backbone
from mobilemamba.backbone import backbone_state_dict
from tests.models.helpers import TINY, randomize_bn


@pytest.mark.parametrize("name", list(mobilemamba.VARIANTS))
def test_features_only_gives_three_nchw_maps_at_strides_16_32_64_for_every_variant(name):
    """Shapes at each variant's own resolution, on the meta device (no compute)."""
    variant = mobilemamba.VARIANTS[name]
    with torch.device("meta"):
        backbone = timm.create_model(name, features_only=True, out_indices=(0, 1, 2), scan_backend="chunked")
    backbone.model.set_wavelet_impl("conv")  # the conv form of the Haar step (equal to the default) runs on meta
    assert backbone.feature_info.channels() == list(variant.embed_dim)
    assert backbone.feature_info.reduction() == [16, 32, 64]
    size = variant.img_size
    features = backbone(torch.empty(2, 3, size, size, device="meta"))
    assert [tuple(f.shape) for f in features] == [
        (2, c, -(-size // r), -(-size // r)) for c, r in zip(variant.embed_dim, (16, 32, 64))]


def test_features_equal_the_classifier_stage_outputs_and_a_subset_of_stages_can_be_taken():
    torch.manual_seed(0)
    classifier = randomize_bn(mobilemamba.create_model("mobilemamba_t2", **TINY)).eval()
    backbone = create_backbone("mobilemamba_t2", out_indices=(1, 2), **TINY).eval()
    backbone.model.load_state_dict(backbone_state_dict(classifier.state_dict(), (1, 2)))
    assert backbone.feature_info.channels() == [32, 48] and backbone.feature_info.reduction() == [32, 64]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = classifier.forward_intermediates(x, indices=(1, 2), intermediates_only=True)
        got = backbone(x)
    assert len(got) == 2 and all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, expected))


@pytest.mark.parametrize("wrap", ["raw", "model", "published"])
def test_an_imagenet_checkpoint_loads_into_the_backbone_with_the_head_dropped(tmp_path, wrap):
    torch.manual_seed(0)
    classifier = randomize_bn(mobilemamba.create_model("mobilemamba_t2", num_classes=1000, **TINY)).eval()
    state = classifier.state_dict()
    assert any(k.startswith("head.") for k in state)
    path = tmp_path / "imagenet.pth"
    if wrap == "raw":
        torch.save(state, path)
    elif wrap == "model":  # this project's training checkpoint
        torch.save({"model": state, "epoch": 3}, path)
    else:  # the published layout: DDP prefix under "model"
        torch.save({"model": {f"module.{k}": v for k, v in state.items()}}, path)
    backbone = create_backbone("mobilemamba_t2", checkpoint=path, **TINY).eval()
    assert not any(k.startswith("head") for k in backbone.model.state_dict())
    for key, value in backbone.model.state_dict().items():  # every backbone tensor came from the checkpoint
        assert torch.equal(value, state[key]), key
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for got, expected in zip(backbone(x), classifier.forward_intermediates(x, intermediates_only=True)):
            assert torch.allclose(got, expected, atol=1e-6)


def test_backbone_loading_stays_strict_apart_from_the_head(tmp_path):
    torch.manual_seed(0)
    state = mobilemamba.create_model("mobilemamba_t2", **TINY).state_dict()
    extra = tmp_path / "extra.pth"
    torch.save({**state, "neck.weight": torch.zeros(3)}, extra)
    with pytest.raises(CheckpointError, match="1 unexpected keys .*neck.weight"):
        create_backbone("mobilemamba_t2", checkpoint=extra, **TINY)
    missing = tmp_path / "missing.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("patch_embed.0")}, missing)
    with pytest.raises(CheckpointError, match="missing keys"):
        create_backbone("mobilemamba_t2", checkpoint=missing, **TINY)
    with pytest.raises(CheckpointError, match="another variant"):
        create_backbone("mobilemamba_t2", checkpoint=extra, embed_dim=(16, 32, 64), depth=(1, 1, 1))


def test_a_fused_checkpoint_loads_into_a_fused_backbone(tmp_path):
    torch.manual_seed(0)
    classifier = randomize_bn(mobilemamba.create_model("mobilemamba_t2", **TINY)).eval()
    path = tmp_path / "fused.pth"
    torch.save(mobilemamba.fuse_model_copy(classifier).state_dict(), path)
    backbone = create_backbone("mobilemamba_t2", checkpoint=path, fused=True, **TINY)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected = classifier.forward_intermediates(x, intermediates_only=True)
        assert all(torch.allclose(a, b, atol=1e-4) for a, b in zip(backbone(x), expected))


def test_create_backbone_rejects_an_unknown_variant():
    with pytest.raises(ValueError, match="unknown model 'mobilemamba_x9'"):
        create_backbone("mobilemamba_x9")
