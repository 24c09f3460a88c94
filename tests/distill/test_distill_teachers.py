"""Teachers: input conversion, frozen/eval/no-grad, checkpoint loading, identity, self-distillation."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F
from tests.distill.kd_helpers import (IMAGENET_MEAN, IMAGENET_STD, NUM_CLASSES, STUDENT_MEAN, STUDENT_STD,
                                      smooth_images, tiny_cnn, to_teacher_input)

from distill import Teacher, TeacherError, build_kd_loss, build_teacher
from distill.teachers import weights_sha256


def make(cfg: dict, *, img_size: int = 32, mean=STUDENT_MEAN, std=STUDENT_STD) -> Teacher:
    base = dict(kind="soft", teacher="resnet10t", num_classes=NUM_CLASSES)
    return build_teacher({**base, **cfg}, student_mean=mean, student_std=std,
                         student_img_size=img_size, device="cpu")


def test_kind_none_builds_no_teacher():
    assert build_teacher(dict(kind="none"), student_mean=STUDENT_MEAN, student_std=STUDENT_STD,
                         student_img_size=32, device="cpu") is None


def test_published_teacher_sees_raw_pixels():
    """tresnet_v2_l's timm config: mean 0, std 1, 224px, i.e. the reference's de-normalized input."""
    cfg = timm.models.get_pretrained_cfg("tresnet_v2_l")
    assert (tuple(cfg.mean), tuple(cfg.std), tuple(cfg.input_size)) == ((0, 0, 0), (1, 1, 1), (3, 224, 224))


def test_input_is_renormalized_and_resized_bicubic_like_a_direct_computation():
    teacher = make(dict(img_size=48, fuse_bn=False))  # resnet10t's pretrained_cfg: ImageNet mean/std
    x = torch.randn(2, 3, 32, 32)
    direct = F.interpolate(to_teacher_input(x), size=(48, 48), mode="bicubic", align_corners=False)
    torch.testing.assert_close(teacher.adapt(x), direct, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(teacher(x), teacher.model(direct), rtol=1e-4, atol=1e-5)


def test_same_normalization_and_size_pass_the_batch_unchanged():
    teacher = make(dict(img_size=32, fuse_bn=False), mean=IMAGENET_MEAN, std=IMAGENET_STD)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(teacher.adapt(x), x)


def test_explicit_mean_std_override_the_pretrained_cfg():
    teacher = make(dict(img_size=32, mean=[0, 0, 0], std=[1, 1, 1], fuse_bn=False))
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(teacher.adapt(x), x * 0.25 + 0.5)


def test_teacher_is_frozen_always_eval_and_returns_plain_fp32_logits():
    teacher = make(dict(img_size=32))
    teacher.train()
    assert not teacher.training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())
    out = teacher(torch.randn(2, 3, 32, 32))
    assert out.dtype == torch.float32 and out.shape == (2, NUM_CLASSES)
    assert not out.requires_grad and not out.is_inference()  # usable as a constant in the loss graph


def test_bf16_teacher_still_returns_fp32():
    teacher = make(dict(img_size=32, dtype="bf16"))
    assert teacher.identity["dtype"] == "bf16"
    assert teacher(torch.randn(2, 3, 32, 32)).dtype == torch.float32


def test_student_step_leaves_teacher_untouched_and_out_of_the_student_state_dict(sharp_teacher):
    _, path = sharp_teacher
    teacher = make(dict(teacher_checkpoint=str(path), img_size=32))
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = tiny_cnn()
    keys_before = set(student.state_dict())
    optimizer = torch.optim.AdamW(student.parameters(), lr=0.1)
    x = torch.randn(8, 3, 32, 32)
    out = student(x)
    total, _ = build_kd_loss(dict(kind="soft"))(out, teacher(x), F.cross_entropy(out, torch.zeros(8).long()))
    total.backward()
    optimizer.step()
    for k, v in teacher.state_dict().items():  # weights and BN running stats
        assert torch.equal(v, before[k]), k
    assert set(student.state_dict()) == keys_before
    teacher_ptrs = {t.data_ptr() for t in teacher.state_dict().values()}
    assert not teacher_ptrs & {t.data_ptr() for t in student.state_dict().values()}


@pytest.mark.parametrize("wrap", ["raw", "model", "state_dict", "ema", "ddp"])
def test_checkpoint_loads_raw_or_wrapped_state_dicts(tmp_path, wrap):
    source = timm.create_model("resnet10t", num_classes=NUM_CLASSES).eval()
    state = source.state_dict()
    if wrap == "ddp":
        obj = {f"module.{k}": v for k, v in state.items()}
    else:
        obj = state if wrap == "raw" else {wrap: state, "epoch": 3}
    torch.save(obj, tmp_path / "t.pth")
    teacher = make(dict(teacher_checkpoint=str(tmp_path / "t.pth"), img_size=32, fuse_bn=False),
                   mean=IMAGENET_MEAN, std=IMAGENET_STD)
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(teacher(x), source(x))
    assert teacher.identity["weights_sha256"] == weights_sha256(source)


def test_checkpoint_of_another_architecture_is_a_one_line_error(tmp_path):
    torch.save(timm.create_model("resnet10t", num_classes=7).state_dict(), tmp_path / "seven.pth")
    with pytest.raises(TeacherError, match=r"does not fit resnet10t: 2 of another shape \(e.g. fc.weight"):
        make(dict(teacher_checkpoint=str(tmp_path / "seven.pth")))
    state = timm.create_model("resnet10t", num_classes=NUM_CLASSES).state_dict()
    state["extra.weight"] = torch.zeros(1)
    del state["fc.bias"]
    torch.save(state, tmp_path / "keys.pth")
    with pytest.raises(TeacherError, match="1 missing .*fc.bias.*1 unexpected .*extra.weight"):
        make(dict(teacher_checkpoint=str(tmp_path / "keys.pth")))


def test_missing_or_unreadable_checkpoint_and_unknown_teacher_are_clear_errors(tmp_path):
    with pytest.raises(TeacherError, match="teacher checkpoint not found: .*nope.pth"):
        make(dict(teacher_checkpoint=str(tmp_path / "nope.pth")))
    (tmp_path / "junk.pth").write_text("not a checkpoint")
    with pytest.raises(TeacherError, match="cannot read teacher checkpoint"):
        make(dict(teacher_checkpoint=str(tmp_path / "junk.pth")))
    torch.save({"epoch": 1}, tmp_path / "empty.pth")
    with pytest.raises(TeacherError, match="holds no state_dict"):
        make(dict(teacher_checkpoint=str(tmp_path / "empty.pth")))
    with pytest.raises(TeacherError, match="'no_such_net' is neither a timm model name"):
        make(dict(teacher="no_such_net"))
    with pytest.raises(TeacherError, match="distill.teacher checkpoint not found"):
        make(dict(teacher=str(tmp_path / "run" / "best.ckpt")))


@pytest.mark.parametrize("value, device, graphs, mode", [
    ("auto", "cpu", True, None), ("auto", "cuda", True, "reduce-overhead"), ("auto", "cuda", False, "default"),
    (True, "cpu", True, "default"), ("true", "cuda", True, "default"), (False, "cuda", True, None),
])
def test_distill_compile_auto_graphs_the_teacher_on_cuda_and_leaves_it_eager_on_cpu(value, device, graphs, mode):
    """cuda_graphs=False: the trainer captures the whole update around the teacher (no graph inside a graph);
    true: compiled without graphs, wherever."""
    from distill.teachers import compile_mode

    assert compile_mode(value, torch.device(device), cuda_graphs=graphs) == mode


def test_the_default_teacher_on_cpu_is_not_compiled_and_a_bad_compile_value_names_the_key():
    assert not isinstance(make({}).model, torch._dynamo.eval_frame.OptimizedModule)
    with pytest.raises(ValueError, match="distill.compile must be one of auto|true|false, got 'fast'"):
        make(dict(compile="fast"))


def test_bad_dtype_is_an_error_naming_the_key():
    with pytest.raises(ValueError, match="distill.dtype must be one of bf16|fp16|fp32, got 'int8'"):
        make(dict(dtype="int8"))


def test_weights_sha256_is_stable_and_follows_the_weights_not_the_run_settings(sharp_teacher):
    model, path = sharp_teacher
    a = make(dict(teacher_checkpoint=str(path), img_size=32, fuse_bn=True, dtype="fp32"))
    b = make(dict(teacher_checkpoint=str(path), img_size=32, fuse_bn=False, dtype="bf16"))
    other = make(dict(img_size=32))  # random init
    assert a.identity["weights_sha256"] == b.identity["weights_sha256"] == weights_sha256(model)
    assert other.identity["weights_sha256"] != a.identity["weights_sha256"]
    assert a.identity["name"] == "resnet10t" and a.identity["img_size"] == [32, 32]


def test_default_img_size_is_the_teachers_test_size_from_its_pretrained_cfg():
    cfg = timm.models.get_pretrained_cfg("resnet10t")  # trained at 176, evaluated at 224
    assert make(dict(fuse_bn=False)).img_size == tuple(cfg.test_input_size[1:]) == (224, 224)


def test_fused_teacher_gives_the_unfused_logits(sharp_teacher):
    _, path = sharp_teacher
    x = smooth_images(4, seed=5)
    fused = make(dict(teacher_checkpoint=str(path), img_size=32, fuse_bn=True))
    plain = make(dict(teacher_checkpoint=str(path), img_size=32, fuse_bn=False))
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    expected = plain(x)  # this teacher's logits reach ~1e2: compare relative to their scale
    assert (fused(x) - expected).abs().max() <= 1e-5 * expected.abs().max()


@pytest.mark.slow
def test_self_distillation_from_a_checkpoint_of_this_project(tmp_path):
    mobilemamba = pytest.importorskip("mobilemamba")
    kwargs = dict(embed_dim=(16, 32, 48), depth=(1, 1, 1), num_classes=NUM_CLASSES)
    raw, ema = (mobilemamba.create_model("mobilemamba_t2", **kwargs).eval() for _ in range(2))
    config = {"model": {"name": "mobilemamba_t2", "img_size": 32, "scan_backend": "auto",
                        "kwargs": {"embed_dim": [16, 32, 48], "depth": [1, 1, 1]}},
              "data": {"num_classes": NUM_CLASSES}}
    path = tmp_path / "best.ckpt"
    torch.save({"model": raw.state_dict(), "ema": ema.state_dict(), "config": config, "epoch": 9}, path)
    x = torch.randn(2, 3, 32, 32)
    for use_ema, source in ((None, ema), (False, raw)):  # EMA weights by default when present
        teacher = build_teacher(dict(kind="soft", teacher=str(path), teacher_ema=use_ema, fuse_bn=True),
                                student_mean=IMAGENET_MEAN, student_std=IMAGENET_STD,
                                student_img_size=32, device="cpu")
        assert teacher.identity["name"] == "mobilemamba_t2" and teacher.img_size == (32, 32)
        assert teacher.identity["weights_sha256"] == weights_sha256(source)
        with torch.no_grad():
            torch.testing.assert_close(teacher(x), source(x), rtol=1e-4, atol=1e-4)


def test_fp32_teacher_ignores_the_students_autocast():
    """The engine calls the teacher inside the student's autocast; the teacher's own dtype wins."""
    teacher = make(dict(img_size=32, dtype="fp32"))
    x = torch.randn(2, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = teacher(x)
    torch.testing.assert_close(inside, teacher(x), rtol=0, atol=0)


@pytest.mark.slow
def test_miil_format_tresnet_checkpoint_is_converted_on_load(tmp_path):
    """The published teacher file is in MIIL's inplace_abn layout (conv1.0 / conv1.1 …); timm's
    converter for it (the model module's checkpoint_filter_fn) is applied when keys differ."""
    import re

    from timm.models.tresnet import checkpoint_filter_fn

    timm_state = timm.create_model("tresnet_m", num_classes=NUM_CLASSES).state_dict()
    miil = {re.sub(r"(conv\d+|downsample\.\d+)\.conv\.", r"\1.0.", re.sub(r"(conv\d+|downsample\.\d+)\.bn\.", r"\1.1.", k)): v
            for k, v in timm_state.items()}
    assert "body.conv1.0.weight" in miil and "body.conv1.conv.weight" not in miil
    torch.save({"model": miil}, tmp_path / "tresnet_miil.pth")
    teacher = make(dict(teacher="tresnet_m", teacher_checkpoint=str(tmp_path / "tresnet_miil.pth"),
                        img_size=32, fuse_bn=False))
    expected = timm.create_model("tresnet_m", num_classes=NUM_CLASSES)
    expected.load_state_dict(checkpoint_filter_fn(miil, expected))
    assert teacher.identity["weights_sha256"] == weights_sha256(expected)


def test_the_teachers_class_count_is_told_without_building_it(tmp_path):
    """What the engine compares with the student's before training: a timm architecture's head (built on the meta
    device), its kwargs, distill.num_classes, or the recorded config of one of this project's checkpoints."""
    from distill import teacher_num_classes

    assert teacher_num_classes(dict(kind="soft", teacher="resnet10t")) == 1000
    assert teacher_num_classes(dict(kind="soft", teacher="resnet10t", teacher_kwargs={"num_classes": 5})) == 5
    assert teacher_num_classes(dict(kind="soft", teacher="resnet10t", num_classes=7)) == 7
    torch.save({"config": {"model": {"name": "mobilemamba_t2"}, "data": {"num_classes": 3}}}, tmp_path / "ours.ckpt")
    assert teacher_num_classes(dict(kind="soft", teacher=str(tmp_path / "ours.ckpt"))) == 3
    assert teacher_num_classes(dict(kind="soft", teacher=str(tmp_path / "missing.ckpt"))) is None  # the build says why
