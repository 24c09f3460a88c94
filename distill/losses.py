"""Knowledge-distillation losses.

soft: KL(student ‖ teacher) on temperature-softened distributions, times τ², computed as
      ``F.kl_div(log_softmax(s/τ), log_softmax(t/τ), reduction='sum', log_target=True) * τ²``
      then divided by the batch size (``reduction='batchmean'``, the MobileMamba reference) or by
      ``s.numel()`` = batch × classes (``reduction='numel'``, DeiT's).
hard: cross-entropy of the student to the teacher's argmax (τ is not used).

Weighting with the base (label) loss: ``'add'``: base + α·kd (the reference: α = 5, τ = 1);
``'convex'``: (1−α)·base + α·kd (DeiT; α must lie in [0, 1]).

Distillation head: a student built with ``distillation=True`` returns ``(cls, dist)`` while
training. The engine computes the base loss on ``cls`` (see :func:`split_student_output`) and
passes the whole tuple here; the KD term then uses ``dist``.
"""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from .config import KINDS, REDUCTIONS, WEIGHTINGS, DistillConfigError, choice, number, to_dict

StudentOutput = Tensor | tuple[Tensor, Tensor]


def split_student_output(out: StudentOutput) -> tuple[Tensor, Tensor]:
    """(logits for the base loss, logits for the KD loss) from a plain or two-head output."""
    if isinstance(out, (tuple, list)):
        if len(out) != 2:
            raise ValueError(f"student output tuple must be (cls, dist), got {len(out)} tensors")
        return out[0], out[1]
    return out, out


def soft_kd(student: Tensor, teacher: Tensor, tau: float, reduction: str = "batchmean") -> Tensor:
    """τ²·KL(softmax(t/τ) ‖ softmax(s/τ)) summed, then divided by batch or by numel; fp32."""
    s = F.log_softmax(student.float() / tau, dim=1)
    t = F.log_softmax(teacher.float() / tau, dim=1)
    kl = F.kl_div(s, t, reduction="sum", log_target=True) * (tau * tau)
    return kl / (student.shape[0] if reduction == "batchmean" else student.numel())


def hard_kd(student: Tensor, teacher: Tensor) -> Tensor:
    """Cross-entropy of the student to the teacher's top-1 class; fp32."""
    return F.cross_entropy(student.float(), teacher.argmax(dim=1))


class KDLoss(nn.Module):
    """``loss(student_out, teacher_logits, base_loss) -> (total, {"base": .., "kd": ..})``.

    ``student_out`` is the student's logits or its ``(cls, dist)`` pair (KD on ``dist``);
    ``base_loss`` is the already computed label loss (on ``cls``). Logged parts are detached.
    """

    def __init__(self, kind: str = "soft", alpha: float = 5.0, tau: float = 1.0,
                 reduction: str = "batchmean", weighting: str = "add") -> None:
        super().__init__()
        _check(kind=kind, alpha=alpha, tau=tau, reduction=reduction, weighting=weighting)
        self.kind, self.alpha, self.tau = kind, float(alpha), float(tau)
        self.reduction, self.weighting = reduction, weighting

    def forward(self, student_out: StudentOutput, teacher_logits: Tensor,
                base_loss: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        _, student = split_student_output(student_out)
        if student.shape != teacher_logits.shape:
            raise ValueError(f"student logits {tuple(student.shape)} and teacher logits "
                             f"{tuple(teacher_logits.shape)} differ in shape (number of classes?)")
        teacher = teacher_logits.detach()
        kd = soft_kd(student, teacher, self.tau, self.reduction) if self.kind == "soft" \
            else hard_kd(student, teacher)
        base = base_loss.float()
        total = base + self.alpha * kd if self.weighting == "add" \
            else (1.0 - self.alpha) * base + self.alpha * kd
        return total, {"base": base.detach(), "kd": kd.detach()}

    def extra_repr(self) -> str:
        return (f"kind={self.kind}, alpha={self.alpha}, tau={self.tau}, "
                f"reduction={self.reduction}, weighting={self.weighting}")


def _check(*, kind: str, alpha: float, tau: float, reduction: str, weighting: str) -> None:
    """One-line errors naming the offending `distill.*` key."""
    if kind not in ("soft", "hard"):
        raise DistillConfigError(f"KDLoss kind must be soft|hard, got {kind!r}")
    if reduction not in REDUCTIONS:
        raise DistillConfigError(f"distill.reduction must be one of {'|'.join(REDUCTIONS)}, got {reduction!r}")
    if weighting not in WEIGHTINGS:
        raise DistillConfigError(f"distill.weighting must be one of {'|'.join(WEIGHTINGS)}, got {weighting!r}")
    if not tau > 0:
        raise DistillConfigError(f"distill.tau must be > 0, got {tau}")
    if not alpha >= 0:
        raise DistillConfigError(f"distill.alpha must be >= 0, got {alpha}")
    if weighting == "convex" and alpha > 1:
        raise DistillConfigError(f"distill.alpha must be in [0, 1] with weighting=convex, got {alpha}")


def build_kd_loss(distill_cfg: Any) -> KDLoss | None:
    """The KD loss for the `distill` config group; ``None`` when ``distill.kind == 'none'``."""
    cfg = to_dict(distill_cfg)
    kind = choice(cfg, "kind", KINDS)
    if kind == "none":
        return None
    return KDLoss(kind=kind, alpha=number(cfg, "alpha"), tau=number(cfg, "tau"),
                  reduction=choice(cfg, "reduction", REDUCTIONS),
                  weighting=choice(cfg, "weighting", WEIGHTINGS))
