"""Small generated JPEG folders shared by the data-layer tests (written once per test run)."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))  # for data_helpers, whatever pytest's import mode
from data_helpers import NUM_CLASSES, PER_CLASS_TRAIN, PER_CLASS_VAL  # noqa: E402

from mobilemamba.data.prepare import make_synthetic_jpeg_folder  # noqa: E402


@pytest.fixture(scope="session")
def jpeg_folder(tmp_path_factory) -> Path:
    return make_synthetic_jpeg_folder(
        tmp_path_factory.mktemp("jpeg") / "ds", classes=NUM_CLASSES, per_class_train=PER_CLASS_TRAIN,
        per_class_val=PER_CLASS_VAL, size=40,
    )  # fmt: skip


@pytest.fixture(scope="session")
def broken_folder(tmp_path_factory, jpeg_folder) -> dict:
    """A copy of ``jpeg_folder`` with a truncated JPEG, a text file named .jpg, a PNG and a README.txt."""
    root = tmp_path_factory.mktemp("broken") / "ds"
    shutil.copytree(jpeg_folder, root)
    cls = root / "train" / "class_001"
    good = sorted(cls.glob("*.jpg"))[0].read_bytes()
    (cls / "zz_truncated.jpg").write_bytes(good[: len(good) // 3])
    (cls / "zz_not_an_image.jpg").write_text("this is not a JPEG\n")
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(cls / "zz_png_inside.png")
    (cls / "README.txt").write_text("notes\n")
    return dict(
        root=root,
        truncated=str(cls / "zz_truncated.jpg"),
        garbage=str(cls / "zz_not_an_image.jpg"),
        png=str(cls / "zz_png_inside.png"),
        txt=str(cls / "README.txt"),
    )


@pytest.fixture(scope="session")
def broken_val_folder(tmp_path_factory, jpeg_folder) -> dict:
    """A copy of ``jpeg_folder`` whose val split has a truncated JPEG and a text file in place of two images."""
    root = tmp_path_factory.mktemp("broken_val") / "ds"
    shutil.copytree(jpeg_folder, root)
    first, second = sorted((root / "val").glob("*/*.jpg"))[3:5]
    first.write_bytes(first.read_bytes()[:60])
    second.write_text("this is not a JPEG\n")
    return dict(root=root, unreadable=[str(first), str(second)])
