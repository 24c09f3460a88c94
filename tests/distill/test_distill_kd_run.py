"""End to end on CPU: a tiny student distilled from a fixed teacher learns to agree with it."""
from __future__ import annotations

import pytest
import torch

from distill import build_kd_loss, build_teacher
from tests.distill.kd_helpers import NUM_CLASSES, STUDENT_MEAN, STUDENT_STD, smooth_images, tiny_cnn


def agreement(student: torch.nn.Module, x: torch.Tensor, teacher_logits: torch.Tensor) -> float:
    student.eval()
    with torch.no_grad():
        agree = (student(x).argmax(1) == teacher_logits.argmax(1)).float().mean().item()
    student.train()
    return agree


@pytest.mark.slow
def test_student_top1_agreement_with_the_teacher_rises(sharp_teacher):
    _, path = sharp_teacher
    teacher = build_teacher(dict(kind="soft", teacher="resnet10t", num_classes=NUM_CLASSES,
                                 teacher_checkpoint=str(path), img_size=32),
                            student_mean=STUDENT_MEAN, student_std=STUDENT_STD, student_img_size=32, device="cpu")
    kd = build_kd_loss(dict(kind="soft", alpha=1.0, weighting="convex"))  # pure KD: no labels needed
    train_x, held_out = smooth_images(512, seed=1), smooth_images(256, seed=2)
    held_out_teacher = teacher(held_out)
    assert held_out_teacher.argmax(1).bincount(minlength=NUM_CLASSES).max() < 0.5 * len(held_out)  # varied
    torch.manual_seed(0)
    student = tiny_cnn()
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    start = agreement(student, held_out, held_out_teacher)
    gen = torch.Generator().manual_seed(0)
    for _ in range(40):
        x = train_x[torch.randint(0, len(train_x), (32,), generator=gen)]
        total, _ = kd(student(x), teacher(x), torch.zeros(()))
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
    end = agreement(student, held_out, held_out_teacher)
    always_majority = held_out_teacher.argmax(1).bincount().max().item() / len(held_out)
    assert end > start + 0.2 and end > always_majority + 0.15, \
        f"held-out agreement {start:.2f} → {end:.2f} (majority class {always_majority:.2f})"
