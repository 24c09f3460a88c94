"""benchmarks/stem_conv.py times layouts of one function: each candidate computes the model's stem conv."""
import pytest
import torch

from tests.benchmark_scripts import load_benchmark

stem = load_benchmark("stem_conv")


@pytest.mark.parametrize("layout, channels", [("nchw", 3), ("nhwc", 4), ("nhwc", 8)])
def test_every_candidate_is_the_stem_conv_with_its_weight_gradient(layout, channels):
    torch.manual_seed(0)
    image = torch.randn(2, 3, 16, 16).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(6, 3, 3, 3, requires_grad=True)
    reference = torch.nn.functional.conv2d(image, weight, stride=2, padding=1)
    (ref_grad,) = torch.autograd.grad(reference.sum(), weight)
    out = stem.stem_conv(layout, channels, image, weight)
    (grad,) = torch.autograd.grad(out.sum(), weight)
    assert out.shape == reference.shape
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-5)
