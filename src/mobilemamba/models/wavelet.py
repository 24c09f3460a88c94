"""The single-level Haar wavelet transform of the WTE-Mamba branch.

Subband order, for input channel c, is channel 4c + k with k = [LL, LH, HL, HH]: the filters
0.5·[[1,1],[1,1]], 0.5·[[1,1],[-1,-1]], 0.5·[[1,-1],[1,-1]], 0.5·[[1,-1],[-1,1]] of the published model.
Three equal formulations:
- `pytorch_wavelets` (DWTForward/DWTInverse low-level filter banks, J=1, haar): the package's own transform, kept
  as the reference the other two are tested against;
- `conv`: the reference's stride-2 grouped conv with those filters and its transpose, the default (`EAGER_WAVELET`:
  fewer kernels, the fused inference model and export use it too);
- `shuffle`: pixel_unshuffle, then each channel's four pixels of a 2×2 block mixed into its four subbands by the
  same filters (and the transpose mix, then pixel_shuffle, for the inverse): reshapes and elementwise arithmetic
  only, which torch.compile can fuse with the neighbouring scale and add instead of calling two grouped cuDNN
  convolutions. Slower eager (a broadcast product); what `compile_model` switches a model to (faster compiled,
  models/compiling.py says by how much).
Odd sizes are zero-padded bottom/right by one before the transform and cropped after the inverse.
"""
import contextlib
import warnings
from typing import Tuple

import pywt
import torch
import torch.nn as nn
import torch.nn.functional as F

with warnings.catch_warnings():  # pytorch_wavelets imports the deprecated pkg_resources at import time
    warnings.simplefilter("ignore", UserWarning)
    from pytorch_wavelets.dwt import lowlevel

WAVELET_IMPLS = ("pytorch_wavelets", "conv", "shuffle")
# The Haar step of an eager model, the default of every model and what `fuse()` and bench's eager 'auto' pick: fused S6
# inference on an H200 (bf16, batch 256) runs 19.4k img/s with it against 9.4k with pytorch_wavelets
# (docs/results.md#same-harness); and pytorch_wavelets' filter banks gave non-finite outputs now and then in CPU bf16
# training at 1x1 feature maps (torch 2.14.1), where conv gave none. shuffle is the compiled form.
EAGER_WAVELET = "conv"


def haar_filters(channels: int) -> torch.Tensor:
    """The (4·channels, 1, 2, 2) analysis filters, tiled per input channel (also the synthesis filters)."""
    w = pywt.Wavelet("db1")
    lo = torch.tensor(w.dec_lo[::-1], dtype=torch.float32)
    hi = torch.tensor(w.dec_hi[::-1], dtype=torch.float32)
    bank = torch.stack([lo[None, :] * lo[:, None], lo[None, :] * hi[:, None],
                        hi[None, :] * lo[:, None], hi[None, :] * hi[:, None]])
    return bank[:, None].repeat(channels, 1, 1, 1)


def _autocast_off(device_type: str):
    """Disable autocast where it exists (cuda, cpu); other devices (meta, used to count FLOPs) have none."""
    return torch.autocast(device_type, enabled=False) if device_type in ("cuda", "cpu") else contextlib.nullcontext()


def pad_to_even(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[-2:]
    if h % 2 or w % 2:
        x = F.pad(x, (0, w % 2, 0, h % 2))
    return x


def _block_mix(filters: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """(1, C, 4 subbands, 4 block pixels, 1, 1): filters[4c + k, 0, a, b] at [0, c, k, 2a + b]."""
    return filters.to(dtype).reshape(1, channels, 4, 4, 1, 1)


# The transforms are free functions marked as FX leaves (torch.fx.wrap): the padding of odd sizes branches on the
# input's shape, which symbolic tracing cannot follow. The conv and shuffle forms also compile in TorchScript;
# pytorch_wavelets (autograd Functions around pywt's filters) does not: TorchScript drops the methods calling it
# (torch.jit.unused).

@torch.fx.wrap
def haar_dwt(x: torch.Tensor, filters: torch.Tensor, impl: str) -> torch.Tensor:
    """The 'conv' or 'shuffle' forward transform: (B, C, H, W) → (B, 4C, ⌈H/2⌉, ⌈W/2⌉)."""
    x = pad_to_even(x)
    b, c, h, w = x.shape
    if impl == "conv":
        return F.conv2d(x, filters.to(x.dtype), stride=2, groups=c)
    # block pixel p = 2a + b of channel c is channel 4c + p after the unshuffle
    pixels = F.pixel_unshuffle(x, 2).reshape(b, c, 1, 4, h // 2, w // 2)
    return (_block_mix(filters, c, x.dtype) * pixels).sum(3).reshape(b, 4 * c, h // 2, w // 2)


@torch.fx.wrap
def haar_idwt(coeffs: torch.Tensor, filters: torch.Tensor, impl: str, size: Tuple[int, int]) -> torch.Tensor:
    """The 'conv' or 'shuffle' inverse transform: (B, 4C, h, w) → (B, C, H, W), (H, W) = `size`."""
    b, c4, h, w = coeffs.shape
    c = c4 // 4
    if impl == "conv":
        x = F.conv_transpose2d(coeffs, filters.to(coeffs.dtype), stride=2, groups=c)
    else:
        bands = coeffs.reshape(b, c, 4, 1, h, w)
        pixels = (_block_mix(filters, c, coeffs.dtype) * bands).sum(2)
        x = F.pixel_shuffle(pixels.reshape(b, 4 * c, h, w), 2)
    return x[..., : size[0], : size[1]]


@torch.fx.wrap
def pytorch_wavelets_dwt(x: torch.Tensor, h0_row: torch.Tensor, h1_row: torch.Tensor, h0_col: torch.Tensor,
                         h1_col: torch.Tensor) -> torch.Tensor:
    """The forward transform through pytorch_wavelets' filter bank (the reference's layout, see the top)."""
    x = pad_to_even(x)
    b, c, h, w = x.shape
    # pytorch_wavelets' backward runs outside autocast: compute in the input's dtype, autocast off
    f = [t.to(x.dtype) for t in (h0_row, h1_row, h0_col, h1_col)]
    with _autocast_off(x.device.type):
        low, highs = lowlevel.AFB2D.apply(x, *f, 0)
    return torch.cat([low.unsqueeze(2), highs], dim=2).reshape(b, 4 * c, h // 2, w // 2)


@torch.fx.wrap
def pytorch_wavelets_idwt(coeffs: torch.Tensor, g0_row: torch.Tensor, g1_row: torch.Tensor, g0_col: torch.Tensor,
                          g1_col: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
    """The inverse transform through pytorch_wavelets' filter bank."""
    b, c4, h, w = coeffs.shape
    bands = coeffs.reshape(b, c4 // 4, 4, h, w)
    g = [t.to(coeffs.dtype) for t in (g0_row, g1_row, g0_col, g1_col)]
    with _autocast_off(coeffs.device.type):
        x = lowlevel.SFB2D.apply(bands[:, :, 0].contiguous(), bands[:, :, 1:].contiguous(), *g, 0)
    return x[..., : size[0], : size[1]]


class HaarTransform(nn.Module):
    """Forward (`dwt`) and inverse (`idwt`) Haar transform with the subband layout above.

    Holds no state-dict entries: the filter banks are non-persistent buffers, so the published keys
    (`wt_filter`, `iwt_filter` on the owning module) stay the only wavelet tensors in a checkpoint.
    """

    def __init__(self, impl: str = EAGER_WAVELET):
        super().__init__()
        self.set_impl(impl)
        w = pywt.Wavelet("haar")
        for name, t in zip(("h0_col", "h1_col", "h0_row", "h1_row"),
                           lowlevel.prep_filt_afb2d(w.dec_lo, w.dec_hi, w.dec_lo, w.dec_hi)):
            self.register_buffer(name, t, persistent=False)
        for name, t in zip(("g0_col", "g1_col", "g0_row", "g1_row"),
                           lowlevel.prep_filt_sfb2d(w.rec_lo, w.rec_hi, w.rec_lo, w.rec_hi)):
            self.register_buffer(name, t, persistent=False)

    def set_impl(self, impl: str) -> None:
        if impl not in WAVELET_IMPLS:
            raise ValueError(f"wavelet impl must be one of {WAVELET_IMPLS}, got {impl!r}")
        self.impl = impl

    def dwt(self, x: torch.Tensor, filters: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) → (B, 4C, ⌈H/2⌉, ⌈W/2⌉)."""
        if self.impl == "pytorch_wavelets":
            return self._pytorch_wavelets_dwt(x)
        return haar_dwt(x, filters, self.impl)

    def idwt(self, coeffs: torch.Tensor, filters: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        """(B, 4C, h, w) → (B, C, H, W) with (H, W) = `size` (the pre-padding size)."""
        if self.impl == "pytorch_wavelets":
            return self._pytorch_wavelets_idwt(coeffs, size)
        return haar_idwt(coeffs, filters, self.impl, size)

    @torch.jit.unused
    def _pytorch_wavelets_dwt(self, x: torch.Tensor) -> torch.Tensor:
        return pytorch_wavelets_dwt(x, self.h0_row, self.h1_row, self.h0_col, self.h1_col)

    @torch.jit.unused
    def _pytorch_wavelets_idwt(self, coeffs: torch.Tensor, size: Tuple[int, int]) -> torch.Tensor:
        return pytorch_wavelets_idwt(coeffs, self.g0_row, self.g1_row, self.g0_col, self.g1_col, size)
