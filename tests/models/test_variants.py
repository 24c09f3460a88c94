"""The six variants are the published networks: exact sizes, channel splits, initialisation, API."""
import pytest
import timm
import torch

import mobilemamba
from mobilemamba.models.mobilemamba import channel_split, nearest_multiple_of_16
from mobilemamba.info import count_params

# spec §5.1: unfused (all), trainable, frozen Haar filters (buffers), fused
PUBLISHED = {
    "mobilemamba_t2": (8_836_890, 8_806_682, 30_208, 8_809_444),
    "mobilemamba_t4": (14_176_090, 14_137_690, 38_400, 14_141_092),
    "mobilemamba_s6": (15_036_632, 14_996_696, 39_936, 15_000_456),
    "mobilemamba_b1": (17_122_849, 17_070_625, 52_224, 17_079_424),
    "mobilemamba_b2": (17_122_849, 17_070_625, 52_224, 17_079_424),
    "mobilemamba_b4": (17_122_849, 17_070_625, 52_224, 17_079_424),
}
INPUT_SIZE = {"mobilemamba_t2": 192, "mobilemamba_t4": 192, "mobilemamba_s6": 224,
              "mobilemamba_b1": 256, "mobilemamba_b2": 384, "mobilemamba_b4": 512}


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_parameter_counts_are_the_published_ones(name):
    with torch.device("meta"):
        model = mobilemamba.create_model(name)
    total, trainable, frozen, fused = PUBLISHED[name]
    assert count_params(model) == total
    assert sum(p.numel() for p in model.parameters()) == trainable and all(p.requires_grad for p in model.parameters())
    assert sum(b.numel() for n, b in model.named_buffers() if n.endswith((".wt_filter", ".iwt_filter"))) == frozen
    assert count_params(model.fuse()) == fused


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_timm_registry_and_pretrained_cfg(name):
    with torch.device("meta"):
        model = timm.create_model(name)
    cfg = model.pretrained_cfg
    size = INPUT_SIZE[name]
    assert cfg["input_size"] == (3, size, size)
    assert cfg["crop_pct"] == 0.875 and cfg["interpolation"] == "bicubic"
    assert tuple(cfg["mean"]) == timm.data.IMAGENET_DEFAULT_MEAN
    assert tuple(cfg["std"]) == timm.data.IMAGENET_DEFAULT_STD


def test_unknown_model_name_is_one_clear_error():
    with pytest.raises(ValueError, match="unknown model 'mobilemamba_x9'.*mobilemamba_t2"):
        mobilemamba.create_model("mobilemamba_x9")


@pytest.mark.parametrize("n,expected", [(115, 112), (190, 192), (220, 224), (140, 144), (263, 256), (268, 272),
                                        (152, 160), (136, 144), (120, 128), (119, 112)])
def test_global_channels_round_to_nearest_multiple_of_16_ties_up(n, expected):
    assert nearest_multiple_of_16(n) == expected


# spec §3.2: (global, local, identity) per stage
SPLITS = {
    "mobilemamba_t2": [(112, 28, 4), (192, 54, 26), (224, 110, 34)],
    "mobilemamba_t4": [(144, 32, 0), (256, 73, 39), (272, 134, 42)],
    "mobilemamba_s6": [(160, 32, 0), (272, 76, 36), (272, 134, 42)],
    "mobilemamba_b1": [(160, 40, 0), (256, 75, 45), (272, 134, 42)],
}


@pytest.mark.parametrize("name", list(SPLITS))
def test_channel_splits_match_the_published_table(name):
    dims = mobilemamba.VARIANTS[name].embed_dim
    got = [channel_split(c, g, l) for c, g, l in zip(dims, (0.8, 0.7, 0.6), (0.2, 0.2, 0.3))]
    assert got == SPLITS[name]
    with torch.device("meta"):
        model = mobilemamba.create_model(name)
    for stage, split in zip(model.stages, SPLITS[name]):
        mrffi = stage[-1].mixer.m.attn
        assert mrffi.splits == split
        assert mrffi.global_op.global_atten.dt_rank == -(-split[0] // 16)


def test_initialisation_follows_the_reference(tiny_model):
    block = tiny_model.blocks1[0]
    for zero_gamma in (block.dw0.m.bn, block.dw1.m.bn, block.ffn0.m.pw2.bn, block.mixer.m.attn.proj[1].bn):
        assert torch.all(zero_gamma.weight == 0)
    pre, _, post = tiny_model.blocks2[:3]
    assert torch.all(pre[0].m.bn.weight == 1) and torch.all(post[0].m.bn.weight == 1)
    assert torch.all(pre[1].m.pw2.bn.weight == 0)
    ss2d = block.mixer.m.attn.global_op.global_atten
    assert torch.all(ss2d.A_logs == 0) and torch.all(ss2d.Ds == 1)
    assert 0 <= ss2d.dt_projs_bias.min() and ss2d.dt_projs_bias.max() < 0.1
    wave = block.mixer.m.attn.global_op
    assert torch.all(wave.base_scale.weight == 1) and torch.allclose(wave.wavelet_scale[0].weight, torch.tensor(0.1))
    assert not wave.wt_filter.requires_grad and not wave.iwt_filter.requires_grad


def test_a_fresh_block_doubles_its_input(tiny_model):
    """Every inner branch ends in a BN with γ = 0, so y = x and the outer skip gives 2x (spec §3.4 quirk)."""
    block = tiny_model.blocks1[0].eval()
    x = torch.randn(2, 16, 6, 6)
    with torch.no_grad():
        assert torch.allclose(block(x), 2 * x, atol=1e-6)


def test_forward_backward_shapes_and_stage_strides(tiny_model):
    x = torch.randn(2, 3, 64, 64, requires_grad=True)
    out = tiny_model(x)
    assert out.shape == (2, 10)
    out.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    tiny_model.eval()
    feats = tiny_model.forward_features(torch.randn(1, 3, 64, 64))
    assert feats.shape == (1, 48, 1, 1)  # 64 / 64
    final, inter = tiny_model.forward_intermediates(torch.randn(1, 3, 96, 96))
    assert [t.shape[-1] for t in inter] == [6, 3, 2]  # ceil(H / 16), then ceil(/2) twice
    assert tiny_model.forward_head(final, pre_logits=True).shape == (1, 48)


def test_full_size_t2_forward_at_its_resolution():
    model = mobilemamba.create_model("mobilemamba_t2", scan_backend="torch").eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 192, 192))
    assert out.shape == (1, 1000) and torch.isfinite(out).all()


def test_reset_classifier_weight_decay_names_and_grad_checkpointing(tiny_model):
    tiny_model.reset_classifier(7)
    assert tiny_model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert tiny_model.no_weight_decay() == set()  # the reference's name match finds nothing
    tiny_model.set_grad_checkpointing(True)
    tiny_model.train()
    x = torch.randn(2, 3, 32, 32)
    loss = tiny_model(x).sum()
    loss.backward()
    assert tiny_model.patch_embed[0].c.weight.grad is not None


def test_distillation_head_returns_two_outputs_in_training_and_their_mean_in_eval():
    torch.manual_seed(0)
    model = mobilemamba.create_model("mobilemamba_t2", num_classes=5, distillation=True, scan_backend="torch",
                                     embed_dim=(16, 32, 48), depth=(1, 1, 1))
    x = torch.randn(2, 3, 32, 32)
    out, out_dist = model.train()(x)
    assert out.shape == out_dist.shape == (2, 5)
    model.eval()
    with torch.no_grad():
        feats = model.forward_features(x)
        pooled = model.forward_head(feats, pre_logits=True)
        expected = (model.head(pooled) + model.head_dist(pooled)) / 2
        assert torch.allclose(model(x), expected)


@pytest.mark.parametrize("wavelet_impl", ["pytorch_wavelets", "conv"])
def test_bf16_autocast_training_step_runs_and_gives_finite_gradients(wavelet_impl):
    """pytorch_wavelets' backward runs outside autocast; the wavelet step must keep dtypes consistent."""
    torch.manual_seed(0)
    model = mobilemamba.create_model("mobilemamba_t2", num_classes=4, scan_backend="torch",
                                     embed_dim=(32, 48, 64), depth=(1, 1, 1), wavelet_impl=wavelet_impl)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 3, 48, 48))
    out.float().logsumexp(-1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("impl", ["conv", "shuffle"])
def test_conv_and_shuffle_wavelet_formulations_give_the_same_model_and_trace_as_one_graph(tiny_model, impl):
    """`set_wavelet_impl('conv' | 'shuffle')` changes nothing numerically and lets torch.compile see one graph
    (pytorch_wavelets calls into pywt, which Dynamo cannot trace)."""
    import torch._dynamo as dynamo

    x = torch.randn(2, 3, 40, 40)
    tiny_model.eval()
    with torch.no_grad():
        ref = tiny_model(x)
        out = tiny_model.set_wavelet_impl(impl)(x)
    assert torch.allclose(out, ref, atol=1e-5)
    explained = dynamo.explain(tiny_model)(x)
    assert explained.graph_break_count == 0
