"""torch.compile readiness on a CUDA GPU: the triton scan's torch.library ops (opcheck, and equal to the autograd
formula's kernels / the torch backend), then Dynamo's graph and graph-break counts for a whole model per scan
backend (wavelet 'conv'), inference (fused, inference_mode) and training.
`python benchmarks/gpu_compile_check.py [--model mobilemamba_s6] [--batch 8] [--skip-opcheck]`
"""
from __future__ import annotations

import argparse
import time

import torch

import mobilemamba
from mobilemamba.ops.scan import get_scan_fn


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def scan_inputs(batch: int, channels: int, length: int, dtype: torch.dtype) -> dict:
    g = torch.Generator(device="cuda").manual_seed(0)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    return dict(u=r(batch, channels, length).to(dtype), delta=(0.5 * r(batch, channels, length)).to(dtype),
                A=-torch.exp(0.5 * r(channels, 1)), B=r(batch, 2, 1, length).to(dtype),
                C=r(batch, 2, 1, length).to(dtype), D=r(channels), delta_bias=0.1 * torch.rand(channels, device="cuda"))


def check_ops(skip_opcheck: bool) -> None:
    triton_fn, torch_fn = get_scan_fn("triton"), get_scan_fn("torch")
    for dtype in (torch.float32, torch.bfloat16):
        x = scan_inputs(4, 2 * 64, 197, dtype)
        outs, grads = [], []
        for fn in (torch_fn, triton_fn):
            ins = {k: v.detach().requires_grad_() for k, v in x.items()}
            y = fn(**ins)
            y.float().square().mean().backward()
            outs.append(y.detach())
            grads.append({k: v.grad for k, v in ins.items()})
        errs = {k: f"{rel(grads[1][k], grads[0][k]):.1e}" for k in x}
        print(f"scan {str(dtype):<15} triton op vs torch: out {rel(outs[1], outs[0]):.1e} grads {errs}", flush=True)
        with torch.inference_mode():
            y_inf = triton_fn(**x)
        print(f"scan {str(dtype):<15} inference_mode (no states stored) equal: {torch.equal(y_inf, outs[1])}")
    if skip_opcheck:
        return
    x = scan_inputs(2, 2 * 16, 70, torch.float32)
    ins = [x[k].clone().requires_grad_() for k in ("u", "delta", "A", "B", "C", "D", "delta_bias")]
    print("opcheck fwd", torch.library.opcheck(torch.ops.mobilemamba.selective_scan_fwd.default, (*ins, True, True)))
    y, h = torch.ops.mobilemamba.selective_scan_fwd(*[t.detach() for t in ins], True, True)
    print("opcheck bwd", torch.library.opcheck(torch.ops.mobilemamba.selective_scan_bwd.default,
                                               (*[t.detach() for t in ins], h, torch.randn_like(y), True)))


def explain(model_name: str, batch: int) -> None:
    size = mobilemamba.models.VARIANTS[model_name].img_size
    x = torch.randn(batch, 3, size, size, device="cuda").to(memory_format=torch.channels_last)
    for backend in ("auto", "triton", "torch"):
        for mode in ("infer", "train"):
            torch._dynamo.reset()
            model = mobilemamba.create_model(model_name, scan_backend=backend).cuda()
            model = model.to(memory_format=torch.channels_last).set_wavelet_impl("conv")
            model = model.fuse() if mode == "infer" else model.train()
            t0 = time.perf_counter()
            with torch.autocast("cuda", dtype=torch.bfloat16), torch.inference_mode(mode == "infer"):
                ex = torch._dynamo.explain(model)(x)
            reasons = sorted({b.reason.splitlines()[0][:120] for b in ex.break_reasons})
            print(f"explain {model_name} scan={backend:<7} {mode:<6} graphs {ex.graph_count:>3} "
                  f"breaks {ex.graph_break_count:>3} ({time.perf_counter() - t0:.1f} s) {reasons[:3]}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="mobilemamba_s6")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--skip-opcheck", action="store_true")
    parser.add_argument("--skip-ops", action="store_true", help="only the graph-break counts")
    args = parser.parse_args()
    if not args.skip_ops:
        check_ops(args.skip_opcheck)
    explain(args.model, args.batch)


if __name__ == "__main__":
    main()
