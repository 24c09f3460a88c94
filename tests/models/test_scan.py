"""The selective scan: every backend computes the textbook recurrence (outputs and gradients)."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.models.helpers import rel, scan_inputs
import mobilemamba.ops.scan as scan_ops
from mobilemamba.ops.scan import (ScanBackendError, resolve_backend, selective_scan, selective_scan_ref,
                                  selective_scan_torch)


@pytest.mark.parametrize("length,seed", [(1, 0), (97, 1), (400, 2)])
def test_torch_scan_equals_sequential_float64_reference_outputs_and_gradients(length, seed):
    ref_in = {k: v.requires_grad_() for k, v in scan_inputs(length=length, seed=seed).items()}
    fast_in = {k: v.detach().float().requires_grad_() for k, v in ref_in.items()}
    ref = selective_scan_ref(**ref_in)
    grad = torch.randn_like(ref)
    ref.backward(grad)
    out = selective_scan_torch(**fast_in)
    out.backward(grad.float())
    assert out.dtype == torch.float32
    assert rel(out, ref) < 1e-6
    for name in ref_in:
        assert rel(fast_in[name].grad, ref_in[name].grad) < 1e-5, name


def test_torch_scan_stays_accurate_with_strong_decay_over_long_sequences():
    """Large Δ·|A| over L = 1024 would overflow a naive cumulative-product formula."""
    x = scan_inputs(length=1024, seed=3)
    x["delta"] = x["delta"] * 4 + 3  # softplus(Δ) up to ~15
    x["A"] = x["A"] * 5
    out = selective_scan_torch(**{k: v.float() for k, v in x.items()})
    assert torch.isfinite(out).all()
    assert rel(out, selective_scan_ref(**x)) < 1e-6


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_float_out_returns_float32_computed_from_the_low_precision_inputs(dtype):
    """SS2D asks for float_out (the reference's kernel returns float32 under AMP): fp16's range would overflow."""
    x = {k: v.float() for k, v in scan_inputs(length=33, seed=4).items()}
    x["u"] = x["u"].clamp(-3, 3) * 2e4  # fits fp16 (max 65504) ...
    x["D"] = x["D"] * 10  # ... while y = D*u + C*h goes past it
    low = {k: (v.to(dtype) if k in ("u", "delta", "B", "C") else v) for k, v in x.items()}
    out = selective_scan(**low, backend="torch", float_out=True)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.equal(out, selective_scan(**{k: v.float() for k, v in low.items()}, backend="torch"))
    if dtype == torch.float16:
        assert not torch.isfinite(selective_scan(**low, backend="torch")).all(), "without float_out it overflows"


def test_scan_merge_is_per_sample():
    """The reference's CPU fallback mixed samples of a batch (spec §4); here sample i depends on sample i only."""
    x = scan_inputs(batch=3)
    alone = selective_scan_torch(**{k: (v[1:2] if v.dim() > 2 else v) for k, v in x.items()})
    together = selective_scan_torch(**x)
    assert torch.allclose(together[1:2], alone, atol=1e-12)


def test_auto_backend_is_torch_on_cpu_and_unrunnable_backends_are_errors(monkeypatch):
    # as on a machine without Triton's interpreter (the CPU suite runs with TRITON_INTERPRET=1, tests/conftest.py)
    monkeypatch.setattr(scan_ops, "_TRITON_INTERPRET", False)
    assert resolve_backend("auto", torch.device("cpu")) == "torch"
    with pytest.raises(ScanBackendError, match="'triton' needs CUDA"):
        resolve_backend("triton", torch.device("cpu"))
    with pytest.raises(ScanBackendError, match="unknown scan backend 'cuda_oflex'"):
        resolve_backend("cuda_oflex", torch.device("cpu"))
    x = scan_inputs()
    with pytest.raises(ScanBackendError):
        selective_scan(**x, backend="mamba_ssm")


def test_mamba_ssm_is_not_imported_by_the_package():
    code = "import sys, mobilemamba; mobilemamba.create_model('mobilemamba_t2'); print('mamba_ssm' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.slow
def test_triton_kernels_match_the_reference():
    """The Triton forward and backward kernels: compiled on a CUDA GPU, run by Triton's interpreter elsewhere
    (TRITON_INTERPRET=1, set for the subprocess that imports triton)."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch
        from mobilemamba.ops.scan import selective_scan_ref
        from mobilemamba.ops.scan.triton_scan import selective_scan_triton
        dev = "cuda" if torch.cuda.is_available() else "cpu"
        torch.manual_seed(0)
        for length in (5, 130):
            g = lambda *s: torch.randn(*s, dtype=torch.float64)
            x = dict(u=g(2, 20, length), delta=g(2, 20, length), A=-torch.rand(20, 1, dtype=torch.float64) * 2,
                     B=g(2, 2, 1, length), C=g(2, 2, 1, length), D=g(20), delta_bias=torch.rand(20, dtype=torch.float64))
            ref_in = {k: v.requires_grad_() for k, v in x.items()}
            fast_in = {k: v.detach().float().to(dev).requires_grad_() for k, v in x.items()}
            ref = selective_scan_ref(**ref_in); grad = torch.randn_like(ref); ref.backward(grad)
            out = selective_scan_triton(**fast_in); out.backward(grad.float().to(dev))
            errs = [((out.cpu().double() - ref).norm() / ref.norm()).item()]
            errs += [((fast_in[k].grad.cpu().double() - ref_in[k].grad).norm() / ref_in[k].grad.norm()).item() for k in x]
            assert max(errs) < 1e-5, (length, errs)
        # float_out: fp16 inputs whose y = D*u = 9e4 overflows fp16 come back finite in float32, and differentiate
        big = dict(u=torch.full((1, 4, 7), 3e4, dtype=torch.float16, device=dev, requires_grad=True),
                   delta=torch.zeros(1, 4, 7, dtype=torch.float16, device=dev), A=-torch.ones(4, 1, device=dev),
                   B=torch.zeros(1, 2, 1, 7, dtype=torch.float16, device=dev),
                   C=torch.zeros(1, 2, 1, 7, dtype=torch.float16, device=dev),
                   D=torch.full((4,), 3.0, device=dev), delta_bias=torch.zeros(4, device=dev))
        assert torch.isinf(selective_scan_triton(**big)).all()
        y = selective_scan_triton(**big, float_out=True)
        assert y.dtype == torch.float32 and torch.equal(y, torch.full_like(y, 9e4))
        y.sum().backward()
        assert big["u"].grad.dtype == torch.float16 and torch.equal(big["u"].grad, torch.full_like(big["u"].grad, 3.0))
        print("ok")
    """)
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env["TRITON_INTERPRET"] = "1"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("ok")
