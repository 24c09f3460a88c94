"""Shared helpers of the model, scan and export tests."""
import torch

from mobilemamba.models.layers import randomize_batchnorm as randomize_bn  # noqa: F401 (re-exported)

TINY = dict(embed_dim=(16, 32, 48), depth=(1, 1, 1))


def scan_inputs(batch=2, groups=2, channels=6, length=97, seed=0, dtype=torch.float64):
    """Random selective-scan inputs (u, delta, A, B, C, D, delta_bias) with d_state 1 and `groups` directions."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=dtype)  # noqa: E731
    return dict(u=r(batch, groups * channels, length), delta=r(batch, groups * channels, length),
                A=-torch.rand(groups * channels, 1, generator=g, dtype=dtype) * 2,
                B=r(batch, groups, 1, length), C=r(batch, groups, 1, length), D=r(groups * channels),
                delta_bias=torch.rand(groups * channels, generator=g, dtype=dtype))


def rel(a, b):
    """Relative error of `a` against `b`; an exact-zero reference (e.g. dA at L = 1) is compared absolutely, against a
    scale of 0.1: float32 rounding of O(1) terms (~1e-7; a compiled kernel contracts h - x into FMAs) stays under the
    tests' 1e-5."""
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item() if b.norm() > 0 else (a - b).abs().max().item() / 0.1
