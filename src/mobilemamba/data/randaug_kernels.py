"""The batched RandAugment's device side as two Triton kernels per layer (``batch_randaug.py`` holds the policy,
the semantics and the torch version these kernels reproduce).

Why: the torch version sorts a layer's images by op and runs each op on its slice, ~480 small launches per call,
so on a GPU it is bound by the host's dispatch time (5.8–6.6 ms per 256 x 224² batch on an H200 host; 1.8–2.3 ms
here, mostly the host's numpy planning: docs/results.md#randaug-kernels). Here each image carries an op *code* and
its arguments in one dense row, and a layer is two launches over the whole batch, each program branching on its
image's code:

- ``_tables``: one program per image builds the image's three 256-entry tables: copied from the host row
  (Invert, Posterize, Solarize, SolarizeAdd, Brightness), or from the image's histograms (AutoContrast,
  Equalize) or grayscale mean (Contrast). Programs of other images return at once.
- ``_pixels``: one program per block of an image's pixels: table lookup, Color / Sharpness blend, or the affine
  warp (bilinear or bicubic, border taps, fill outside), or a copy when the layer leaves the image alone.

The arithmetic is the torch version's, op for op, compiled without fused multiply-adds
(``enable_fp_fusion=False``), so the table and blend ops give the same bytes. The warps compute the sample
grid per pixel in float32 (torch: ``affine_grid``'s batched matmul), so a value within float32 round-off of an
integer may truncate differently (a 256 x 224² batch on an H200: max 2 levels, 0.0016% of the values,
docs/results.md#randaug-kernels).

On CPU tensors the kernels run only in Triton's interpreter (``TRITON_INTERPRET=1``, numpy: slow, for the CPU
tests); ``batch_randaug.py`` uses them for CUDA tensors.
"""
from __future__ import annotations

import contextlib
import os

import torch

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - torch's CUDA wheels bring triton
    triton = None

# Per-image op codes of a dense layer (column 0 of a row); 1..4 read the image's tables.
CODE_NONE, CODE_HOST_LUT, CODE_AUTOCONTRAST, CODE_EQUALIZE, CODE_CONTRAST = 0, 1, 2, 3, 4
CODE_COLOR, CODE_SHARPNESS, CODE_BILINEAR, CODE_BICUBIC = 5, 6, 7, 8
NUM_ARGS = 6  # then the arguments: the warp's normalized 2x3 theta, or the blend factor first
ROW = 1 + NUM_ARGS + 256  # code, arguments, the host-built table


def available() -> bool:
    return triton is not None


# triton.jit, or (no triton) the plain function: the module imports either way, and available() tells
_jit = triton.jit if triton is not None else (lambda fn: fn)


@_jit
def _clip_floor(x):
    """PIL's float -> UINT8 store as a float: clip to [0, 255], then truncate (batch_randaug's ``_to_uint8``)."""
    return tl.floor(tl.minimum(tl.maximum(x, 0.0), 255.0))


@_jit
def _blend(degenerate, image, alpha):
    """PIL's ``Image.blend(degenerate, image, alpha)`` in float32, stored: batch_randaug's ``_blend``."""
    return _clip_floor(degenerate + alpha * (image - degenerate))


@_jit
def _pil_gray(image, HW, offs, mask):
    """PIL's RGB -> L of the pixels ``offs`` of a planar RGB image, int32 (masked lanes: 0)."""
    r = tl.load(image + offs, mask=mask, other=0).to(tl.int32)
    g = tl.load(image + HW + offs, mask=mask, other=0).to(tl.int32)
    b = tl.load(image + 2 * HW + offs, mask=mask, other=0).to(tl.int32)
    return (r * 19595 + g * 38470 + b * 7471 + 32768) >> 16


@_jit
def _cubic_weights(t):
    """torch's ``get_cubic_upsample_coefficients`` (a = -0.75): the weights of the taps at -1, 0, 1, 2 for an offset
    ``t`` in [0, 1), in torch's order of operations."""
    A = -0.75
    u = t + 1.0
    w0 = ((A * u - 5.0 * A) * u + 8.0 * A) * u - 4.0 * A
    w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0
    v = 1.0 - t
    w2 = ((A + 2.0) * v - (A + 3.0)) * v * v + 1.0
    v = v + 1.0
    w3 = ((A * v - 5.0 * A) * v + 8.0 * A) * v - 4.0 * A
    return w0, w1, w2, w3


@_jit
def _tables(src, rows, luts, HW, ROW: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    row = rows + b * ROW
    code = tl.load(row).to(tl.int32)
    levels = tl.arange(0, 256)
    out = luts + b * 768  # the image's 3 x 256 tables
    image = src + b * 3 * HW
    if code == 1:  # host-built table (after the code and the 6 arguments), the same for every channel
        lut = tl.load(row + 7 + levels).to(tl.int32)
        for c in tl.static_range(3):
            tl.store(out + c * 256 + levels, lut)
    if (code == 2) | (code == 3):  # ImageOps.autocontrast / equalize, from each channel's histogram
        for c in tl.static_range(3):
            hist = tl.zeros([256], dtype=tl.int32)
            for start in range(0, HW, BLOCK):
                offs = start + tl.arange(0, BLOCK)
                x = tl.load(image + c * HW + offs, mask=offs < HW, other=0).to(tl.int32)
                hist += tl.histogram(x, 256)
            padding = tl.cdiv(HW, BLOCK) * BLOCK - HW  # the masked lanes counted as zeros
            hist -= tl.where(levels == 0, padding, 0)
            present = hist > 0
            lo = tl.min(tl.where(present, levels, 256), 0)
            hi = tl.max(tl.where(present, levels, -1), 0)
            if code == 2:  # stretch [lo, hi] to [0, 255] in float64
                spread = hi - lo
                scale = 255.0 / tl.maximum(spread, 1).to(tl.float64)
                stretched = levels.to(tl.float64) * scale + (-lo).to(tl.float64) * scale
                lut = tl.minimum(tl.maximum(stretched.to(tl.int32), 0), 255)  # float->int truncates
                lut = tl.where(spread > 0, lut, levels)
            else:  # lut[i] = (step // 2 + #pixels below i) // step
                last = tl.sum(tl.where(levels == hi, hist, 0), 0)
                step = (HW - last) // 255
                lut = (step // 2 + tl.cumsum(hist, 0) - hist) // tl.maximum(step, 1)
                lut = tl.minimum(tl.where(step > 0, lut, levels), 255)
            tl.store(out + c * 256 + levels, lut)
    if code == 4:  # ImageEnhance.Contrast: blend the levels with the rounded grayscale mean
        total = tl.zeros([BLOCK], dtype=tl.int64)
        for start in range(0, HW, BLOCK):
            offs = start + tl.arange(0, BLOCK)
            total += _pil_gray(image, HW, offs, offs < HW).to(tl.int64)
        mean = tl.floor(tl.sum(total, 0).to(tl.float64) / HW + 0.5).to(tl.float32)
        lut = _blend(mean, levels.to(tl.float32), tl.load(row + 1)).to(tl.int32)
        for c in tl.static_range(3):
            tl.store(out + c * 256 + levels, lut)


@_jit
def _pixels(src, dst, rows, luts, H, W, fill_r, fill_g, fill_b, side, centre, ROW: tl.constexpr,
            BLOCK: tl.constexpr):  # fmt: skip
    b = tl.program_id(0).to(tl.int64)
    HW = H * W
    offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < HW
    row = rows + b * ROW
    code = tl.load(row).to(tl.int32)
    image = src + b * 3 * HW
    out = dst + b * 3 * HW
    if code == 0:
        for c in tl.static_range(3):
            tl.store(out + c * HW + offs, tl.load(image + c * HW + offs, mask=inside), mask=inside)
    elif code <= 4:  # table lookup
        for c in tl.static_range(3):
            level = tl.load(image + c * HW + offs, mask=inside, other=0).to(tl.int32)
            mapped = tl.load(luts + b * 768 + c * 256 + level, mask=inside, other=0)
            tl.store(out + c * HW + offs, mapped.to(tl.uint8), mask=inside)
    elif code == 5:  # Color: blend with the grayscale image
        alpha = tl.load(row + 1)
        gray = _pil_gray(image, HW, offs, inside).to(tl.float32)
        for c in tl.static_range(3):
            x = tl.load(image + c * HW + offs, mask=inside, other=0).to(tl.float32)
            y = _blend(gray, x, alpha)
            tl.store(out + c * HW + offs, y.to(tl.uint8), mask=inside)
    elif code == 6:  # Sharpness: blend with PIL's SMOOTH, summed in PIL's order; border pixels unchanged
        alpha = tl.load(row + 1)
        i = offs // W
        j = offs % W
        interior = inside & (i >= 1) & (i < H - 1) & (j >= 1) & (j < W - 1)
        for c in tl.static_range(3):
            plane = image + c * HW
            x = tl.load(plane + offs, mask=inside, other=0).to(tl.float32)
            below = plane + offs + W
            above = plane + offs - W
            acc = (tl.load(below - 1, mask=interior, other=0).to(tl.float32) * side
                   + tl.load(below, mask=interior, other=0).to(tl.float32) * side) \
                + tl.load(below + 1, mask=interior, other=0).to(tl.float32) * side  # fmt: skip
            acc = acc + 0.5
            acc = acc + ((tl.load(plane + offs - 1, mask=interior, other=0).to(tl.float32) * side + x * centre)
                         + tl.load(plane + offs + 1, mask=interior, other=0).to(tl.float32) * side)  # fmt: skip
            acc = acc + ((tl.load(above - 1, mask=interior, other=0).to(tl.float32) * side
                          + tl.load(above, mask=interior, other=0).to(tl.float32) * side)
                         + tl.load(above + 1, mask=interior, other=0).to(tl.float32) * side)  # fmt: skip
            smooth = tl.where(interior, _clip_floor(acc), x)
            y = _blend(smooth, x, alpha)
            tl.store(out + c * HW + offs, y.to(tl.uint8), mask=inside)
    else:  # affine warp: affine_grid (align_corners=False) + grid_sample (border taps), fill outside the image
        t0 = tl.load(row + 1)
        t1 = tl.load(row + 2)
        t2 = tl.load(row + 3)
        t3 = tl.load(row + 4)
        t4 = tl.load(row + 5)
        t5 = tl.load(row + 6)
        i = offs // W
        j = offs % W
        Wf = W * 1.0
        Hf = H * 1.0
        xn = ((2 * j + 1).to(tl.float32) - Wf) / Wf  # pixel centres in [-1, 1]
        yn = ((2 * i + 1).to(tl.float32) - Hf) / Hf
        gx = xn * t0 + yn * t1 + t2
        gy = xn * t3 + yn * t4 + t5
        covered = (gx >= -1.0) & (gx < 1.0) & (gy >= -1.0) & (gy < 1.0)
        ix = ((gx + 1.0) * Wf - 1.0) / 2.0
        iy = ((gy + 1.0) * Hf - 1.0) / 2.0
        if code == 7:  # bilinear: clip the point to the image, then the four taps (the far ones may weigh 0)
            ix = tl.minimum(tl.maximum(ix, 0.0), Wf - 1.0)
            iy = tl.minimum(tl.maximum(iy, 0.0), Hf - 1.0)
            x0f = tl.floor(ix)
            y0f = tl.floor(iy)
            x0 = x0f.to(tl.int32)
            y0 = y0f.to(tl.int32)
            x1 = tl.minimum(x0 + 1, W - 1)
            y1 = tl.minimum(y0 + 1, H - 1)
            w_nw = (x0f + 1.0 - ix) * (y0f + 1.0 - iy)
            w_ne = (ix - x0f) * (y0f + 1.0 - iy)
            w_sw = (x0f + 1.0 - ix) * (iy - y0f)
            w_se = (ix - x0f) * (iy - y0f)
            for c in tl.static_range(3):
                plane = image + c * HW
                v = tl.load(plane + y0 * W + x0, mask=inside, other=0).to(tl.float32) * w_nw
                v += tl.load(plane + y0 * W + x1, mask=inside, other=0).to(tl.float32) * w_ne
                v += tl.load(plane + y1 * W + x0, mask=inside, other=0).to(tl.float32) * w_sw
                v += tl.load(plane + y1 * W + x1, mask=inside, other=0).to(tl.float32) * w_se
                fill = fill_r if c == 0 else (fill_g if c == 1 else fill_b)
                y = _clip_floor(tl.where(covered, v + 1e-3, fill))  # batch_randaug's _TRUNC_EPS
                tl.store(out + c * HW + offs, y.to(tl.uint8), mask=inside)
        else:  # bicubic (a = -0.75) over the 4x4 taps around the point, each tap clamped to the image
            ix = tl.minimum(tl.maximum(ix, -4.0), Wf + 4.0)  # far outside only the fill counts
            iy = tl.minimum(tl.maximum(iy, -4.0), Hf + 4.0)
            x0f = tl.floor(ix)
            y0f = tl.floor(iy)
            tx = ix - x0f
            ty = iy - y0f
            x0 = x0f.to(tl.int32)
            y0 = y0f.to(tl.int32)
            cx0, cx1, cx2, cx3 = _cubic_weights(tx)
            cy0, cy1, cy2, cy3 = _cubic_weights(ty)
            xa = tl.minimum(tl.maximum(x0 - 1, 0), W - 1)
            xb = tl.minimum(tl.maximum(x0, 0), W - 1)
            xc = tl.minimum(tl.maximum(x0 + 1, 0), W - 1)
            xd = tl.minimum(tl.maximum(x0 + 2, 0), W - 1)
            for c in tl.static_range(3):
                plane = image + c * HW
                v = tl.zeros([BLOCK], dtype=tl.float32)
                for r in tl.static_range(4):
                    yr = tl.minimum(tl.maximum(y0 - 1 + r, 0), H - 1) * W
                    line = (tl.load(plane + yr + xa, mask=inside, other=0).to(tl.float32) * cx0
                            + tl.load(plane + yr + xb, mask=inside, other=0).to(tl.float32) * cx1
                            + tl.load(plane + yr + xc, mask=inside, other=0).to(tl.float32) * cx2
                            + tl.load(plane + yr + xd, mask=inside, other=0).to(tl.float32) * cx3)  # fmt: skip
                    cy = cy0 if r == 0 else (cy1 if r == 1 else (cy2 if r == 2 else cy3))
                    v += line * cy
                fill = fill_r if c == 0 else (fill_g if c == 1 else fill_b)
                y = _clip_floor(tl.where(covered, v + 1e-3, fill))  # batch_randaug's _TRUNC_EPS
                tl.store(out + c * HW + offs, y.to(tl.uint8), mask=inside)


def interpreting() -> bool:
    """Whether Triton was imported in interpreter mode (``TRITON_INTERPRET=1``): kernels then take CPU tensors."""
    return os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")


TABLES_BLOCK, PIXELS_BLOCK = 2048, 1024


def run_layer(src: torch.Tensor, dst: torch.Tensor, rows: torch.Tensor, luts: torch.Tensor,
              fill: tuple[float, float, float], side: float, centre: float) -> None:  # fmt: skip
    """One layer: ``dst`` (uint8, contiguous (B, 3, H, W)) ← ``src`` changed per ``rows`` (float32 (B, ROW));
    ``luts`` is int32 (B, 3, 256) scratch."""
    if not src.is_cuda and not interpreting():
        raise ValueError("Triton kernels on CPU tensors run only in Triton's interpreter: set TRITON_INTERPRET=1 "
                         "before triton is imported (or use kernels='torch')")
    b, _, h, w = src.shape
    options = dict(enable_fp_fusion=False)
    # Triton launches on the current device: make it the images' one
    with torch.cuda.device(src.device) if src.is_cuda else contextlib.nullcontext():
        _tables[(b,)](src, rows, luts, h * w, ROW=ROW, BLOCK=TABLES_BLOCK, num_warps=8, **options)
        _pixels[(b, triton.cdiv(h * w, PIXELS_BLOCK))](src, dst, rows, luts, h, w, *fill, side, centre, ROW=ROW,
                                                       BLOCK=PIXELS_BLOCK, num_warps=4, **options)
