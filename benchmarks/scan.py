"""Selective-scan backends side by side on S6 shapes (CUDA): agreement with the sequential float64 reference, and
time of forward and forward+backward. `python benchmarks/scan.py [--backends torch,triton,mamba_ssm]`.
"""
from __future__ import annotations

import argparse

import torch
from triton.testing import do_bench

from mobilemamba.ops.scan import ScanBackendError, get_scan_fn, selective_scan_ref

# (name, batch, channels = 2 directions × d_inner, length): the three S6 stages at 224, batch 256
SHAPES = [("S6 stage1", 256, 2 * 320, 14 * 14), ("S6 stage2", 256, 2 * 544, 7 * 7), ("S6 stage3", 256, 2 * 544, 4 * 4)]


def make(batch: int, channels: int, length: int, dtype: torch.dtype, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator(device="cuda").manual_seed(seed)
    r = lambda *s: torch.randn(*s, device="cuda", generator=g)  # noqa: E731
    return dict(u=r(batch, channels, length).to(dtype), delta=(r(batch, channels, length) * 0.5).to(dtype),
                A=-torch.exp(r(channels, 1) * 0.5), B=r(batch, 2, 1, length).to(dtype),
                C=r(batch, 2, 1, length).to(dtype), D=r(channels), delta_bias=torch.rand(channels, device="cuda",
                                                                                           generator=g) * 0.1)


def run(fn, x: dict, grad: torch.Tensor | None):
    x = {k: v.detach().requires_grad_(grad is not None and v.is_floating_point()) for k, v in x.items()}
    y = fn(**x)
    if grad is None:
        return y, {}
    y.backward(grad)
    return y, {k: v.grad for k, v in x.items()}


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backends", default="torch,triton,mamba_ssm")
    args = parser.parse_args()
    fns = {}
    for name in args.backends.split(","):
        try:
            fns[name] = get_scan_fn(name)
        except ScanBackendError as err:
            print(f"skip {name}: {err}")
    rows = []
    for label, batch, channels, length in SHAPES:
        for dtype in (torch.float32, torch.bfloat16):
            x = make(batch, channels, length, dtype, seed=len(rows))
            grad = torch.randn(batch, channels, length, device="cuda", dtype=dtype)
            ref_y, ref_g = run(selective_scan_ref, {k: v.double() for k, v in x.items()}, grad.double())
            for name, fn in fns.items():
                y, g = run(fn, x, grad)
                err_y = rel(y, ref_y)
                err_g = max(rel(g[k], ref_g[k]) for k in ref_g if g.get(k) is not None)
                t_fwd = do_bench(lambda: fn(**x), warmup=25, rep=100, return_mode="median")
                xg = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in x.items()}
                t_fb = do_bench(lambda: fn(**xg).backward(grad), warmup=25, rep=100, return_mode="median")
                rows.append((label, str(dtype).split(".")[-1], name, err_y, err_g, t_fwd, t_fb))
                print(f"{label:<10} {rows[-1][1]:<9} {name:<10} out {err_y:.1e} grad {err_g:.1e} "
                      f"fwd {t_fwd:.3f} ms fwd+bwd {t_fb:.3f} ms", flush=True)
    print("\n| shape | dtype | backend | rel err out | rel err grads | fwd ms | fwd+bwd ms |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]:.1e} | {r[4]:.1e} | {r[5]:.3f} | {r[6]:.3f} |")


if __name__ == "__main__":
    main()
