"""Model-level checks on a CUDA GPU (S6): scan backends agree through the whole network (forward and gradients,
fp32 and bf16 autocast), fused equals unfused, channels_last and torch.compile give the same outputs.
`python benchmarks/gpu_model_check.py [--compile]`
"""
from __future__ import annotations

import argparse
import time

import torch

import mobilemamba
from mobilemamba.models.layers import randomize_batchnorm


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mobilemamba_s6")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    ref = mobilemamba.create_model(args.model, scan_backend="torch").cuda()
    randomize_batchnorm(ref)
    fast = mobilemamba.create_model(args.model, scan_backend="triton").cuda()
    fast.load_state_dict(ref.state_dict())
    size = ref.pretrained_cfg["input_size"][-1]
    x = torch.randn(args.batch, 3, size, size, device="cuda")
    for amp in (None, torch.bfloat16):
        outs, grads = [], []
        for model in (ref, fast):
            model.train()
            model.zero_grad()
            with torch.autocast("cuda", dtype=amp or torch.float32, enabled=amp is not None):
                out = model(x)
            out.float().square().mean().backward()
            outs.append(out.detach())
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
        print(f"train {str(amp or 'fp32'):<14} triton vs torch: out {rel(outs[1], outs[0]):.2e} "
              f"grads {rel(grads[1], grads[0]):.2e}")
    ref.eval()
    with torch.no_grad():
        y = ref(x)
        fused = mobilemamba.fuse_model_copy(fast)
        print(f"eval fp32 fused(triton) vs unfused(torch): {rel(fused(x), y):.2e}")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            print(f"eval bf16 fused vs fp32 unfused: {rel(fused(x), y):.2e}")
        cl = fused.to(memory_format=torch.channels_last)
        print(f"eval fp32 channels_last fused vs unfused: {rel(cl(x.to(memory_format=torch.channels_last)), y):.2e}")
        if args.compile:
            t0 = time.time()
            comp = torch.compile(cl)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                out = comp(x.to(memory_format=torch.channels_last))
            print(f"eval bf16 compiled fused vs fp32 unfused: {rel(out, y):.2e} (compile {time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
