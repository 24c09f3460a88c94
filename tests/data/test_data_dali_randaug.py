"""timm's rand-m9-mstd0.5-inc1 rebuilt from DALI ops: parsing, the op table, and how often images change."""
from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("nvidia.dali", reason="NVIDIA DALI is not installed")

from mobilemamba.data import DatasetError  # noqa: E402
from mobilemamba.data.config import AugParams  # noqa: E402
from mobilemamba.data.dali_loader import _to_torch, train_pipeline  # noqa: E402
from mobilemamba.data.dali_randaug import LEVELS, RandAugmentSpec, parse_rand_augment, timm_increasing_suite  # noqa: E402


def test_parse_timm_policy_strings():
    assert parse_rand_augment("rand-m9-mstd0.5-inc1") == RandAugmentSpec(9.0, 2, 0.5, 10.0, 0.5)
    assert parse_rand_augment("rand-m7-n3-mstd0-inc1-p0.8") == RandAugmentSpec(7.0, 3, 0.0, 10.0, 0.8)
    for bad in ("rand-m9-mstd0.5", "augmix-m5", "rand-m9-inc1-w0", "rand-mx"):
        with pytest.raises(DatasetError, match="auto_augment"):
            parse_rand_augment(bad)
    uniform = parse_rand_augment("rand-m9-mstd101-inc1")  # timm's spelling of a uniform magnitude in [0, m]
    assert uniform.magnitude_std == float("inf")
    with pytest.raises(DatasetError, match="mstd=inf.*dali_randaug=torch supports it"):
        train_pipeline(lambda: None, batch_size=2, img_size=8, aug=AugParams(auto_augment="rand-m9-mstd101-inc1"),
                       randaug_in_pipeline=True, device_id=None, num_threads=1, seed=0, build=False)


def test_suite_is_timms_fifteen_increasing_ops_with_timms_ranges():
    suite = {aug.name: aug for aug in timm_increasing_suite()}
    assert set(suite) == {"auto_contrast", "equalize", "invert", "rotate", "posterize", "solarize", "solarize_add",
                          "color", "contrast", "brightness", "sharpness", "shear_x", "shear_y", "translate_x",
                          "translate_y"}  # fmt: skip
    at = lambda name, level: float(np.asarray(suite[name].mag_range)[list(LEVELS).index(level)])  # noqa: E731
    assert at("rotate", 9.0) == pytest.approx(27.0) and at("shear_x", 10.0) == pytest.approx(0.3)
    assert at("translate_y", 10.0) == pytest.approx(0.45) and at("brightness", 9.0) == pytest.approx(0.81)
    assert at("posterize", 9.0) == 1 and at("posterize", 0.0) == 4  # timm: 4 - int(0.4 * level) bits
    assert at("solarize", 9.0) == 256 - int(0.9 * 256) and at("solarize_add", 9.0) == int(0.9 * 110)


@pytest.mark.slow
def test_about_a_quarter_of_the_images_pass_through_unchanged(jpeg_folder):
    """Two layers, each applied with p=0.5: P(no op) = 0.25 (a few ops may also leave an image as it was)."""
    path = sorted((jpeg_folder / "train" / "class_002").glob("*.jpg"))[0]
    base = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=0.0, reprob=0.0, train_interpolation="bilinear")
    outs = {}
    for name, ra in (("plain", None), ("ra", "rand-m9-mstd0.5-inc1")):
        batch = [str(path)] * 96
        fed = []

        def source():
            if fed:
                raise StopIteration
            fed.append(1)
            return [np.frombuffer(p.encode(), np.uint8) for p in batch], [np.array(0, np.int32)] * len(batch)

        pipe = train_pipeline(source, batch_size=96, img_size=32, aug=AugParams(auto_augment=ra, **base),
                              randaug_in_pipeline=True, device_id=None, num_threads=2, seed=3)  # fmt: skip
        outs[name] = _to_torch(pipe.run()[0], torch.device("cpu")).float()
    unchanged = ((outs["ra"] - outs["plain"]).abs().flatten(1).max(1).values == 0).float().mean()
    assert 0.12 < float(unchanged) < 0.45
