"""timm's rand-m9-mstd0.5-inc1 on a uint8 batch tensor (``batch_randaug.py``): every op against timm's own PIL
op image by image, with the torch ops and with the Triton kernels (``randaug_kernels.py``; on CPU in Triton's
interpreter, see ``tests/conftest.py``), then the policy's randomness (seeding, how often images change, the
input left alone), the two kernel sets against each other, and bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

aa = pytest.importorskip("timm.data.auto_augment", reason="timm is not installed")

from mobilemamba.data import randaug_kernels  # noqa: E402
from mobilemamba.data.batch_randaug import OPS, BatchRandAugment, apply_op  # noqa: E402
from mobilemamba.data.randaug_spec import RandAugmentSpec  # noqa: E402

TRITON_RUNS_HERE = randaug_kernels.available() and (torch.cuda.is_available() or randaug_kernels.interpreting())
KERNELS = ["torch", pytest.param("triton", marks=pytest.mark.skipif(
    not TRITON_RUNS_HERE, reason="needs triton (on a GPU, or TRITON_INTERPRET=1 on CPU)"))]  # fmt: skip


def on_kernel_device(images: torch.Tensor, kernels: str) -> torch.Tensor:
    """The Triton kernels run on the GPU where there is one (else in the interpreter, on CPU tensors)."""
    return images.cuda() if kernels == "triton" and torch.cuda.is_available() else images

H, W = 32, 40  # non-square, so that an x/y mix-up shows
MEAN = (124, 116, 104)
WARPS = ("Rotate", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
POINT_OPS = tuple(name for name in OPS if name not in WARPS)


def smooth_images(n: int, seed: int, cells: tuple[int, int] = (5, 6), lo: float = 0.0, hi: float = 255.0,
                  noise: float = 0.0) -> torch.Tensor:  # fmt: skip
    """Colourful low-frequency random fields (a ``cells`` grid upsampled bicubically), values in [lo, hi],
    plus optional per-pixel noise of that amplitude."""
    g = torch.Generator().manual_seed(seed)
    field = F.interpolate(torch.rand(n, 3, *cells, generator=g), size=(H, W), mode="bicubic", align_corners=False)
    field = lo + (hi - lo) * field.clamp(0, 1) + noise * (torch.rand(n, 3, H, W, generator=g) - 0.5)
    return field.round().clamp(0, 255).to(torch.uint8)


def varied_images() -> torch.Tensor:
    """Eight images that reach the corner cases of the histogram and blend ops: full-range noise, smooth
    fields of full / narrow / dark / bright range, a constant image, a two-level image, narrow-range noise."""
    g = torch.Generator().manual_seed(7)
    two_level = torch.where(torch.rand(1, 3, H, W, generator=g) < 0.3, 0, 200).to(torch.uint8)
    return torch.cat([
        torch.randint(0, 256, (1, 3, H, W), generator=g, dtype=torch.uint8),
        smooth_images(1, 1),
        smooth_images(1, 2, lo=60, hi=180),
        smooth_images(1, 3, lo=0, hi=60),
        smooth_images(1, 4, lo=200, hi=255),
        torch.full((1, 3, H, W), 77, dtype=torch.uint8),
        two_level,
        torch.randint(100, 141, (1, 3, H, W), generator=g, dtype=torch.uint8),
    ])  # fmt: skip


def timm_reference(images: torch.Tensor, name: str, levels, sign: float, bicubic: bool, monkeypatch) -> torch.Tensor:
    """timm's ``AugmentOp(name)`` at each image's level (prob 1, fixed magnitude) on PIL images, with the
    random sign of ``_randomly_negate`` forced and the interpolation fixed through hparams, as timm builds
    its kwargs (``fillcolor=img_mean``, ``resample``)."""
    monkeypatch.setattr(aa, "_randomly_negate", (lambda v: -v) if sign < 0 else (lambda v: v))
    resample = Image.Resampling.BICUBIC if bicubic else Image.Resampling.BILINEAR
    hparams = dict(img_mean=MEAN, interpolation=resample, translate_pct=0.45, magnitude_std=0)
    out = []
    for image, level in zip(images, levels):
        op = aa.AugmentOp(name, prob=1.0, magnitude=float(level), hparams=hparams)
        pil = op(Image.fromarray(image.permute(1, 2, 0).numpy()))
        out.append(torch.from_numpy(np.array(pil)).permute(2, 0, 1))
    return torch.stack(out)


def abs_diff(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.int() - b.int()).abs()


# ---- op by op against timm


def test_op_table_is_timms_increasing_set():
    assert OPS == tuple(aa._RAND_INCREASING_TRANSFORMS)


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["plus", "minus"])
@pytest.mark.parametrize("name", POINT_OPS)
@pytest.mark.parametrize("kernels", KERNELS)
def test_point_and_enhance_ops_equal_timm_exactly(name, sign, kernels, monkeypatch):
    """The histogram, LUT and blend ops reproduce PIL's integer / float32 arithmetic: no difference at all,
    including PIL's truncations (e.g. SMOOTH on a flat region) and the constant / two-level corner cases."""
    images = varied_images()
    levels = [0.0, 1.3, 3.7, 5.0, 6.6, 9.0, 9.6, 10.0]
    ours = apply_op(on_kernel_device(images, kernels), name, levels, sign=[sign] * len(levels), img_mean=MEAN,
                    kernels=kernels).cpu()
    ref = timm_reference(images, name, levels, sign, False, monkeypatch)
    assert ours.dtype == torch.uint8 and ours.shape == images.shape
    assert int(abs_diff(ours, ref).max()) == 0


# Levels for the warps avoid 0 (an identity that float32 grid coordinates cannot hit exactly at every pixel) and
# "round" levels whose sample positions land on exact fractions (there PIL's own double arithmetic rounds
# either way, a 1-level coin flip over whole images); the policy draws generic float levels anyway.
WARP_LEVELS = [0.71, 2.37, 4.13, 5.57, 7.31, 8.83, 9.47, 9.93]


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["plus", "minus"])
@pytest.mark.parametrize("name", WARPS)
@pytest.mark.parametrize("kernels", KERNELS)
def test_bilinear_warps_match_timm_to_float32_rounding(name, sign, kernels, monkeypatch):
    """Bilinear: PIL's kernel, edge clamping and out-of-image test are the same as grid_sample's with border
    padding and a hard coverage mask, so only float32-vs-double truncation flips remain, even on noise.
    Measured: max 1 level, at most 0.07% of the values off (tolerance 0.5%)."""
    images = torch.cat([smooth_images(2, 11), varied_images()[[0, 1, 2, 5, 6, 7]]])  # incl. flat and two-level
    ours = apply_op(on_kernel_device(images, kernels), name, WARP_LEVELS, sign=[sign] * 8, bicubic=[False] * 8,
                    img_mean=MEAN, kernels=kernels).cpu()
    ref = timm_reference(images, name, WARP_LEVELS, sign, False, monkeypatch)
    diff = abs_diff(ours, ref)
    assert int(diff.max()) <= 1
    assert float((diff > 0).float().mean()) < 0.005


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["plus", "minus"])
@pytest.mark.parametrize("name", WARPS)
@pytest.mark.parametrize("kernels", KERNELS)
def test_bicubic_warps_match_timm_on_smooth_images(name, sign, kernels, monkeypatch):
    """Bicubic: torch's cubic (a = -0.75) is a little softer than PIL's (a = -1); on smooth images that costs
    a fraction of a level. Measured: mean 0.2 (translate) to 0.55 (rotate), max 4 levels, at most 0.4% of the
    values more than 2 off; the tolerances leave ~2x headroom and still fail a half-pixel misalignment."""
    images = smooth_images(8, 12)
    ours = apply_op(on_kernel_device(images, kernels), name, WARP_LEVELS, sign=[sign] * 8, bicubic=[True] * 8,
                    img_mean=MEAN, kernels=kernels).cpu()
    ref = timm_reference(images, name, WARP_LEVELS, sign, True, monkeypatch)
    diff = abs_diff(ours, ref)
    assert float(diff.float().mean()) < 1.0
    assert float((diff > 2).float().mean()) < 0.01
    assert int(diff.max()) <= 6


@pytest.mark.parametrize("kernels", KERNELS)
def test_warps_fill_with_img_mean_where_pixels_come_from_outside(kernels):
    """A full-strength translation moves 45% of the width out of view: those columns are exactly the fill."""
    images = on_kernel_device(smooth_images(2, 13), kernels)
    out = apply_op(images, "TranslateXRel", [10.0, 10.0], sign=[1.0, -1.0], img_mean=(1, 2, 3), kernels=kernels).cpu()
    shift = int(0.45 * W)
    fill = torch.tensor([1, 2, 3], dtype=torch.uint8).view(3, 1, 1)
    assert (out[0, :, :, W - shift :] == fill).all() and (out[1, :, :, :shift] == fill).all()
    assert not (out[0, :, :, : W - shift - 1] == fill).all(0).any()


# ---- the policy


def policy_images(n: int) -> torch.Tensor:
    """Colourful, mid-range, slightly noisy images that every op at magnitude ~9 visibly changes."""
    return smooth_images(n, 21, lo=40, hi=210, noise=24)


def test_seed_makes_the_policy_reproducible():
    images = policy_images(64)
    run = lambda seed: BatchRandAugment(RandAugmentSpec(), seed=seed)(images)  # noqa: E731
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_about_a_quarter_of_the_images_pass_through_unchanged():
    """Two layers each applied with p=0.5: P(no op) = 0.25 (plus ~0.1% for two layers that undo each other,
    e.g. Invert twice). 512 images: binomial sd 0.019, the bounds are ~4 sd."""
    images = policy_images(512)
    out = BatchRandAugment(RandAugmentSpec(), seed=0)(images)
    unchanged = (out == images).flatten(1).all(1).float().mean()
    assert 0.17 < float(unchanged) < 0.33


def test_input_is_not_modified_and_output_is_a_new_contiguous_uint8_batch():
    images = policy_images(16)
    keep = images.clone()
    ra = BatchRandAugment(RandAugmentSpec(prob=1.0), seed=1)
    out = ra(images)
    assert torch.equal(images, keep)
    assert out.dtype == torch.uint8 and out.shape == images.shape and out.is_contiguous()
    assert out.data_ptr() != images.data_ptr() and not torch.equal(out, images)
    channels_last = images.contiguous(memory_format=torch.channels_last)
    out_cl = BatchRandAugment(RandAugmentSpec(prob=1.0), seed=1)(channels_last)
    assert out_cl.is_contiguous() and torch.equal(out_cl, out) and torch.equal(channels_last, keep)


def test_no_layers_or_zero_prob_give_an_equal_copy():
    images = policy_images(8)
    for spec in (RandAugmentSpec(num_layers=0), RandAugmentSpec(prob=0.0)):
        out = BatchRandAugment(spec, seed=0)(images)
        assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()


@pytest.mark.parametrize("name", ["Equalize", "PosterizeIncreasing", "SolarizeAdd", "AutoContrast"])
def test_forced_unsigned_op_at_fixed_magnitude_equals_apply_op(name):
    images = varied_images()
    spec = RandAugmentSpec(magnitude=7.0, num_layers=1, magnitude_std=0.0, prob=1.0)
    out = BatchRandAugment(spec, ops=[name], seed=0)(images)
    assert torch.equal(out, apply_op(images, name, [7.0] * len(images)))


@pytest.mark.parametrize(("name", "interpolation"),
                         [("ContrastIncreasing", "random"), ("Rotate", "bilinear"), ("ShearY", "bicubic")])  # fmt: skip
def test_forced_signed_op_gives_apply_op_with_one_of_the_two_signs(name, interpolation):
    images = policy_images(32)
    spec = RandAugmentSpec(magnitude=6.0, num_layers=1, magnitude_std=0.0, prob=1.0)
    out = BatchRandAugment(spec, ops=[name], interpolation=interpolation, seed=5)(images)
    bicubic = interpolation == "bicubic"
    plus, minus = (apply_op(images, name, [6.0] * 32, sign=[s] * 32, bicubic=[bicubic] * 32) for s in (1, -1))
    is_plus = (out == plus).flatten(1).all(1)
    is_minus = (out == minus).flatten(1).all(1)
    assert bool((is_plus | is_minus).all())
    assert 0 < int(is_plus.sum()) < 32  # both signs drawn


def test_magnitude_is_clipped_to_magnitude_max():
    """timm clips the drawn magnitude to [0, magnitude_max or 10]: m=12 acts as 10 (SolarizeAdd adds 110, not 128)."""
    images = varied_images()
    for mmax in (10.0, 0.0):
        spec = RandAugmentSpec(magnitude=12.0, num_layers=1, magnitude_std=0.0, magnitude_max=mmax, prob=1.0)
        out = BatchRandAugment(spec, ops=["SolarizeAdd"], seed=0)(images)
        assert torch.equal(out, apply_op(images, "SolarizeAdd", [10.0] * len(images)))
        assert not torch.equal(out, apply_op(images, "SolarizeAdd", [12.0] * len(images)))


@pytest.mark.skipif(not TRITON_RUNS_HERE, reason="needs triton (on a GPU, or TRITON_INTERPRET=1 on CPU)")
def test_triton_kernels_give_the_torch_kernels_policy_batch():
    """Same seed, same random choices whatever the kernels: the table and blend ops give the same bytes, the warps
    may truncate a value one level differently (their grid is computed per pixel, not by a batched matmul).
    The input is left alone, and a channels_last input gives the same batch."""
    images = policy_images(48)
    keep = images.clone()
    ref = BatchRandAugment(RandAugmentSpec(), seed=9, kernels="torch")(images)
    device_images = on_kernel_device(images, "triton")
    ours = BatchRandAugment(RandAugmentSpec(), seed=9, kernels="triton")(device_images)
    assert ours.dtype == torch.uint8 and ours.is_contiguous() and ours.data_ptr() != device_images.data_ptr()
    assert torch.equal(device_images.cpu(), keep)
    diff = abs_diff(ours.cpu(), ref)
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.005
    channels_last = device_images.contiguous(memory_format=torch.channels_last)
    again = BatchRandAugment(RandAugmentSpec(), seed=9, kernels="triton")(channels_last)
    assert torch.equal(again, ours)


def test_triton_kernels_on_cpu_tensors_without_the_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(randaug_kernels, "interpreting", lambda: False)
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        apply_op(policy_images(2), "Invert", 5.0, kernels="triton")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kernels", ["torch", "triton"])
def test_gpu_batch_matches_the_cpu_batch(kernels):
    """Same seed, same choices: point ops are exact on both devices; the warps may round a few values differently
    on the GPU."""
    images = policy_images(64)
    cpu = BatchRandAugment(RandAugmentSpec(), seed=2, kernels="torch")(images)
    gpu_in = images.cuda()
    keep = gpu_in.clone()
    gpu = BatchRandAugment(RandAugmentSpec(), seed=2, kernels=kernels)(gpu_in)
    assert gpu.is_cuda and torch.equal(gpu_in, keep)
    diff = abs_diff(gpu.cpu(), cpu)
    assert int(diff.max()) <= 1 and float((diff > 0).float().mean()) < 0.01


# ---- bad input


@pytest.mark.parametrize(("images", "match"), [
    (torch.zeros(2, 3, 8, 8), "uint8"),
    (torch.zeros(3, 8, 8, dtype=torch.uint8), "shape"),
    (torch.zeros(2, 4, 8, 8, dtype=torch.uint8), "shape"),
    (np.zeros((2, 3, 8, 8), np.uint8), "torch.Tensor"),
])  # fmt: skip
def test_bad_images_raise_value_error(images, match):
    with pytest.raises(ValueError, match=match):
        BatchRandAugment(RandAugmentSpec(), seed=0)(images)
    with pytest.raises(ValueError, match=match):
        apply_op(images, "Invert", 5.0)


def test_bad_arguments_raise_value_error():
    images = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(ValueError, match="unknown RandAugment op"):
        apply_op(images, "Cutout", 5.0)
    with pytest.raises(ValueError, match="unknown RandAugment op"):
        BatchRandAugment(RandAugmentSpec(), ops=["Rotate", "Sharpness"])
    with pytest.raises(ValueError, match="interpolation"):
        BatchRandAugment(RandAugmentSpec(), interpolation="nearest")
    with pytest.raises(ValueError, match="kernels must be one of"):
        BatchRandAugment(RandAugmentSpec(), kernels="cuda")
    with pytest.raises(ValueError, match="kernels must be one of"):
        apply_op(images, "Invert", 5.0, kernels="numpy")
    with pytest.raises(ValueError, match="img_mean"):
        BatchRandAugment(RandAugmentSpec(), img_mean=(124, 116))
    with pytest.raises(ValueError, match="level"):
        apply_op(images, "Rotate", [1.0, 2.0, 3.0])
