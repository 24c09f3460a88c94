"""The compiled fast path against the plain model on a CUDA GPU: fused, bf16, channels_last, torch.compile with the
Haar step as pixel shuffle (models/compiling.COMPILED_WAVELET) and as grouped convs, each against the unfused eager
fp32 model (pytorch_wavelets Haar, IEEE fp32) on the same inputs; BN statistics and affine terms randomized
(models.layers.randomize_batchnorm), so that fusing matters and no branch is hidden behind an initial γ = 0.

    python benchmarks/gpu_shuffle_check.py [--models mobilemamba_t2,mobilemamba_s6] [--batch 32]
    python benchmarks/gpu_shuffle_check.py --device cpu --scan torch --backend eager --batch 1   # plumbing, on a CPU
"""
from __future__ import annotations

import argparse

import torch

import mobilemamba
from mobilemamba.engine.evaluate import ieee_fp32
from mobilemamba.models import VARIANTS
from mobilemamba.models.compiling import compile_model
from mobilemamba.models.layers import randomize_batchnorm


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="mobilemamba_t2,mobilemamba_s6")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--scan", default="triton")
    ap.add_argument("--backend", default="inductor")
    args = ap.parse_args()
    dev = torch.device(args.device)
    amp = torch.bfloat16
    for name in args.models.split(","):
        torch.manual_seed(0)
        size = VARIANTS[name].img_size
        x = torch.randn(args.batch, 3, size, size, device=dev)
        model = mobilemamba.create_model(name, scan_backend=args.scan).to(dev).eval()
        randomize_batchnorm(model)
        with torch.inference_mode(), ieee_fp32():
            ref = model(x)
        for wavelet in ("shuffle", "conv"):
            torch._dynamo.reset()
            fused = mobilemamba.create_model(name, scan_backend=args.scan).to(dev).eval()
            fused.load_state_dict(model.state_dict())
            fused = fused.fuse().to(memory_format=torch.channels_last)
            fast = compile_model(fused, fused, "whole", backend=args.backend, wavelet=wavelet)
            with torch.inference_mode(), torch.autocast(dev.type, amp):
                out = fast(x.to(memory_format=torch.channels_last))
            print(f"{name} @{size}: compiled fused bf16 ({wavelet}) vs eager unfused fp32: rel {rel(out, ref):.2e}, "
                  f"top-1 agree {(out.argmax(1) == ref.argmax(1)).float().mean().item():.3f}")


if __name__ == "__main__":
    main()
