"""The 'chunked' scan (the export backend) computes the textbook recurrence, in float32, outputs and gradients."""
import pytest
import torch

import mobilemamba
from mobilemamba.export import set_scan_backend
from mobilemamba.ops.scan import (ScanBackendError, get_scan_fn, resolve_backend, selective_scan, selective_scan_ref,
                                  selective_scan_torch)
from mobilemamba.ops.scan.chunked_scan import linear_recurrence, segment_sums, selective_scan_chunked
from tests.models.helpers import TINY, randomize_bn, rel, scan_inputs


@pytest.mark.parametrize("length,chunk", [(1, 32), (31, 32), (32, 32), (33, 32), (97, 8), (400, 32), (144, 5)])
def test_chunked_scan_in_float32_equals_the_float64_sequential_reference_with_gradients(length, chunk):
    ref_in = {k: v.requires_grad_() for k, v in scan_inputs(length=length, seed=length).items()}
    fast_in = {k: v.detach().float().requires_grad_() for k, v in ref_in.items()}
    ref = selective_scan_ref(**ref_in)
    grad = torch.randn_like(ref)
    ref.backward(grad)
    out = selective_scan_chunked(**fast_in, chunk=chunk)
    out.backward(grad.float())
    assert out.dtype == torch.float32
    assert rel(out, ref) < 1e-6
    for name in ref_in:
        assert rel(fast_in[name].grad, ref_in[name].grad) < 1e-5, name


def test_chunked_scan_stays_accurate_with_strong_decay_then_weak_decay():
    """Strong decay drives the running sum of Δ·A to ~ -1e5; later weak-decay steps must still be exact, which a
    difference of long prefix sums in float32 would not be (segment sums are formed over the segment only)."""
    x = scan_inputs(length=1024, seed=4)
    x["delta"][..., :512] = 20.0
    x["delta"][..., 512:] = -6.0
    x["A"] = x["A"] * 5
    out = selective_scan_chunked(**{k: v.float() for k, v in x.items()})
    assert torch.isfinite(out).all()
    assert rel(out, selective_scan_ref(**x)) < 1e-6


def test_segment_sums_are_sums_over_the_segment_and_minus_infinity_above_the_diagonal():
    x = torch.tensor([1.0, 2.0, 4.0])
    s = segment_sums(x)
    assert s[2, 0] == 2.0 + 4.0 and s[2, 1] == 4.0 and s[1, 0] == 2.0
    assert (s.diagonal() == 0).all()
    assert torch.isneginf(s[0, 1]) and torch.isneginf(s[0, 2]) and torch.isneginf(s[1, 2])


def test_linear_recurrence_matches_a_loop_for_every_chunk_size():
    g = torch.Generator().manual_seed(0)
    log_a, x = -torch.rand(3, 50, generator=g, dtype=torch.float64), torch.randn(3, 50, generator=g,
                                                                               dtype=torch.float64)
    h, expected = torch.zeros(3, dtype=torch.float64), []
    for t in range(50):
        h = log_a[:, t].exp() * h + x[:, t]
        expected.append(h)
    expected = torch.stack(expected, -1)
    for chunk in (1, 7, 16, 50, 64):
        assert torch.allclose(linear_recurrence(log_a, x, chunk), expected, atol=1e-12), chunk


def test_chunked_scan_keeps_samples_independent():
    x = scan_inputs(batch=3)
    alone = selective_scan_chunked(**{k: (v[1:2] if v.dim() > 2 else v) for k, v in x.items()})
    assert torch.allclose(selective_scan_chunked(**x)[1:2], alone, atol=1e-12)


def test_chunked_scan_rejects_a_state_size_other_than_one():
    x = scan_inputs()
    x["A"] = x["A"].repeat(1, 2)
    with pytest.raises(ValueError, match="d_state=1 only"):
        selective_scan_chunked(**x)


def test_chunked_and_sequential_are_registered_backends_on_any_device():
    assert resolve_backend("chunked", torch.device("cpu")) == "chunked"
    assert resolve_backend("sequential", torch.device("meta")) == "sequential"
    assert get_scan_fn("chunked") is selective_scan_chunked
    assert get_scan_fn("sequential") is selective_scan_ref
    x = scan_inputs(length=40)
    assert rel(selective_scan(**x, backend="chunked"), selective_scan_torch(**x)) < 1e-12
    with pytest.raises(ScanBackendError, match="unknown scan backend 'chunky'"):
        resolve_backend("chunky", torch.device("cpu"))


def test_a_model_gives_the_same_output_with_the_chunked_torch_and_sequential_backends():
    torch.manual_seed(0)
    model = randomize_bn(mobilemamba.create_model("mobilemamba_t2", num_classes=10, scan_backend="torch",
                                                  **TINY)).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = model(x)
        for backend in ("chunked", "sequential"):
            assert set_scan_backend(model, backend) == 3  # one SS2D per block
            assert rel(model(x), ref) < 1e-5, backend
