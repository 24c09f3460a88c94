"""MobileMamba honours timm's model contract: dtype conversion, device/dtype construction, pooling and the head,
frozen filters as buffers, TorchScript, FX, and the published weights through timm's own pretrained loading."""
import io

import pytest
import timm
import torch
from timm.utils.model import freeze, unfreeze

from mobilemamba import CheckpointError
from mobilemamba.models.mobilemamba import VARIANTS, final_feature_size
from tests.models.helpers import TINY, randomize_bn


def tiny(**kw) -> torch.nn.Module:
    torch.manual_seed(0)
    return timm.create_model("mobilemamba_t2", **TINY, **kw)


def scan_and_haar(model: torch.nn.Module) -> tuple[str, str]:
    block = model.blocks1[0].mixer.m.attn.global_op
    return block.global_atten.scan_backend, block.wavelet.impl


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
def test_a_model_converted_to_another_dtype_runs_in_it(dtype):
    """The scan's float32 output meets a LayerNorm whose weights are now `dtype` (timm's --model-dtype)."""
    model = randomize_bn(tiny(num_classes=10)).eval()
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        ref = model(x)
        out = model.to(dtype)(x.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    tol = 1e-6 if dtype == torch.float64 else 0.1
    assert ((out.double() - ref.double()).norm() / ref.double().norm()).item() < tol


def test_device_and_dtype_keywords_build_every_tensor_there():
    model = timm.create_model("mobilemamba_t2", device="meta", dtype=torch.float64)
    tensors = dict(model.named_parameters()) | dict(model.named_buffers())
    assert all(t.device.type == "meta" for t in tensors.values())
    assert {t.dtype for t in tensors.values() if t.is_floating_point()} == {torch.float64}
    with pytest.raises(TypeError):
        timm.create_model("mobilemamba_t2", device="meta", not_a_model_arg=1)


def test_global_pool_sets_the_pooling_and_the_pooled_width():
    x = torch.randn(2, 3, 48, 48)
    model = tiny(global_pool="max").eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        assert torch.equal(model.forward_head(feats, pre_logits=True), feats.amax((2, 3)))
    concat = tiny(global_pool="catavgmax")
    assert concat.head_hidden_size == 2 * concat.num_features == concat.head.l.in_features
    assert model.head_hidden_size == model.num_features and model.in_chans == 3
    with pytest.raises(ValueError, match="global_pool='' .* needs num_classes=0"):
        tiny(global_pool="")


def test_reset_classifier_without_pooling_returns_the_feature_map_and_with_classes_pools_again():
    model = tiny().eval()
    x = torch.randn(1, 3, 48, 48)
    model.reset_classifier(0, "")
    with torch.no_grad():
        assert torch.equal(model(x), model.forward_features(x))
        model.reset_classifier(5)
        assert model(x).shape == (1, 5) and model.global_pool.pool_type == "avg"


@pytest.mark.parametrize("name", list(VARIANTS))
def test_pretrained_cfg_pool_size_is_the_final_feature_map_at_the_input_size(name):
    with torch.device("meta"):
        model = timm.create_model(name)
        size = model.pretrained_cfg["input_size"][-1]
        feats = model.forward_features(torch.zeros(1, 3, size, size))
    assert model.pretrained_cfg["pool_size"] == tuple(feats.shape[-2:]) == (final_feature_size(size),) * 2


def test_in_chans_builds_a_stem_for_that_many_channels():
    model = tiny(in_chans=1, num_classes=4).eval()
    assert model.in_chans == 1 and model.patch_embed[0].c.in_channels == 1
    with torch.no_grad():
        assert model(torch.randn(1, 1, 32, 32)).shape == (1, 4)


def test_reset_classifier_keeps_the_models_mode_device_and_dtype():
    """A head built in training mode failed an eval batch of one in its BatchNorm."""
    model = tiny().eval().to(torch.float64)
    model.reset_classifier(7)
    assert not model.head.training and model.head.l.weight.dtype == torch.float64
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32, dtype=torch.float64)).shape == (1, 7)
    with torch.device("meta"):
        model = tiny(distillation=True)
    model.reset_classifier(3)
    assert model.training and {p.device.type for p in model.head_dist.parameters()} == {"meta"}


def test_haar_filters_are_persistent_buffers_that_nothing_trains():
    model = tiny(num_classes=3)
    names = {n for n, _ in model.named_parameters()}
    assert not any("wt_filter" in n for n in names)
    assert {"blocks1.0.mixer.m.attn.global_op.wt_filter", "blocks1.0.mixer.m.attn.global_op.iwt_filter"} <= set(
        model.state_dict())
    freeze(model)
    unfreeze(model)
    assert all(p.requires_grad for p in model.parameters())
    model(torch.randn(2, 3, 32, 32)).mean().backward()  # timm's test_model_backward: a gradient for every parameter
    assert all(p.grad is not None for p in model.parameters())


def test_a_state_dict_with_the_filters_as_parameters_loads_strictly():
    """The published checkpoints saved the filters as (frozen) parameters: same keys, same tensors."""
    source = tiny(num_classes=3)
    state = {k: torch.nn.Parameter(v, requires_grad=False) if "wt_filter" in k else v
             for k, v in source.state_dict().items()}
    target = tiny(num_classes=3)
    target.load_state_dict(state, strict=True)
    assert torch.equal(target.blocks2[3].mixer.m.attn.global_op.wt_filter,
                       source.blocks2[3].mixer.m.attn.global_op.wt_filter)


def test_scriptable_models_compile_in_torchscript_and_exportable_ones_take_the_export_scan():
    model = randomize_bn(tiny(num_classes=10, scriptable=True, distillation=True)).eval()
    assert scan_and_haar(model) == ("torch", "conv")
    scripted = torch.jit.script(model)
    buffer = io.BytesIO()
    torch.jit.save(scripted, buffer)
    buffer.seek(0)
    x = torch.randn(2, 3, 40, 40)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(buffer)(x), model(x), atol=1e-6)
    assert scan_and_haar(tiny(exportable=True)) == ("chunked", "conv")
    assert scan_and_haar(tiny(scriptable=True, scan_backend="sequential")) == ("sequential", "conv")


def test_fx_traces_the_model_and_the_fx_feature_extractor():
    """Odd sizes are padded by a branch on the input's shape, and the scan dispatches on its device: both are
    FX leaves."""
    model = randomize_bn(tiny(num_classes=10)).eval()
    x = torch.randn(2, 3, 40, 40)  # odd maps (3x3) in the last stage
    traced = torch.fx.symbolic_trace(model)
    features = tiny(features_only=True, feature_cls="fx").eval()
    getter = tiny(features_only=True).eval()  # the same initial weights (tiny() seeds)
    with torch.no_grad():
        assert torch.equal(traced(x), model(x))
        assert all(torch.equal(a, b) for a, b in zip(features(x), getter(x)))


def published_file(path, model: torch.nn.Module, ema: torch.nn.Module | None = None) -> str:
    """A checkpoint in the published layout: raw weights under `net`, EMA ones under `net_E`, plus bookkeeping."""
    torch.save({"net": model.state_dict(), "net_E": (ema or model).state_dict(), "epoch": 299}, path)
    return str(path)


def test_published_checkpoints_load_through_timms_pretrained_path_with_the_ema_weights(tmp_path):
    raw, ema = randomize_bn(tiny(num_classes=10)), randomize_bn(tiny(num_classes=10), seed=1)
    path = published_file(tmp_path / "mobilemamba_t2.pth", raw, ema)
    overlay = dict(file=path, num_classes=10)  # the file's classes: timm keeps its classifier
    model = timm.create_model("mobilemamba_t2", pretrained=True, pretrained_cfg_overlay=overlay, num_classes=10,
                              **TINY)
    assert all(torch.equal(v, ema.state_dict()[k]) for k, v in model.state_dict().items())


def test_published_checkpoints_adapt_the_head_and_the_stem_as_timm_does(tmp_path):
    source = randomize_bn(tiny())  # 1000 classes, as published
    path = published_file(tmp_path / "mobilemamba_t2.pth", source)
    expected = source.state_dict()
    # timm's train.py --pretrained-path: num_classes=-1 in the overlay forces a fresh classifier
    for kwargs in (dict(num_classes=10), dict(num_classes=0), dict(global_pool="catavgmax"),
                   dict(pretrained_cfg_overlay=dict(file=path, num_classes=-1)), dict(in_chans=1)):
        kwargs.setdefault("pretrained_cfg_overlay", dict(file=path))
        model = timm.create_model("mobilemamba_t2", pretrained=True, **TINY, **kwargs)
        body = {k: v for k, v in model.state_dict().items() if not k.startswith(("head.", "patch_embed.0.c."))}
        assert all(torch.equal(v, expected[k]) for k, v in body.items()), kwargs
        if kwargs.get("in_chans") == 1:  # timm's adapt_input_conv sums the RGB filters
            stem = model.patch_embed[0].c.weight
            assert torch.allclose(stem, expected["patch_embed.0.c.weight"].sum(1, keepdim=True))


def test_a_checkpoint_that_does_not_fit_is_one_clear_error(tmp_path):
    with torch.device("meta"):
        other = timm.create_model("mobilemamba_s6")
    path = tmp_path / "s6.pth"
    torch.save({"net": {k: torch.zeros(v.shape) for k, v in other.state_dict().items()}}, path)
    with pytest.raises(CheckpointError) as err:
        timm.create_model("mobilemamba_t2", pretrained=True, pretrained_cfg_overlay=dict(file=str(path)))
    message = str(err.value)
    assert "\n" not in message and "does not fit mobilemamba_t2" in message and "another variant" in message


def test_pretrained_without_a_file_says_how_to_pass_the_published_one():
    with pytest.raises(RuntimeError, match=r"pretrained_cfg_overlay=dict\(file='mobilemamba_s6.pth'\)"):
        timm.create_model("mobilemamba_s6", pretrained=True)

