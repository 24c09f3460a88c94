"""KD losses: values against hand-computed cases, weighting, the two-head output, validation."""
from __future__ import annotations

import math

import pytest
import torch

from distill import KDLoss, build_kd_loss, split_student_output
from distill.config import DistillConfigError

LN3 = math.log(3.0)
# teacher softmax (3/4, 1/4) against a uniform student: KL(p_t ‖ p_s) = ¾·ln(3/2) + ¼·ln(1/2)
KL_34_VS_UNIFORM = 0.75 * math.log(1.5) + 0.25 * math.log(0.5)
ZERO = torch.tensor(0.0)


def soft(**kw) -> KDLoss:
    return build_kd_loss(dict(kind="soft", **kw))


def test_soft_kd_is_kl_of_teacher_to_student_per_sample():
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]])
    _, parts = soft(reduction="batchmean")(s, t, ZERO)
    assert parts["kd"].item() == pytest.approx(KL_34_VS_UNIFORM, rel=1e-6)


def test_batchmean_divides_by_batch_and_numel_by_batch_times_classes():
    # second sample: student == teacher → contributes 0
    s = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    t = torch.tensor([[LN3, 0.0], [1.0, 2.0]])
    _, batchmean = soft(reduction="batchmean")(s, t, ZERO)
    _, numel = soft(reduction="numel")(s, t, ZERO)
    assert batchmean["kd"].item() == pytest.approx(KL_34_VS_UNIFORM / 2, rel=1e-6)
    assert numel["kd"].item() == pytest.approx(KL_34_VS_UNIFORM / 4, rel=1e-6)


def test_temperature_softens_both_sides_and_scales_by_tau_squared():
    # logits (2·ln3, 0) at τ=2 give the same (3/4, 1/4) distribution → KL × τ² = 4 × KL
    s, t = torch.tensor([[0.0, 0.0]]), torch.tensor([[2 * LN3, 0.0]])
    _, parts = soft(tau=2.0)(s, t, ZERO)
    assert parts["kd"].item() == pytest.approx(4 * KL_34_VS_UNIFORM, rel=1e-6)


def test_hard_kd_is_cross_entropy_to_teacher_argmax():
    s = torch.tensor([[LN3, 0.0]])  # student probabilities (3/4, 1/4)
    t = torch.tensor([[0.0, 5.0]])  # teacher says class 1
    _, parts = build_kd_loss(dict(kind="hard", tau=3.0))(s, t, ZERO)  # τ is not used by hard KD
    assert parts["kd"].item() == pytest.approx(math.log(4.0), rel=1e-6)


def test_add_weighting_is_the_references_base_plus_five_kd():
    s, t, base = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]]), torch.tensor(2.0)
    total, parts = soft()(s, t, base)  # defaults: alpha 5, tau 1, batchmean, add
    assert total.item() == pytest.approx(2.0 + 5.0 * KL_34_VS_UNIFORM, rel=1e-6)
    assert parts["base"].item() == 2.0


def test_convex_weighting_is_deits():
    s, t, base = torch.tensor([[0.0, 0.0]]), torch.tensor([[LN3, 0.0]]), torch.tensor(2.0)
    total, _ = soft(alpha=0.25, weighting="convex")(s, t, base)
    assert total.item() == pytest.approx(0.75 * 2.0 + 0.25 * KL_34_VS_UNIFORM, rel=1e-6)


def test_gradient_reaches_student_only_and_logged_parts_are_detached():
    s = torch.randn(4, 10, requires_grad=True)
    t = torch.randn(4, 10, requires_grad=True)
    total, parts = soft()(s, t, (s ** 2).mean())
    total.backward()
    assert s.grad is not None and t.grad is None
    assert not parts["base"].requires_grad and not parts["kd"].requires_grad


def test_loss_is_fp32_for_half_precision_logits():
    s, t = torch.randn(4, 10).half(), torch.randn(4, 10).bfloat16()
    total, parts = soft()(s, t, torch.tensor(1.0, dtype=torch.float16))
    assert total.dtype == parts["kd"].dtype == torch.float32


def test_distillation_head_pair_uses_cls_for_base_and_dist_for_kd():
    cls, dist = torch.randn(3, 5) * 10, torch.randn(3, 5)
    assert split_student_output((cls, dist)) == (cls, dist)
    assert split_student_output(cls) == (cls, cls)
    _, parts = soft()((cls, dist), dist.clone(), ZERO)  # dist equals the teacher → KD 0
    assert parts["kd"].item() == pytest.approx(0.0, abs=1e-6)


def test_class_count_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="differ in shape"):
        soft()(torch.randn(2, 5), torch.randn(2, 7), ZERO)


def test_kind_none_builds_no_loss():
    assert build_kd_loss(dict(kind="none")) is None
    assert build_kd_loss(None) is None


@pytest.mark.parametrize("cfg, message", [
    (dict(kind="x"), "distill.kind must be one of none|soft|hard, got 'x'"),
    (dict(kind="soft", tau=0.0), "distill.tau must be > 0"),
    (dict(kind="soft", tau=-1), "distill.tau must be > 0"),
    (dict(kind="soft", alpha=-0.5), "distill.alpha must be >= 0"),
    (dict(kind="soft", alpha=5.0, weighting="convex"), r"distill.alpha must be in \[0, 1\]"),
    (dict(kind="soft", alpha="big"), "distill.alpha must be a number"),
    (dict(kind="soft", reduction="mean"), "distill.reduction must be one of batchmean|numel"),
    (dict(kind="soft", weighting="mul"), "distill.weighting must be one of add|convex"),
    (dict(kind="soft", alpah=1.0), r"unknown distill key\(s\) \['alpah'\]"),
])
def test_bad_config_names_the_key(cfg, message):
    with pytest.raises(DistillConfigError, match=message):
        build_kd_loss(cfg)


def test_accepts_an_omegaconf_config():
    from omegaconf import OmegaConf

    loss = build_kd_loss(OmegaConf.create(dict(kind="soft", alpha=5.0, tau=1.0, reduction="batchmean",
                                               weighting="add", teacher="tresnet_v2_l")))
    assert (loss.kind, loss.alpha, loss.tau) == ("soft", 5.0, 1.0)


def test_every_distill_config_group_file_is_accepted():
    """conf/distill/*.yaml use only keys this package knows; soft_tresnet is the published † KD."""
    from pathlib import Path

    from omegaconf import OmegaConf

    files = sorted(Path(__file__).resolve().parents[2].glob("conf/distill/*.yaml"))
    if not files:
        pytest.skip("no conf/distill group in this checkout")
    for path in files:
        build_kd_loss(OmegaConf.load(path))  # raises on an unknown key or a bad value
    published = Path(files[0].parent, "soft_tresnet.yaml")
    if published.exists():
        loss = build_kd_loss(OmegaConf.load(published))
        assert (loss.kind, loss.alpha, loss.tau, loss.reduction, loss.weighting) == ("soft", 5.0, 1.0, "batchmean", "add")
