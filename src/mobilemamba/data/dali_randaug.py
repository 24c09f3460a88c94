"""timm's RandAugment (``rand-mM-nN-mstdS-inc1``) rebuilt from DALI's ``auto_aug`` building blocks.

DALI's stock ``rand_augment(n=2, m=9)`` is a different policy from timm's ``rand-m9-mstd0.5-inc1``: it uses
31 magnitude bins (m=9 is 30% strength, timm's m9 is 90%), always applies both ops, never varies the
magnitude, has ``identity`` in its suite and lacks ``invert`` and ``solarize_add``. So this module builds the
timm policy from the same DALI ops:

- the 15 ops of timm's ``_RAND_INCREASING_TRANSFORMS`` with timm's level→argument maps (rotate 30°, shear 0.3,
  translate 0.45 of the size, enhance factors 1 ± 0.9·level, posterize 4→0 bits, solarize threshold
  256→0, solarize-add 0→110), each with a random sign where timm has one;
- ``n`` layers; each picks an op uniformly (with replacement) and applies it with probability ``p`` (0.5);
- each application draws its magnitude from N(m, mstd) clipped to [0, 10] (``mstd0.5``).

Remaining differences from timm (documented in docs/data.md):

- the magnitude is quantized to 0.25 (41 bins of level 0..10); timm uses the float draw;
- the fill of rotate/shear/translate is 128 grey (timm: the ImageNet mean colour (124, 116, 104));
- those warps interpolate bilinearly (timm: bilinear or bicubic at random);
- posterize keeps at least 1 bit (timm keeps 0 bits, a black image, only at level 10);
- DALI's equalize follows OpenCV's formula and its sharpness leaves a 1-pixel border (PIL differs slightly).
"""
from __future__ import annotations

import numpy as np
from nvidia.dali import fn, types
from nvidia.dali import math as dmath
from nvidia.dali.auto_aug import augmentations as a
from nvidia.dali.auto_aug.core import _Augmentation, augmentation, select, signed_bin
from nvidia.dali.pipeline import do_not_convert

from .randaug_spec import RandAugmentSpec, parse_rand_augment  # noqa: F401 (re-exported)

NUM_BINS = 41  # magnitude level 0..10 in steps of 0.25 (finer steps slow the pipeline definition)
BINS_PER_LEVEL = (NUM_BINS - 1) / 10
LEVELS = np.linspace(0.0, 10.0, NUM_BINS)


@augmentation(name="equalize")
def _equalize(data, _):
    """DALI's ``equalize`` through ``fn.equalize`` (its own suite still calls the deprecated experimental alias)."""
    return fn.equalize(data)


@augmentation(mag_range=(0, 0.9), randomly_negate=True, mag_to_param=a.sharpness_kernel, param_device="auto",
              name="sharpness")  # fmt: skip
def _sharpness(data, kernel):
    """DALI's ``sharpness`` through ``fn.filter`` (same reason)."""
    return fn.filter(data, kernel)


def timm_increasing_suite(max_translate_rel: float = 0.45) -> list:
    """The 15 ops of timm's ``_RAND_INCREASING_TRANSFORMS``, magnitudes indexed by :data:`LEVELS` bins."""
    frac = LEVELS / 10.0
    posterize_bits = 4 - np.floor(frac * 4)  # keep 4 → 0 most significant bits (DALI clamps 0 to 1)
    solarize_thresh = 256 - np.minimum(256, np.floor(frac * 256))
    solarize_add = np.minimum(128, np.floor(frac * 110))
    enhance = 0.9 * frac  # DALI maps ±x to factor 1 ± x, as timm's *Increasing enhance ops
    ops = [
        (a.auto_contrast, None, None),
        (_equalize, None, None),
        (a.invert, None, None),
        (a.rotate, 30.0 * frac, True),
        (a.posterize, posterize_bits, None),
        (a.solarize, solarize_thresh, None),
        (a.solarize_add, solarize_add, None),
        (a.color, enhance, True),
        (a.contrast, enhance, True),
        (a.brightness, enhance, True),
        (_sharpness, enhance, True),
        (a.shear_x, 0.3 * frac, True),
        (a.shear_y, 0.3 * frac, True),
        (a.translate_x, max_translate_rel * frac, True),
        (a.translate_y, max_translate_rel * frac, True),
    ]
    return [_adjust(op, mag_range, negate) for op, mag_range, negate in ops]


def _adjust(op, mag_range, negate):
    """Set timm's magnitudes and keep AutoGraph out of the op (see :class:`_UnconvertedAugmentation`)."""
    kw = dict(augmentation_cls=_UnconvertedAugmentation)
    if mag_range is not None:
        kw["mag_range"] = mag_range
    if negate is not None:
        kw["randomly_negate"] = negate
    return op.augmentation(**kw)


class _UnconvertedAugmentation(_Augmentation):
    """DALI's ``Augmentation`` with AutoGraph conversion off for the call.

    The ops have no data-dependent ``if``; converting them only costs time: their magnitude→parameter tables
    (bins × 2 signs per op) made a pipeline definition take 10-15 s on a 2-core machine (~1.5 s without it).
    """

    # ``select`` calls the op object from converted code; AutoGraph then checks the *object* for this marker and,
    # without it, converts ``type(op).__call__`` regardless of ``@do_not_convert`` on that method. With it, the
    # whole augmentation (param tables included) runs as plain Python.
    autograph_info__ = None

    @do_not_convert
    def __call__(self, data, **kwargs):
        return _Augmentation.__call__(self, data, **kwargs)


def _magnitude_bin(spec: RandAugmentSpec):
    """Per-sample bin of N(m, mstd) clipped to [0, min(mmax, 10)], as timm draws per op application."""
    k = BINS_PER_LEVEL
    upper = min(spec.magnitude_max, 10.0) * k
    if spec.magnitude_std > 0:
        level = fn.random.normal(mean=spec.magnitude * k, stddev=spec.magnitude_std * k)
        level = dmath.clamp(dmath.floor(level + 0.5), 0.0, upper)
    else:
        level = types.Constant(float(min(max(round(spec.magnitude * k), 0), upper)))
    return fn.cast(level, dtype=types.INT32)


def timm_rand_augment(images, spec: RandAugmentSpec, shape, fill_value: int = 128):
    """Apply the policy to a batch of HWC uint8 images (needs ``enable_conditionals=True`` in the pipeline)."""
    suite = timm_increasing_suite()
    for _ in range(spec.num_layers):
        op = fn.random.uniform(values=list(range(len(suite))), dtype=types.INT32)
        mag = signed_bin(_magnitude_bin(spec))
        if fn.random.coin_flip(probability=spec.prob):
            images = select(
                suite, op, images, magnitude_bin=mag, num_magnitude_bins=NUM_BINS, shape=shape, fill_value=fill_value
            )
    return images
