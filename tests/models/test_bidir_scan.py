"""SS2D's two-direction Triton kernel (scan backend 'triton_bidir') computes the published formulation: outputs and
gradients, at the op level against the float64 textbook loop and at the module level against SS2D's channel-major
path. On a CUDA machine the kernels run compiled; elsewhere in Triton's interpreter (tests/conftest.py)."""
import pytest
import torch

import mobilemamba.ops.scan.triton_bidir as triton_bidir
from mobilemamba.engine.evaluate import ieee_fp32
from mobilemamba.models.layers import randomize_batchnorm
from mobilemamba.models.ss2d import SS2D
from mobilemamba.ops.scan import (ScanBackendError, bidirectional_scan, bidirectional_scan_ref, resolve_backend,
                                  selective_scan)
from tests.models.helpers import rel, scan_inputs

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def bidir_inputs(batch: int, length: int, dim: int, seed: int, dtype=torch.float64) -> dict[str, torch.Tensor]:
    """Token-major operands of both directions: u (b, L, d), delta (b, L, 2d), A (2d, 1), B, C (b, L, 2), D and
    delta_bias (2d)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(u=r(batch, length, dim), delta=r(batch, length, 2 * dim),
                A=-torch.rand(2 * dim, 1, generator=g, dtype=dtype) * 2, B=r(batch, length, 2), C=r(batch, length, 2),
                D=r(2 * dim), delta_bias=torch.rand(2 * dim, generator=g, dtype=dtype))


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles of 8 steps x 16 channels: short test sequences cross tile and channel-block boundaries."""
    monkeypatch.setattr(triton_bidir, "MAX_BLOCK_L", 8)
    monkeypatch.setattr(triton_bidir, "TILE_ELEMENTS", 128)


@pytest.mark.parametrize("batch,length,dim,seed", [(2, 5, 3, 0), (2, 37, 20, 1), (1, 1, 17, 2)])
def test_two_direction_kernel_equals_the_published_formulation_outputs_and_gradients(small_tiles, batch, length,
                                                                                     dim, seed):
    """One tile and several (L = 37: five tiles of 8), one channel block and two (d = 20), a single step."""
    ref_in = {k: v.requires_grad_() for k, v in bidir_inputs(batch, length, dim, seed).items()}
    fast_in = {k: v.detach().float().to(DEVICE).requires_grad_() for k, v in ref_in.items()}
    ref = bidirectional_scan_ref(**ref_in)
    grad = torch.randn_like(ref)
    ref.backward(grad)
    out = bidirectional_scan(**fast_in, backend="triton_bidir")
    out.backward(grad.float().to(DEVICE))
    assert out.dtype == torch.float32 and out.shape == (batch, length, dim)
    assert rel(out.cpu(), ref) < 1e-5
    for name in ref_in:
        assert rel(fast_in[name].grad.cpu(), ref_in[name].grad) < 1e-5, name


def test_two_direction_kernel_reads_bf16_operands_and_returns_gradients_in_their_dtypes(small_tiles):
    """Under autocast SS2D passes u, delta, B, C in bf16: y stays float32, computed from the bf16 values."""
    x = bidir_inputs(2, 19, 24, seed=3)
    low = {k: (v.to(torch.bfloat16) if k in ("u", "delta", "B", "C") else v.float()).to(DEVICE).requires_grad_()
           for k, v in x.items()}
    ref_in = {k: v.detach().cpu().double().requires_grad_() for k, v in low.items()}
    ref = bidirectional_scan_ref(**ref_in)
    grad = torch.randn_like(ref)
    ref.backward(grad)
    out = bidirectional_scan(**low, backend="triton_bidir")
    out.backward(grad.float().to(DEVICE))
    assert out.dtype == torch.float32 and rel(out.cpu(), ref) < 1e-5
    for name, t in low.items():
        assert t.grad.dtype == t.dtype, name
        assert rel(t.grad.cpu(), ref_in[name].grad) < (1e-2 if t.dtype == torch.bfloat16 else 1e-5), name


def test_ss2d_token_major_path_equals_the_channel_major_path(small_tiles):
    """The whole SS2D (odd 5x7 map, channels_last and not), outputs and every parameter's gradient."""
    torch.manual_seed(0)
    channel_major = randomize_batchnorm(SS2D(10, scan_backend="torch")).train()
    token_major = randomize_batchnorm(SS2D(10, scan_backend="triton_bidir")).to(DEVICE).train()
    token_major.load_state_dict(channel_major.state_dict())
    x = torch.randn(2, 10, 5, 7)
    grad = torch.randn(2, 10, 5, 7)
    for memory_format in (torch.contiguous_format, torch.channels_last):
        results = []
        for module, device in ((channel_major, "cpu"), (token_major, DEVICE)):
            module.zero_grad(set_to_none=True)
            inp = x.clone(memory_format=memory_format).to(device).requires_grad_()
            with ieee_fp32():  # cuDNN's default TF32 convolutions would be ~1e-3 off
                out = module(inp)
                out.backward(grad.to(device))
            results.append((out.detach().cpu(), inp.grad.cpu(),
                            {n: p.grad.cpu() for n, p in module.named_parameters()}))
        (ref, ref_dx, ref_grads), (out, dx, grads) = results
        assert rel(out, ref) < 1e-5 and rel(dx, ref_dx) < 1e-5
        assert {n: rel(g, ref_grads[n]) < 1e-5 for n, g in grads.items()} == {n: True for n in grads}


def test_two_direction_ops_pass_opcheck_and_keep_no_states_without_autograd():
    x = {k: v.float().to(DEVICE) for k, v in bidir_inputs(2, 5, 6, seed=4).items()}
    args = list(x.values())
    torch.library.opcheck(torch.ops.mobilemamba.bidir_scan_fwd.default,
                          (*(a.clone().requires_grad_() for a in args), True))
    y, h = torch.ops.mobilemamba.bidir_scan_fwd(*args, True)
    assert h.shape == x["delta"].shape and h.dtype == torch.float32
    torch.library.opcheck(torch.ops.mobilemamba.bidir_scan_bwd.default, (*args, h, torch.randn_like(y)))
    with torch.inference_mode():
        y_plain, h_plain = torch.ops.mobilemamba.bidir_scan_fwd(*args, False)
    assert h_plain.numel() == 0 and torch.equal(y_plain, y)


def test_ss2d_with_the_two_direction_kernel_compiles_as_one_graph_with_eager_outputs_and_gradients():
    torch._dynamo.reset()
    torch.manual_seed(0)
    module = randomize_batchnorm(SS2D(10, scan_backend="triton_bidir")).to(DEVICE).train()
    inp = torch.randn(2, 10, 5, 7, device=DEVICE).to(memory_format=torch.channels_last)

    def run(m):
        module.zero_grad(set_to_none=True)
        out = m(inp)
        out.square().mean().backward()
        return out.detach(), [p.grad.clone() for p in module.parameters()]

    eager_out, eager_grads = run(module)
    comp_out, comp_grads = run(torch.compile(module, fullgraph=True, backend="aot_eager"))
    assert torch.allclose(comp_out, eager_out, rtol=1e-5, atol=1e-6)
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-6) for a, b in zip(comp_grads, eager_grads))


def test_auto_picks_the_two_direction_kernel_for_ss2d_on_cuda_and_one_direction_scans_refuse_it():
    cuda = torch.device("cuda")
    assert resolve_backend("auto", cuda, bidirectional=True) == "triton_bidir"
    assert resolve_backend("auto", cuda) == "triton"
    assert resolve_backend("auto", torch.device("cpu"), bidirectional=True) == "torch"
    with pytest.raises(ScanBackendError, match="'triton_bidir' scans SS2D's two directions at once"):
        selective_scan(**scan_inputs(), backend="triton_bidir")


def test_the_probe_times_both_forms_of_the_core_on_the_variants_shapes_and_compares_their_outputs(monkeypatch):
    from mobilemamba import ss2d_probe as probe

    assert probe.core_shapes("mobilemamba_s6", 256) == [(256, 320, 14, 14), (256, 544, 7, 7), (256, 544, 4, 4)]
    monkeypatch.setattr(probe, "core_shapes", lambda *a, **k: [(1, 20, 5, 7)])
    monkeypatch.setattr(probe, "_ms_per_call", lambda fn, *a: (fn(), 1.0)[1])  # one call: no timing on the CPU
    rows = probe.probe("mobilemamba_t2", 1, ((8, 128), (64, 2048)), DEVICE)
    assert [(r["shape"], r["backend"], r["tiles"]) for r in rows] == [
        ("1x20x5x7", "triton", "-"), ("1x20x5x7", "triton_bidir", "8x128"), ("1x20x5x7", "triton_bidir", "64x2048")]
    assert all(r["rel_diff"] < 1e-2 for r in rows)  # bf16 autocast: the two forms round differently
    table = probe.format_rows(rows).splitlines()
    assert len(table) == 5 and table[3].startswith("| 1x20x5x7 | triton_bidir | 8x128 | 1.000 | 1.00 |")
