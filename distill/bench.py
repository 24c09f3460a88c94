"""What a KD step costs: img/s of a plain student training step, of a KD step with the teacher
in fp32 eager, (CUDA) in fp16 autocast unfused as the reference runs it, and with the fast teacher
(bf16 on CUDA, channels_last, BN folded, optional torch.compile); and each teacher's forward alone.

    python -m distill.bench --student mobilemamba_s6 --batch 256              # on the GPU machine
    python -m distill.bench --device cpu --batch 4 --img-size 32 --steps 2 --warmup 1 \\
        --student-kwargs '{"embed_dim": [16, 32, 48], "depth": [1, 1, 1]}' --teacher resnet10t

The training step is the recipe's: AdamW, autocast (fp16 + grad scaler on CUDA, as the
reference), timm Mixup/CutMix on the device batch, SoftTargetCrossEntropy, random inputs already on
the device. Teachers have random weights (speed only; nothing is downloaded).
"""
from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from typing import Any

import timm
import torch
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import nn

from .losses import KDLoss, split_student_output
from .teachers import Teacher, build_teacher

_AMP = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m distill.bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--student", default="mobilemamba_s6")
    p.add_argument("--student-kwargs", type=json.loads, default={}, help="JSON create_model overrides")
    p.add_argument("--teacher", default="tresnet_v2_l", help="timm model name")
    p.add_argument("--teacher-kwargs", type=json.loads, default={}, help="JSON timm.create_model kwargs")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--img-size", type=int, default=None, help="student input size (default: its own)")
    p.add_argument("--teacher-img-size", type=int, default=None, help="default: the teacher's own")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--amp", choices=sorted(_AMP), default=None, help="student autocast (default fp16 on CUDA)")
    p.add_argument("--compile", action="store_true", help="also measure the fast teacher under torch.compile")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    args = p.parse_args(argv)
    if args.batch < 2 or args.batch % 2:
        p.error(f"--batch must be even and >= 2 (mixup pairs samples), got {args.batch}")
    if args.steps < 1 or args.warmup < 0:
        p.error("--steps must be >= 1 and --warmup >= 0")
    return args


def build_student(name: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    """MobileMamba via ``mobilemamba.create_model`` when importable, else any timm model."""
    try:
        import mobilemamba
    except ImportError:
        mobilemamba = None
    if mobilemamba is not None and name.startswith("mobilemamba"):
        return mobilemamba.create_model(name, num_classes=num_classes, **kwargs)
    return timm.create_model(name, num_classes=num_classes, **kwargs)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[], None], steps: int, warmup: int, device: torch.device) -> float:
    """Seconds per call of ``step`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return (time.perf_counter() - start) / steps


def make_train_step(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], num_classes: int,
                    amp: torch.dtype, teacher: Teacher | None, kd: KDLoss | None) -> Callable[[], None]:
    """One recipe training step of ``model`` on a fixed random batch (with KD when a teacher is given)."""
    device = batch[0].device
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16 and device.type == "cuda")
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=num_classes)
    criterion = SoftTargetCrossEntropy()
    model.train()

    def step() -> None:
        images, targets = mixup(batch[0].clone(), batch[1])
        with torch.autocast(device.type, dtype=amp, enabled=amp != torch.float32):
            out = model(images)
        cls, _ = split_student_output(out)
        loss = criterion(cls.float(), targets)
        if teacher is not None and kd is not None:
            loss, _ = kd(out, teacher(images), loss)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    return step


def teacher_variants(args: argparse.Namespace, device: torch.device) -> dict[str, dict[str, Any]]:
    """distill configs of the teachers to compare: fp32 eager, and the fast path (± compile)."""
    base = dict(kind="soft", teacher=args.teacher, num_classes=args.num_classes,
                teacher_kwargs=args.teacher_kwargs, img_size=args.teacher_img_size, compile=False)
    variants = {"teacher fp32 eager": dict(base, dtype="fp32", channels_last=False, fuse_bn=False)}
    if device.type == "cuda":  # the reference: the teacher inside the student's fp16 autocast, unfused
        variants["teacher fp16 (reference)"] = dict(base, dtype="fp16", channels_last=False, fuse_bn=False)
    variants["teacher fast"] = dict(base, fuse_bn=True)
    if args.compile:
        variants["teacher fast+compile"] = dict(base, fuse_bn=True, compile=True)
    return variants


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """All measurements; each row: mode, img/s, ms/step."""
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    amp = _AMP[args.amp or ("fp16" if device.type == "cuda" else "fp32")]
    student = build_student(args.student, args.num_classes, args.student_kwargs).to(device)
    size = args.img_size or int(student.pretrained_cfg["input_size"][-1])
    gen = torch.Generator().manual_seed(0)
    batch = (torch.randn(args.batch, 3, size, size, generator=gen).to(device),
             torch.randint(0, args.num_classes, (args.batch,), generator=gen).to(device))
    rows: list[dict[str, Any]] = []

    def record(mode: str, seconds: float, **extra: Any) -> None:
        rows.append(dict(mode=mode, img_per_s=args.batch / seconds, ms_per_step=1000 * seconds, **extra))

    plain = make_train_step(student, batch, args.num_classes, amp, None, None)
    record("plain step", time_steps(plain, args.steps, args.warmup, device))
    kd = KDLoss(kind="soft", alpha=5.0, tau=1.0)
    for label, cfg in teacher_variants(args, device).items():
        teacher = build_teacher(cfg, student_mean=IMAGENET_DEFAULT_MEAN, student_std=IMAGENET_DEFAULT_STD,
                                student_img_size=size, device=device)
        step = make_train_step(student, batch, args.num_classes, amp, teacher, kd)
        record(f"KD step, {label}", time_steps(step, args.steps, args.warmup, device),
               teacher=teacher.identity["name"], dtype=teacher.identity["dtype"])
        forward = lambda t=teacher: t(batch[0])  # noqa: E731
        record(f"{label} forward only", time_steps(forward, args.steps, args.warmup, device))
        del teacher, step
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return rows


def format_table(rows: list[dict[str, Any]], header: str) -> str:
    """A markdown table: mode | img/s | ms/step | × plain step time."""
    plain = rows[0]["ms_per_step"]
    lines = [header, "", "| mode | img/s | ms/step | step time vs plain |", "|---|---:|---:|---:|"]
    lines += [f"| {r['mode']} | {r['img_per_s']:,.0f} | {r['ms_per_step']:.1f} | {r['ms_per_step'] / plain:.2f}× |"
              for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[dict[str, Any]]:
    args = parse_args(argv)
    rows = run(args)
    device = torch.device(args.device)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    header = (f"student {args.student} {args.student_kwargs or ''}, teacher {args.teacher}, batch {args.batch}, "
              f"{where}, torch {torch.__version__}, timm {timm.__version__}")
    print(format_table(rows, header))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"header": header, "rows": rows}, f, indent=1)
    return rows


if __name__ == "__main__":
    main()
