"""Where the GPU time of MobileMamba goes: the top CUDA kernels of the fused bf16 channels_last forward (and of a
training step), from torch.profiler, as a table next to benchmarks/roofline.py's floors.

    python benchmarks/gpu_profile.py [--variants t2,s6] [--batch 256] [--mode infer,train] [--top 20] [--compile]

--compile profiles the model compiled by torch.compile (inductor, no CUDA graphs, Haar step as pixel shuffle), so
the table lists the kernels the compiled model runs.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from mobilemamba.models import VARIANTS, create_model  # noqa: E402
from mobilemamba.models.compiling import compile_model  # noqa: E402


def _step_fn(name: str, mode: str, batch: int, compiled: bool = False):
    model = create_model(name, scan_backend="auto").cuda().to(memory_format=torch.channels_last)
    x = torch.randn(batch, 3, VARIANTS[name].img_size, VARIANTS[name].img_size, device="cuda")
    x = x.contiguous(memory_format=torch.channels_last)
    if mode == "infer":
        model = model.fuse()
    runner = compile_model(model, model, "whole", "default") if compiled else model
    if mode == "infer":

        def step():
            with torch.no_grad(), torch.autocast("cuda", torch.bfloat16):
                runner(x)
        return step
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    target = torch.randint(0, 1000, (batch,), device="cuda")

    def step():
        with torch.autocast("cuda", torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(runner(x).float(), target)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def profile_one(name: str, mode: str, batch: int, top: int, iters: int = 5, compiled: bool = False) -> None:
    torch.backends.cudnn.benchmark = True
    step = _step_fn(name, mode, batch, compiled)
    for _ in range(5):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(iters):
            step()
        torch.cuda.synchronize()
    kernels = [e for e in prof.key_averages() if "CUDA" in str(e.device_type) and e.self_device_time_total > 0]
    total = sum(e.self_device_time_total for e in kernels)
    launches = sum(e.count for e in kernels) / iters
    print(f"\n### {name} {mode}, batch {batch}: {total / iters / 1e3:.2f} ms of kernels per step, "
          f"{launches:.0f} kernel launches per step, {len(kernels)} distinct\n")
    print("| kernel | calls/step | ms/step | share |")
    print("|---|---:|---:|---:|")
    for e in sorted(kernels, key=lambda e: -e.self_device_time_total)[:top]:
        print(f"| {e.key[:90]} | {e.count / iters:.0f} | {e.self_device_time_total / iters / 1e3:.3f} | "
              f"{100 * e.self_device_time_total / total:.1f}% |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default="t2,s6")
    ap.add_argument("--mode", default="infer,train")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--compile", action="store_true", help="profile the torch.compile'd model (no CUDA graphs)")
    args = ap.parse_args()
    for v in args.variants.split(","):
        for mode in args.mode.split(","):
            profile_one(f"mobilemamba_{v}", mode, args.batch, args.top, compiled=args.compile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
