"""Checkpoints load strictly and safely: ours, the reference's (`net`, `net_E`), raw, fused; bad ones refused."""
import os
import pickle

import pytest
import timm
import torch

import mobilemamba
from mobilemamba import CheckpointError
from tests.models.helpers import TINY


def tiny(**kw):
    return mobilemamba.create_model("mobilemamba_t2", num_classes=10, scan_backend="torch", **TINY, **kw)


@pytest.fixture
def trained(tmp_path):
    torch.manual_seed(1)
    model = tiny()
    for p in model.parameters():
        p.data.add_(torch.randn_like(p) * 0.05)
    return model


def same_weights(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("layout", ["raw", "net", "model", "net_E", "ema"])
def test_round_trip_of_every_checkpoint_layout(trained, tmp_path, layout):
    path = tmp_path / "ckpt.pth"
    state = trained.state_dict()
    other = {k: torch.zeros_like(v) for k, v in state.items()}
    payload = {"raw": state, "net": {"net": state, "net_E": other, "epoch": 3},
               "model": {"model": state, "ema": other}, "net_E": {"net": other, "net_E": state},
               "ema": {"model": other, "ema": state}}[layout]
    torch.save(payload, path)
    loaded = tiny(checkpoint=path, ema=layout in ("net_E", "ema"))
    assert same_weights(loaded, trained)


def test_published_key_names():
    with torch.device("meta"):
        keys = set(mobilemamba.create_model("mobilemamba_t2").state_dict())
    for key in ["patch_embed.0.c.weight", "patch_embed.6.bn.running_var",
                "blocks1.0.dw0.m.c.weight", "blocks1.0.ffn1.m.pw2.bn.weight",
                "blocks1.0.mixer.m.attn.local_op.dwconv3x3.weight", "blocks1.0.mixer.m.attn.local_op.bn2.bias",
                "blocks1.0.mixer.m.attn.global_op.wt_filter", "blocks1.0.mixer.m.attn.global_op.iwt_filter",
                "blocks1.0.mixer.m.attn.global_op.base_scale.weight",
                "blocks1.0.mixer.m.attn.global_op.wavelet_convs.0.weight",
                "blocks1.0.mixer.m.attn.global_op.wavelet_scale.0.weight",
                "blocks1.0.mixer.m.attn.global_op.global_atten.in_proj.c.weight",
                "blocks1.0.mixer.m.attn.global_op.global_atten.x_proj_weight",
                "blocks1.0.mixer.m.attn.global_op.global_atten.dt_projs_bias",
                "blocks1.0.mixer.m.attn.global_op.global_atten.out_norm.weight",
                "blocks1.0.mixer.m.attn.proj.1.c.weight",
                "blocks2.0.0.m.c.weight", "blocks2.0.1.m.pw1.bn.weight", "blocks2.1.conv1.c.weight",
                "blocks2.1.conv2.bn.weight", "blocks2.1.se.fc1.weight", "blocks2.1.se.fc2.bias",
                "blocks2.1.conv3.c.weight", "blocks2.2.0.m.c.weight", "blocks2.3.dw0.m.c.weight",
                "blocks3.1.conv3.bn.running_mean", "head.bn.weight", "head.l.weight", "head.l.bias"]:
        assert key in keys, key


def test_a_checkpoint_of_another_variant_is_refused_naming_keys_and_shapes(tmp_path):
    path = tmp_path / "s6.pth"
    with torch.device("meta"):
        other = mobilemamba.create_model("mobilemamba_s6")
    torch.save({k: torch.zeros(v.shape) for k, v in other.state_dict().items()}, path)
    with torch.device("meta"):
        with pytest.raises(CheckpointError) as err:
            mobilemamba.create_model("mobilemamba_t2", checkpoint=path)
    msg = str(err.value)
    assert "\n" not in msg and "does not fit mobilemamba_t2" in msg and "shape mismatches" in msg
    assert "another variant" in msg


def test_wrong_number_of_classes_is_named(trained, tmp_path):
    path = tmp_path / "c10.pth"
    torch.save(trained.state_dict(), path)
    with pytest.raises(CheckpointError, match="head has 10 classes, the model 5"):
        mobilemamba.create_model("mobilemamba_t2", num_classes=5, **TINY, checkpoint=path)


def test_missing_truncated_and_code_carrying_files_are_refused(trained, tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        tiny(checkpoint=tmp_path / "nope.pth")
    good = tmp_path / "good.pth"
    torch.save(trained.state_dict(), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        tiny(checkpoint=cut)

    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pth"
    torch.save({"model": trained.state_dict(), "extra": Evil()}, evil)
    with pytest.raises(CheckpointError, match="refusing to load"):
        tiny(checkpoint=evil)
    assert not (tmp_path / "pwned").exists()


def test_ema_requested_from_a_raw_state_dict_is_an_error(trained, tmp_path):
    path = tmp_path / "raw.pth"
    torch.save(trained.state_dict(), path)
    with pytest.raises(CheckpointError, match="not EMA weights"):
        tiny(checkpoint=path, ema=True)


def test_wrappers_prefixes_of_ddp_and_compile_are_stripped(trained, tmp_path):
    path = tmp_path / "ddp.pth"
    torch.save({"model": {"module._orig_mod." + k: v for k, v in trained.state_dict().items()}}, path)
    assert same_weights(tiny(checkpoint=path), trained)


def test_fused_model_saves_and_loads_back(trained, tmp_path):
    fused = mobilemamba.fuse_model_copy(trained)
    path = tmp_path / "fused.pth"
    torch.save(fused.state_dict(), path)
    again = tiny(fused=True, checkpoint=path)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(again(x), fused(x))
    with pytest.raises(CheckpointError, match="does not fit"):
        tiny(checkpoint=path)  # a fused checkpoint into an unfused model


def test_timm_create_model_loads_a_raw_state_dict(trained, tmp_path):
    path = tmp_path / "raw.pth"
    torch.save(trained.state_dict(), path)
    model = timm.create_model("mobilemamba_t2", num_classes=10, checkpoint_path=str(path), **TINY)
    assert same_weights(model, trained)
