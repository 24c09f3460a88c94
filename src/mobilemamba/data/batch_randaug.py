"""timm's RandAugment (``rand-m9-mstd0.5-inc1``) on a whole uint8 image batch on its device, in torch.

Why: the DALI loader decodes, crops, resizes and flips a batch on the GPU, but DALI's own per-sample
RandAugment (conditional execution per image, ``dali_randaug.py``) costs ~24 ms per 256-image batch
(docs/results.md#dali-randaug). Here a layer's random choices are drawn on the host (seeded
``numpy.random.Generator``) for the whole batch, then run on the device with one of two kernel sets (``kernels``),
which make the same choices:

- ``triton`` (``randaug_kernels.py``; auto on CUDA): two kernel launches per layer over the whole batch, each
  image's op code and arguments in one row; one host→device copy per call.
- ``torch`` (auto on CPU): the images a layer changes are gathered once, sorted by op, and each op runs once,
  vectorized with per-image arguments, on its contiguous slice; results are scattered back into a new tensor.
  Two host→device copies per call (the sort order as int64, the per-image arguments as one float32 block), but
  ~480 small tensor ops, so on a GPU it is bound by the host's dispatch time (~6 ms per 256-image batch on an
  H200 host against ~2 ms for the Triton kernels: docs/results.md#randaug-kernels).

No Python loop over images and no device→host sync in either.

Semantics (timm 1.0 ``RandAugment`` / ``AugmentOp`` with the ``_RAND_INCREASING_TRANSFORMS`` op set):
each of ``num_layers`` layers picks, per image, one of the 15 ops uniformly (with replacement across layers)
and applies it with probability ``prob``; the magnitude is drawn per application from N(m, mstd) (uniform
on [0, m] when mstd is inf, fixed when 0) and clipped to [0, magnitude_max or 10]; timm's level→argument maps
and random signs are computed with the same float64 expressions as timm. The pixel math follows PIL 12 op
by op, and the batch is re-quantized to uint8 after every op, as timm's PIL images are:

- Invert, PosterizeIncreasing, SolarizeIncreasing, SolarizeAdd, BrightnessIncreasing: 256-entry lookup tables
  built on the host from the level alone; AutoContrast, Equalize (ImageOps, from per-(image, channel)
  histograms via ``scatter_add_``) and ContrastIncreasing (blend with the rounded mean of the grayscale image)
  build theirs on the device. The whole family then shares one gather. Bit-exact with PIL.
- ColorIncreasing and SharpnessIncreasing: PIL's ``Image.blend`` (float32 ``a + alpha·(b − a)``, clipped,
  truncated) with the grayscale image (L = (19595R + 38470G + 7471B + 0x8000) >> 16) or the SMOOTH-filtered
  image (3×3 [[1,1,1],[1,5,1],[1,1,1]]/13 summed in float32 in PIL's order from a +0.5 offset, border pixels
  unchanged). Bit-exact with PIL on x86-64 (whose PIL build does not fuse multiply-adds).
- Rotate, ShearX/Y, TranslateX/YRel: PIL's affine convention (output pixel centre → input point, rotation
  about the image centre, counter-clockwise for positive angles, shears about the top-left corner) with
  ``F.affine_grid`` + ``F.grid_sample(padding_mode="border", align_corners=False)`` in float32. As in PIL, an
  output pixel whose source point lies outside the image takes the fill colour ``img_mean`` (a hard mask
  from the same grid), taps beyond the edge repeat the edge pixel, and values are truncated, not rounded.

Remaining differences from timm + PIL (measured in ``tests/data/test_data_batch_randaug.py``):

- bicubic warps: torch's bicubic is Keys' cubic with a = −0.75, PIL's transform uses a = −1 (a little
  sharper). On smooth 32×40 test images the mean difference is 0.2–0.55 levels (max 4); on sharp edges
  single pixels differ by tens of levels. Matching it would take a hand-written 16-tap gather.
- bilinear warps: the same kernel as PIL, but float32 coordinates (PIL: double), so a value within ~1e-3 of
  an integer may truncate one level differently (≤0.1% of the values at generic levels). Values are
  truncated after adding 1e-3, so that PIL's exact integers (flat regions) survive float32 weight round-off.
  Two consequences: level 0 (an identity in PIL) is not bit-exact at every pixel, and at "round" levels
  whose sample positions fall on exact fractions (e.g. a shift of 17.01 px) PIL's own double rounding
  decides, and up to ~10% of an image's values may differ by one level. The policy draws generic levels.
- rotation: PIL reduces the angle mod 360 and rounds cos/sin to 15 decimals; here they are used as computed.
- randomness: the same distributions as timm's ``random`` / ``np.random`` draws, not the same streams.
- the Triton kernels compute the warps' sample grid per pixel (torch: ``affine_grid``'s batched matmul), so
  the two kernel sets may truncate a warped value differently (a 256 x 224² batch on an H200: max 2 levels,
  0.0016% of the values); the other ops give the same bytes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F

from . import randaug_kernels
from .base import host_to_device
from .randaug_spec import RandAugmentSpec

OPS: tuple[str, ...] = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd",
    "ColorIncreasing", "ContrastIncreasing", "BrightnessIncreasing", "SharpnessIncreasing", "ShearX", "ShearY",
    "TranslateXRel", "TranslateYRel",
)  # fmt: skip
"""timm's ``_RAND_INCREASING_TRANSFORMS``, in its order."""

INTERPOLATIONS = ("random", "bilinear", "bicubic")
KERNELS = ("auto", "triton", "torch")
"""How a call runs: Triton kernels (``randaug_kernels.py``; on CPU tensors in Triton's slow interpreter), torch
ops, or auto: Triton for CUDA tensors, torch otherwise."""
_WARPS = frozenset({"Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel"})
_HOST_LUT_OPS = frozenset(
    {"Invert", "PosterizeIncreasing", "SolarizeIncreasing", "SolarizeAdd", "BrightnessIncreasing"}
)
_KERNEL_OF = {name: "HostLut" for name in _HOST_LUT_OPS} | {name: "Warp" for name in _WARPS} | {
    "AutoContrast": "AutoContrast", "Equalize": "Equalize", "ContrastIncreasing": "Contrast",
    "ColorIncreasing": "Color", "SharpnessIncreasing": "Sharpness",
}  # fmt: skip
# A layer's images are sorted by kernel in this order: the lookup-table family first (one gather for all
# of it), then the blends, then the warps (bilinear before bicubic).
_KERNEL_ORDER = ("HostLut", "AutoContrast", "Equalize", "Contrast", "Color", "Sharpness", "Warp")
_LUT_KERNELS = frozenset(_KERNEL_ORDER[:4])
_LEVEL_DENOM = 10.0  # timm's magnitude scale: level 10 is the full-strength argument
_NUM_ARGS = 6  # per-image float arguments: the 2×3 warp matrix, or the blend factor in column 0
_ROW_WIDTH = _NUM_ARGS + 256  # then the image's 256-entry lookup table (host-LUT ops only)
_TRUNC_EPS = 1e-3  # see the module docstring: keeps PIL's exact integers exact despite float32 round-off
_SMOOTH_SIDE = float(np.float32(1) / np.float32(13))  # PIL divides its integer kernel in float32
_SMOOTH_CENTRE = float(np.float32(5) / np.float32(13))


# --------------------------------------------------------------------------------------------------------
# Host side: the random plan of a layer and the per-image arguments (timm's level→argument maps)


@dataclass(frozen=True)
class _Group:
    """A contiguous slice ``[start, stop)`` of a layer's sorted images that one kernel call handles."""

    kernel: str  # one of _KERNEL_ORDER
    bicubic: bool
    start: int
    stop: int


@dataclass(frozen=True)
class _LayerPlan:
    order: np.ndarray  # int64 (n,): indices of the images this layer changes, sorted by group
    rows: np.ndarray  # float32 (n, _ROW_WIDTH): their arguments and host-built lookup tables, same order
    groups: tuple[_Group, ...]
    lut_stop: int  # images [0, lut_stop) are the lookup-table family


def _enhance_factor(level: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """timm's ``_enhance_increasing_level_to_arg``: 1 ± 0.9·level/10, at least 0.1."""
    return np.maximum(0.1, 1.0 + sign * ((level / _LEVEL_DENOM) * 0.9))


def _pil_affine(name: str, level: np.ndarray, sign: np.ndarray, width: int, height: int,
                translate_pct: float) -> np.ndarray:  # fmt: skip
    """PIL's affine data (a, b, c, d, e, f) per image: input point = (a·x + b·y + c, d·x + e·y + f)."""
    n = len(level)
    one, zero = np.ones(n), np.zeros(n)
    if name == "Rotate":
        degrees = (level / _LEVEL_DENOM) * 30.0 * sign
        angle = -np.radians(degrees)  # PIL.Image.rotate: counter-clockwise on screen
        cos, sin = np.cos(angle), np.sin(angle)
        cx, cy = width / 2.0, height / 2.0
        return np.stack([cos, sin, cos * -cx + sin * -cy + cx, -sin, cos, -sin * -cx + cos * -cy + cy], 1)
    if name in ("ShearX", "ShearY"):
        factor = (level / _LEVEL_DENOM) * 0.3 * sign
        return np.stack([one, factor, zero, zero, one, zero] if name == "ShearX" else
                        [one, zero, zero, factor, one, zero], 1)  # fmt: skip
    pct = (level / _LEVEL_DENOM) * translate_pct * sign
    if name == "TranslateXRel":
        return np.stack([one, zero, pct * width, zero, one, zero], 1)
    return np.stack([one, zero, zero, zero, one, pct * height], 1)


def _normalized_theta(m: np.ndarray, width: int, height: int) -> np.ndarray:
    """PIL's pixel-space affine data as ``affine_grid``'s theta in [-1, 1] coordinates (align_corners=False)."""
    a, b, c, d, e, f = m.T
    rx, ry = height / width, width / height
    return np.stack([a, b * rx, a + b * rx + 2 * c / width - 1, d * ry, e, d * ry + e + 2 * f / height - 1], 1)


def _host_lut(name: str, level: np.ndarray, sign: np.ndarray) -> np.ndarray:
    """(n, 256) lookup tables of the ops whose table depends on the level only, built as PIL/timm build them."""
    i = np.arange(256)
    frac = (level / _LEVEL_DENOM)[:, None]
    if name == "Invert":
        return np.broadcast_to(255 - i, (len(level), 256))
    if name == "PosterizeIncreasing":  # keep 4 - int(4·level/10) bits; 0 bits: black
        shift = 8 - (4 - np.trunc(frac * 4).astype(np.int64))
        return (i >> shift) << shift
    if name == "SolarizeIncreasing":  # invert the values >= threshold
        threshold = 256 - np.minimum(256, np.trunc(frac * 256))
        return np.where(i < threshold, i, 255 - i)
    if name == "SolarizeAdd":  # add int(110·level/10) to the values < 128, clip at 255
        add = np.minimum(128, np.trunc(frac * 110))
        return np.where(i < 128, np.minimum(255, i + add), i)
    # BrightnessIncreasing: PIL's blend with black, 0 + alpha·x in float32, clipped and truncated
    alpha = _enhance_factor(level, sign).astype(np.float32)[:, None]
    return np.floor(np.clip(alpha * i.astype(np.float32), 0, 255))


def _op_rows(name: str, level: np.ndarray, sign: np.ndarray, width: int, height: int,
             translate_pct: float) -> np.ndarray:  # fmt: skip
    """Per-image rows (``_ROW_WIDTH`` columns) of op ``name``: timm's ``LEVEL_TO_ARG`` in float64."""
    rows = np.zeros((len(level), _ROW_WIDTH))
    if name in _WARPS:
        rows[:, :_NUM_ARGS] = _normalized_theta(_pil_affine(name, level, sign, width, height, translate_pct),
                                                width, height)  # fmt: skip
    elif name in _HOST_LUT_OPS:
        rows[:, _NUM_ARGS:] = _host_lut(name, level, sign)
    elif name in ("ColorIncreasing", "ContrastIncreasing", "SharpnessIncreasing"):
        rows[:, 0] = _enhance_factor(level, sign)  # PIL's blend factor (float32 in PIL's C, as here)
    return rows


@lru_cache(maxsize=32)
def _op_tables(ops: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Per op index: its kernel's rank in ``_KERNEL_ORDER``, and whether it is a warp."""
    rank = np.array([_KERNEL_ORDER.index(_KERNEL_OF[name]) for name in ops], np.int64)
    return rank, np.array([name in _WARPS for name in ops], bool)


def _plan_layer(op_index: np.ndarray, applied: np.ndarray, level: np.ndarray, sign: np.ndarray,
                bicubic: np.ndarray, ops: tuple[str, ...], width: int, height: int,
                translate_pct: float) -> _LayerPlan:  # fmt: skip
    """Sort the applied images by kernel group and compute their rows; all host-side numpy."""
    rank, is_warp = _op_tables(ops)
    images = np.flatnonzero(applied)
    op_of = op_index[images]
    key = 2 * rank[op_of] + (is_warp[op_of] & bicubic[images])
    sort = np.argsort(key, kind="stable")
    images, op_of, key = images[sort], op_of[sort], key[sort]
    rows = np.zeros((len(images), _ROW_WIDTH), np.float32)
    for i in np.unique(op_of):
        sel = np.flatnonzero(op_of == i)
        rows[sel] = _op_rows(ops[i], level[images[sel]], sign[images[sel]], width, height, translate_pct)
    starts = np.flatnonzero(np.diff(key, prepend=-1))
    stops = np.append(starts[1:], len(key))
    groups = tuple(_Group(_KERNEL_ORDER[key[s] // 2], bool(key[s] % 2), int(s), int(e)) for s, e in zip(starts, stops))
    lut_stop = sum(g.stop - g.start for g in groups if g.kernel in _LUT_KERNELS)
    return _LayerPlan(images.astype(np.int64), rows, groups, lut_stop)


# --------------------------------------------------------------------------------------------------------
# Device side: the kernels, each on a uint8 (n, 3, H, W) slice with per-image float args (n, _NUM_ARGS)


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """PIL's float → UINT8 store: clip to [0, 255], then truncate."""
    return x.clamp_(0.0, 255.0).floor_().to(torch.uint8)


def _levels(x: torch.Tensor) -> torch.Tensor:
    """0..255 as int64 (1, 1, 256), the domain of every lookup table."""
    return torch.arange(256, device=x.device).view(1, 1, 256)


def _apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """``x[i, c] ← lut[i, c][x[i, c]]`` with ``lut`` uint8 (n, 3, 256)."""
    n, c, h, w = x.shape
    return torch.gather(lut, 2, x.reshape(n, c, h * w).long()).view(n, c, h, w)


def _histogram(x: torch.Tensor) -> torch.Tensor:
    """Per-(image, channel) 256-bin histograms, int64 (n, 3, 256); ``scatter_add_`` needs no host sync."""
    n, c = x.shape[:2]
    values = x.reshape(n * c, -1).long()
    ones = torch.ones((1, 1), dtype=torch.int64, device=x.device).expand_as(values)
    hist = torch.zeros((n * c, 256), dtype=torch.int64, device=x.device)
    return hist.scatter_add_(1, values, ones).view(n, c, 256)


def _first_last_bins(hist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Lowest and highest non-empty bin of each histogram, int64 (n, 3, 1)."""
    present = (hist > 0).to(torch.uint8)
    return present.argmax(-1, keepdim=True), 255 - present.flip(-1).argmax(-1, keepdim=True)


def _gray(x: torch.Tensor) -> torch.Tensor:
    """PIL's RGB → L conversion, int32 (n, 1, H, W)."""
    r, g, b = x.int().unbind(1)
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).unsqueeze(1)


def _blend(degenerate: torch.Tensor, image: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """PIL's ``Image.blend(degenerate, image, alpha)``: float32 ``a + alpha·(b − a)``, clipped, truncated."""
    alpha = alpha.view(-1, *([1] * (image.dim() - 1)))
    degenerate = degenerate.float()
    return _to_uint8(degenerate + alpha * (image.float() - degenerate))


def _auto_contrast_lut(x: torch.Tensor, args: torch.Tensor) -> torch.Tensor:
    """ImageOps.autocontrast (cutoff 0): stretch [lo, hi] of each channel to [0, 255], in float64 as PIL."""
    lo, hi = _first_last_bins(_histogram(x))
    spread = hi - lo
    spread_f = spread.clamp(min=1).double()
    scale = torch.full_like(spread_f, 255.0) / spread_f  # not 255.0 / t: torch computes that as 255 · (1/t)
    lut = (_levels(x).double() * scale + -lo.double() * scale).trunc().clamp(0, 255).long()
    return torch.where(spread > 0, lut, _levels(x))


def _equalize_lut(x: torch.Tensor, args: torch.Tensor) -> torch.Tensor:
    """ImageOps.equalize: ``lut[i] = (step // 2 + #pixels below i) // step``, identity when step == 0."""
    hist = _histogram(x)
    _, last = _first_last_bins(hist)
    step = (hist.sum(-1, keepdim=True) - hist.gather(-1, last)) // 255
    lut = (step // 2 + hist.cumsum(-1) - hist) // step.clamp(min=1)
    return torch.where(step > 0, lut, _levels(x)).clamp(max=255)  # PIL clips the table to 255


def _contrast_lut(x: torch.Tensor, args: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Contrast: blend with the rounded mean of the grayscale image, as a table per image."""
    n, _, h, w = x.shape
    mean = (_gray(x).sum((1, 2, 3), dtype=torch.int64).double() / (h * w) + 0.5).floor()
    return _blend(mean.view(n, 1, 1), _levels(x).float(), args[:, 0])


def _color(x: torch.Tensor, args: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Color: blend with the grayscale image."""
    return _blend(_gray(x), x, args[:, 0])


def _smooth(x: torch.Tensor) -> torch.Tensor:
    """PIL's ImageFilter.SMOOTH, summed in float32 in PIL's order (row below, centre row, row above), rounded;
    the one-pixel border is copied unchanged."""
    xf = x.float()

    def taps(rows: torch.Tensor, centre: float) -> torch.Tensor:
        return (rows[..., :-2] * _SMOOTH_SIDE + rows[..., 1:-1] * centre) + rows[..., 2:] * _SMOOTH_SIDE

    acc = taps(xf[:, :, 2:], _SMOOTH_SIDE) + 0.5  # PIL starts from the offset 0.5 (rounding), adds row y+1 first
    acc = acc + taps(xf[:, :, 1:-1], _SMOOTH_CENTRE)
    acc = acc + taps(xf[:, :, :-2], _SMOOTH_SIDE)
    out = x.clone()
    if x.shape[2] > 2 and x.shape[3] > 2:
        out[:, :, 1:-1, 1:-1] = _to_uint8(acc)
    return out


def _sharpness(x: torch.Tensor, args: torch.Tensor) -> torch.Tensor:
    """ImageEnhance.Sharpness: blend with the SMOOTH-filtered image."""
    return _blend(_smooth(x), x, args[:, 0])


def _warp(x: torch.Tensor, args: torch.Tensor, fill: torch.Tensor, bicubic: bool) -> torch.Tensor:
    """PIL's ``Image.transform(AFFINE)`` for a batch; ``args`` holds each image's normalized 2×3 theta."""
    n, c, h, w = x.shape
    grid = F.affine_grid(args.view(n, 2, 3), [n, c, h, w], align_corners=False)
    inside = ((grid >= -1.0) & (grid < 1.0)).all(-1, keepdim=True).permute(0, 3, 1, 2)  # PIL: 0 <= x_in < W
    mode = "bicubic" if bicubic else "bilinear"
    sampled = F.grid_sample(x.float(), grid, mode=mode, padding_mode="border", align_corners=False)
    return _to_uint8(torch.where(inside, sampled + _TRUNC_EPS, fill.view(1, c, 1, 1)))


_LutFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_DEVICE_LUTS: dict[str, _LutFn] = {"AutoContrast": _auto_contrast_lut, "Equalize": _equalize_lut,
                                   "Contrast": _contrast_lut}  # fmt: skip
_BLENDS: dict[str, _LutFn] = {"Color": _color, "Sharpness": _sharpness}


def _execute(images: torch.Tensor, plans: Sequence[_LayerPlan], fill: Sequence[float], kernels: str) -> torch.Tensor:
    """Run the layers on a new contiguous copy of ``images``, with the torch ops or the Triton kernels."""
    if not any(len(p.order) for p in plans):
        return images.clone(memory_format=torch.contiguous_format)
    if _use_triton(kernels, images):
        return _execute_triton(images, plans, fill)
    return _execute_torch(images, plans, fill)


def _use_triton(kernels: str, images: torch.Tensor) -> bool:
    if kernels == "triton" and not randaug_kernels.available():
        raise ValueError("kernels='triton' needs the triton package (torch's CUDA wheels bring it)")
    return kernels == "triton" or (kernels == "auto" and images.is_cuda and randaug_kernels.available())


_CODE_OF = {"HostLut": randaug_kernels.CODE_HOST_LUT, "AutoContrast": randaug_kernels.CODE_AUTOCONTRAST,
            "Equalize": randaug_kernels.CODE_EQUALIZE, "Contrast": randaug_kernels.CODE_CONTRAST,
            "Color": randaug_kernels.CODE_COLOR, "Sharpness": randaug_kernels.CODE_SHARPNESS,
            "Warp": randaug_kernels.CODE_BILINEAR}  # fmt: skip


def _dense_rows(plan: _LayerPlan, batch: int) -> np.ndarray:
    """A layer's plan as one row per image in batch order: op code (0: unchanged), arguments, host table."""
    dense = np.zeros((batch, randaug_kernels.ROW), np.float32)
    for g in plan.groups:
        code = randaug_kernels.CODE_BICUBIC if g.kernel == "Warp" and g.bicubic else _CODE_OF[g.kernel]
        dense[plan.order[g.start : g.stop], 0] = code
    dense[plan.order, 1:] = plan.rows
    return dense


def _execute_triton(images: torch.Tensor, plans: Sequence[_LayerPlan], fill: Sequence[float]) -> torch.Tensor:
    """Two kernel launches per layer that changes any image, and one host→device copy of every layer's rows."""
    plans = [p for p in plans if len(p.order)]
    batch = images.shape[0]
    rows = host_to_device(np.stack([_dense_rows(p, batch) for p in plans]), images.device)
    luts = torch.empty((batch, 3, 256), dtype=torch.int32, device=images.device)
    src = images.contiguous()
    for layer in range(len(plans)):
        dst = torch.empty_like(src, memory_format=torch.contiguous_format)
        randaug_kernels.run_layer(src, dst, rows[layer], luts, tuple(fill), _SMOOTH_SIDE, _SMOOTH_CENTRE)
        src = dst
    return src


def _execute_torch(images: torch.Tensor, plans: Sequence[_LayerPlan], fill: Sequence[float]) -> torch.Tensor:
    """Each layer's groups as torch ops. Two host→device copies in all: the image orders of every layer (int64),
    and their rows (float32; row 0 carries the fill colour)."""
    out = images.clone(memory_format=torch.contiguous_format)
    fill_row = np.zeros((1, _ROW_WIDTH), np.float32)
    fill_row[0, :3] = fill
    order = host_to_device(np.concatenate([p.order for p in plans]), out.device)
    rows = host_to_device(np.concatenate([fill_row] + [p.rows for p in plans]), out.device)
    fill_dev, rows = rows[0, :3], rows[1:]
    offset = 0
    for plan in plans:
        n = len(plan.order)
        if n:
            _run_layer(out, plan, order[offset : offset + n], rows[offset : offset + n], fill_dev)
        offset += n
    return out


def _run_layer(out: torch.Tensor, plan: _LayerPlan, order: torch.Tensor, rows: torch.Tensor,
               fill: torch.Tensor) -> None:  # fmt: skip
    """Gather the layer's images once (sorted by group), run each group's kernel on its slice, write back.
    The lookup-table family (host-built tables, then autocontrast / equalize / contrast tables built here)
    shares one gather through its per-(image, channel) tables."""
    work = out.index_select(0, order)
    args = rows[:, :_NUM_ARGS]
    n_lut = plan.lut_stop
    if n_lut:
        luts = rows[:n_lut, _NUM_ARGS:].to(torch.uint8).unsqueeze(1).repeat(1, 3, 1)
    for g in plan.groups:
        x, a = work[g.start : g.stop], args[g.start : g.stop]
        if g.kernel in _DEVICE_LUTS:
            luts[g.start : g.stop] = _DEVICE_LUTS[g.kernel](x, a)
        elif g.kernel == "Warp":
            out.index_copy_(0, order[g.start : g.stop], _warp(x, a, fill, g.bicubic))
        elif g.kernel in _BLENDS:
            out.index_copy_(0, order[g.start : g.stop], _BLENDS[g.kernel](x, a))
    if n_lut:
        out.index_copy_(0, order[:n_lut], _apply_lut(work[:n_lut], luts))


# --------------------------------------------------------------------------------------------------------
# Public API


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.dtype != torch.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must be (B, 3, H, W), got shape {tuple(images.shape)}")


def _check_ops(ops: Sequence[str]) -> None:
    unknown = [name for name in ops if name not in OPS]
    if unknown or not ops:
        raise ValueError(f"unknown RandAugment op(s) {unknown}; known: {', '.join(OPS)}")


def _check_kernels(kernels: str) -> None:
    if kernels not in KERNELS:
        raise ValueError(f"kernels must be one of {KERNELS}, got {kernels!r}")


def _check_fill(img_mean: Sequence[float]) -> tuple[float, float, float]:
    if len(img_mean) != 3:
        raise ValueError(f"img_mean must have 3 values (R, G, B in 0..255), got {img_mean!r}")
    return tuple(float(v) for v in img_mean)  # type: ignore[return-value]


def _per_image(values, batch: int, what: str, dtype) -> np.ndarray:
    """A scalar or per-image sequence/tensor as a host array of length ``batch``."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=dtype)
    if array.ndim == 0:
        array = np.full(batch, array, dtype)
    if array.shape != (batch,):
        raise ValueError(f"{what} must be a scalar or have one value per image ({batch}), got {array.shape}")
    return array


def apply_op(images: torch.Tensor, name: str, level: Union[torch.Tensor, Sequence[float], float],
             sign: Union[torch.Tensor, Sequence[float], None] = None,
             bicubic: Union[torch.Tensor, Sequence[bool], None] = None,
             img_mean: Sequence[float] = (124, 116, 104), translate_pct: float = 0.45,
             kernels: str = "auto") -> torch.Tensor:  # fmt: skip
    """One op on every image of a uint8 batch with per-image levels (and signs ±1 / bicubic flags): the unit
    the tests compare with timm.

    ``level`` is timm's magnitude (0..10 scale, not clipped here); ``sign`` (default +1) is the sign timm's
    ``_randomly_negate`` would pick; ``bicubic`` (default False: bilinear) matters for the warps only;
    ``kernels`` as in :class:`BatchRandAugment`. Returns a new contiguous uint8 tensor on the images' device.
    """
    _check_images(images)
    _check_kernels(kernels)
    _check_ops([name])
    fill = _check_fill(img_mean)
    b, _, h, w = images.shape
    level = _per_image(level, b, "level", np.float64)
    sign = np.where(_per_image(1.0 if sign is None else sign, b, "sign", np.float64) < 0, -1.0, 1.0)
    bicubic = _per_image(False if bicubic is None else bicubic, b, "bicubic", bool)
    plan = _plan_layer(np.zeros(b, np.int64), np.ones(b, bool), level, sign, bicubic, (name,), w, h, translate_pct)
    return _execute(images, [plan], fill, kernels)


class BatchRandAugment:
    """timm's RandAugment (``rand-...-inc1`` policies) for uint8 (B, 3, H, W) batches on any device.

    ``interpolation``: "random" (bilinear or bicubic per image per application, timm's default for
    ``train_interpolation=random``), "bilinear" or "bicubic". ``ops``: the op set to choose from (default
    all 15 of timm's increasing set; a subset serves tests and ablations). ``seed`` seeds the host generator
    that draws every random choice. ``kernels``: see :data:`KERNELS`; the random choices do not depend on it.
    """

    def __init__(self, spec: RandAugmentSpec, *, img_mean: Sequence[float] = (124, 116, 104),
                 translate_pct: float = 0.45, interpolation: str = "random", seed: Optional[int] = None,
                 ops: Sequence[str] = OPS, kernels: str = "auto") -> None:  # fmt: skip
        if interpolation not in INTERPOLATIONS:
            raise ValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        _check_ops(ops)
        _check_kernels(kernels)
        self.spec, self.kernels = spec, kernels
        self.img_mean = _check_fill(img_mean)
        self.translate_pct = float(translate_pct)
        self.interpolation = interpolation
        self.ops = tuple(ops)
        self.rng = np.random.default_rng(seed)

    def _draw_magnitudes(self, batch: int) -> np.ndarray:
        """timm's AugmentOp: N(m, mstd), or U(0, m) for mstd = inf, clipped to [0, magnitude_max or 10]."""
        spec = self.spec
        if spec.magnitude_std == math.inf:
            magnitude = self.rng.uniform(0.0, spec.magnitude, batch)
        elif spec.magnitude_std > 0:
            magnitude = self.rng.normal(spec.magnitude, spec.magnitude_std, batch)
        else:
            magnitude = np.full(batch, float(spec.magnitude))
        return np.clip(magnitude, 0.0, spec.magnitude_max or _LEVEL_DENOM)

    def _plan(self, batch: int, width: int, height: int) -> _LayerPlan:
        """One layer's choices for every image: op, whether applied, magnitude, sign, interpolation."""
        op_index = self.rng.integers(len(self.ops), size=batch)
        applied = self.rng.random(batch) < self.spec.prob
        level = self._draw_magnitudes(batch)
        sign = np.where(self.rng.random(batch) > 0.5, -1.0, 1.0)  # timm's _randomly_negate
        if self.interpolation == "random":
            bicubic = self.rng.random(batch) < 0.5
        else:
            bicubic = np.full(batch, self.interpolation == "bicubic")
        return _plan_layer(op_index, applied, level, sign, bicubic, self.ops, width, height, self.translate_pct)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) → a new contiguous uint8 tensor on the same device; ``images`` is not modified."""
        _check_images(images)
        b, _, h, w = images.shape
        plans = [self._plan(b, w, h) for _ in range(self.spec.num_layers)]
        return _execute(images, plans, self.img_mean, self.kernels)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.spec}, interpolation={self.interpolation!r}, "
                f"img_mean={self.img_mean}, ops={len(self.ops)}, kernels={self.kernels!r})")  # fmt: skip
