"""The Haar step through pytorch_wavelets, the reference's conv formulation and the pixel-shuffle one agree, odd sizes
included."""
import pytest
import torch
import torch.nn.functional as F

from mobilemamba.models.wavelet import HaarTransform, haar_filters


def reference_dwt(x, filters):
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2))
    return F.conv2d(x, filters, stride=2, groups=x.shape[1])


def test_filters_are_the_published_haar_bank():
    f = haar_filters(1)[:, 0]
    expected = 0.5 * torch.tensor([[[1, 1], [1, 1]], [[1, 1], [-1, -1]], [[1, -1], [1, -1]], [[1, -1], [-1, 1]]])
    assert torch.allclose(f, expected.float(), atol=1e-7)  # float32 products of 1/√2
    assert haar_filters(3).shape == (12, 1, 2, 2)


@pytest.mark.parametrize("size", [(8, 8), (7, 7), (6, 9), (3, 3), (1, 2)])
def test_pytorch_wavelets_and_conv_formulations_agree(size):
    x = torch.randn(2, 5, *size)
    filters = haar_filters(5)
    pw, conv = HaarTransform("pytorch_wavelets"), HaarTransform("conv")
    bands = pw.dwt(x, filters)
    assert torch.allclose(bands, reference_dwt(x, filters), atol=1e-6)
    assert torch.allclose(bands, conv.dwt(x, filters), atol=1e-6)
    coeffs = torch.randn_like(bands)
    expected = F.conv_transpose2d(coeffs, filters, stride=2, groups=5)[..., : size[0], : size[1]]
    assert torch.allclose(pw.idwt(coeffs, filters, size), expected, atol=1e-6)
    assert torch.allclose(conv.idwt(coeffs, filters, size), expected, atol=1e-6)


def test_inverse_reconstructs_even_inputs_and_gradients_flow():
    x = torch.randn(1, 3, 6, 4, requires_grad=True)
    t, f = HaarTransform(), haar_filters(3)
    y = t.idwt(t.dwt(x, f), f, (6, 4))
    assert torch.allclose(y, x, atol=1e-6)
    y.sum().backward()
    assert torch.allclose(x.grad, torch.ones_like(x), atol=1e-6)


def test_unknown_impl_is_an_error():
    with pytest.raises(ValueError, match="wavelet impl"):
        HaarTransform("fft")


@pytest.mark.parametrize("size", [(8, 8), (7, 7), (6, 9), (1, 2)])
def test_the_pixel_shuffle_formulation_equals_the_conv_one_forward_and_backward(size):
    """With filters that differ per channel (a checkpoint's buffers are honoured, not assumed to be Haar)."""
    filters = haar_filters(3) * torch.linspace(0.5, 1.5, 12).view(12, 1, 1, 1)
    x = torch.randn(2, 3, *size, requires_grad=True)
    coeffs = torch.randn(2, 12, (size[0] + 1) // 2, (size[1] + 1) // 2, requires_grad=True)
    outs = {}
    for impl in ("conv", "shuffle"):
        t = HaarTransform(impl)
        bands, image = t.dwt(x, filters), t.idwt(coeffs, filters, size)
        grads = torch.autograd.grad((bands * bands.detach()).sum() + (image ** 3).sum(), (x, coeffs))
        outs[impl] = (bands, image, *grads)
    for conv, shuffle in zip(outs["conv"], outs["shuffle"]):
        assert shuffle.shape == conv.shape and torch.allclose(shuffle, conv, atol=1e-5)


def test_a_model_runs_the_conv_haar_step_by_default():
    """conv is the eager default: the fastest eager form, and pytorch_wavelets' filter banks gave non-finite outputs
    now and then in CPU bf16 training at 1x1 feature maps (the smoke model's last stage)."""
    import mobilemamba

    model = mobilemamba.create_model("mobilemamba_t2", embed_dim=(16, 32, 48), depth=(1, 1, 1))
    assert {m.impl for m in model.modules() if isinstance(m, HaarTransform)} == {"conv"}
