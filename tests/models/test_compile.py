"""torch.compile traces the whole model as one graph (fullgraph=True: a graph break is an error), for the torch scan
and, in Triton's CPU interpreter, for the triton scan's torch.library ops; compiled outputs and gradients equal
eager ones. Backends 'eager' / 'aot_eager' keep this fast on the CPU (no inductor code generation)."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import mobilemamba
from tests.models.helpers import TINY


def tiny(scan_backend: str) -> torch.nn.Module:
    torch.manual_seed(0)
    model = mobilemamba.create_model("mobilemamba_t2", num_classes=10, scan_backend=scan_backend, **TINY)
    return model.set_wavelet_impl("conv")


def grads(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_fused_model_with_auto_scan_is_one_graph():
    """'auto' logs its choice outside the traced code (inside, it would break the graph at every SS2D call)."""
    torch._dynamo.reset()
    model = tiny("auto").fuse()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        ref = model(x)
        out = torch.compile(model, fullgraph=True, backend="eager")(x)
    assert torch.equal(out, ref)


def test_training_model_with_torch_scan_is_one_graph_forward_and_backward():
    torch._dynamo.reset()
    model = tiny("torch").train()
    x = torch.randn(2, 3, 32, 32)
    model(x).square().mean().backward()
    ref = grads(model)
    model.zero_grad(set_to_none=True)
    out = torch.compile(model, fullgraph=True, backend="aot_eager")(x)
    out.square().mean().backward()
    assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(grads(model), ref))


def test_regions_are_the_stem_and_every_stage_module():
    model = tiny("torch")
    regions = model.regions()
    assert regions[0] is model.patch_embed
    assert sum(isinstance(r, mobilemamba.models.mobilemamba.MobileMambaBlock) for r in regions) == sum(TINY["depth"])
    in_regions = {id(p) for r in regions for p in r.parameters()}
    outside = [n for n, p in model.named_parameters() if id(p) not in in_regions]
    assert outside and all(n.startswith("head.") for n in outside)


@pytest.mark.slow
def test_triton_scan_ops_pass_opcheck_and_compile_as_one_graph_in_the_triton_interpreter():
    """The custom ops (schema, fake tensors, autograd registration, AOT dispatch), then the tiny model with the
    triton scan under torch.compile(fullgraph=True, backend='aot_eager'): outputs and gradients as eager."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch, mobilemamba
        from mobilemamba.ops.scan import selective_scan_torch
        from mobilemamba.ops.scan.triton_scan import selective_scan_triton
        from tests.models.helpers import TINY, scan_inputs
        x = {k: v.float() for k, v in scan_inputs(channels=8, length=37).items()}
        names = ("u", "delta", "A", "B", "C", "D", "delta_bias")
        for drop in ((), ("D", "delta_bias")):
            args = [None if k in drop else x[k].clone().requires_grad_() for k in names]
            torch.library.opcheck(torch.ops.mobilemamba.selective_scan_fwd.default, (*args, True, True))
            plain = [None if a is None else a.detach() for a in args]
            y, h = torch.ops.mobilemamba.selective_scan_fwd(*plain, True, True)
            assert h.shape == y.shape and h.dtype == torch.float32
            torch.library.opcheck(torch.ops.mobilemamba.selective_scan_bwd.default,
                                  (*plain, h, torch.randn_like(y), True))
            with torch.inference_mode():  # no states kept without autograd
                y2, h2 = torch.ops.mobilemamba.selective_scan_fwd(*plain, True, False)
            assert h2.numel() == 0 and torch.equal(y2, y)

        torch.manual_seed(0)
        model = mobilemamba.create_model("mobilemamba_t2", num_classes=10, scan_backend="triton", **TINY)
        model.set_wavelet_impl("conv").train()
        ref_model = mobilemamba.create_model("mobilemamba_t2", num_classes=10, scan_backend="torch", **TINY)
        ref_model.set_wavelet_impl("conv").load_state_dict(model.state_dict())
        ref_model.train()
        inp = torch.randn(2, 3, 32, 32)
        def run(m):
            m.zero_grad(set_to_none=True)
            out = m(inp)
            out.square().mean().backward()
            return out.detach(), [p.grad.clone() for p in m.parameters() if p.grad is not None]
        eager_out, eager_grads = run(model)
        torch_out, torch_grads = run(ref_model)
        comp_out, comp_grads = run(torch.compile(model, fullgraph=True, backend="aot_eager"))
        assert torch.equal(comp_out, eager_out)
        assert all(torch.allclose(a, b, rtol=1e-5, atol=1e-7) for a, b in zip(comp_grads, eager_grads))
        assert torch.allclose(eager_out, torch_out, rtol=1e-4, atol=1e-5)
        rel = max(((a - b).norm() / b.norm().clamp_min(1e-12)).item() for a, b in zip(eager_grads, torch_grads))
        assert rel < 1e-3, rel
        print("ok")
    """)
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=500)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


@pytest.mark.slow
def test_the_first_compiled_call_is_the_only_compile():
    """A fresh process (the triton scan, in Triton's interpreter on CPU): Dynamo guarded on the scan dispatcher
    loading the triton backend at first use, so the second call recompiled the whole model."""
    pytest.importorskip("triton")
    code = textwrap.dedent("""
        import torch, mobilemamba
        from tests.models.helpers import TINY
        torch._dynamo.config.error_on_recompile = True
        model = mobilemamba.create_model("mobilemamba_t2", num_classes=10, scan_backend="triton", **TINY)
        compiled = torch.compile(model.set_wavelet_impl("conv").eval(), backend="eager")
        with torch.no_grad():
            for _ in range(3):
                compiled(torch.randn(1, 3, 32, 32))
        print("compiles", torch._dynamo.utils.counters["stats"]["unique_graphs"])
    """)
    env = dict(os.environ, TRITON_INTERPRET="1")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=500)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("compiles 1")


def test_compile_model_switches_the_haar_step_to_the_fusable_shuffle_form_unless_told_to_keep_it():
    """Measured faster when compiled (docs/results.md#infer-compiled); wavelet=None keeps the caller's choice."""
    from mobilemamba.models.compiling import COMPILED_WAVELET, compile_model
    from mobilemamba.models.wavelet import HaarTransform

    def impls(m: torch.nn.Module) -> set[str]:
        return {mod.impl for mod in m.modules() if isinstance(mod, HaarTransform)}

    model = tiny("torch").set_wavelet_impl("pytorch_wavelets")
    compile_model(model, model, "whole", backend="eager")  # wraps lazily: nothing is traced here
    assert COMPILED_WAVELET == "shuffle" and impls(model) == {"shuffle"}
    model.set_wavelet_impl("conv")
    compile_model(model, model, "regional", backend="eager", wavelet=None)
    assert impls(model) == {"conv"}
