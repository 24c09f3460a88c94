"""`python -m mobilemamba.data.prepare resized SRC DST --max-side N`: a copy of a JPEG folder dataset whose images have
their shorter side at most N, the layout kept, files it cannot re-encode copied as they are and reported."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from PIL import Image

from mobilemamba.data import load_folder_dataset
from mobilemamba.data.prepare import make_synthetic_jpeg_folder

REPO = Path(__file__).resolve().parents[2]


def _dataset(tmp_path: Path) -> Path:
    """The smoke data (40x40 JPEGs), plus a wide JPEG, a PNG named .jpg, a truncated JPEG and an exclusion list."""
    src = tmp_path / "src"
    shutil.copytree(make_synthetic_jpeg_folder(tmp_path / "smoke", classes=2, per_class_train=3, per_class_val=2,
                                               size=40), src)
    cls = src / "train" / "class_000"
    Image.new("RGB", (120, 60), (200, 10, 10)).save(cls / "wide.jpg", quality=95)
    Image.new("RGB", (50, 50), (0, 200, 0)).save(cls / "png_inside.jpg", format="PNG")
    (cls / "truncated.jpg").write_bytes((cls / "wide.jpg").read_bytes()[:300])
    (src / ".mobilemamba_exclude.txt").write_text("train/class_000/truncated.jpg\n")
    return src


def _prepare(*args: str) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": f"{REPO / 'src'}:{REPO}", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "mobilemamba.data.prepare", "resized", *args],
                          capture_output=True, text=True, env=env, timeout=300)


def test_resized_copy_caps_the_shorter_side_keeps_the_layout_and_reports_what_it_copied_as_is(tmp_path):
    src, dst = _dataset(tmp_path), tmp_path / "dst"
    done = _prepare(str(src), str(dst), "--max-side", "24", "--workers", "1")
    assert done.returncode == 0, done.stderr
    rel = lambda root: sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() and p.name != ".complete.json")  # noqa: E731
    assert rel(dst) == rel(src), "every file is there, at the same place"
    assert "resized 11, copied 0, non_jpeg 1, unreadable 1, other 1" in done.stdout
    assert "png_inside.jpg" in done.stdout and "truncated.jpg" in done.stdout
    with Image.open(dst / "train" / "class_000" / "wide.jpg") as img:
        assert (img.format, img.size) == ("JPEG", (48, 24)), "the shorter side at 24, the aspect kept"
    with Image.open(dst / "val" / "class_001" / "val_001_00000.jpg") as img:
        assert img.size == (24, 24)
    for name in ("png_inside.jpg", "truncated.jpg"):
        assert (dst / "train" / "class_000" / name).read_bytes() == (src / "train" / "class_000" / name).read_bytes()
    assert [len(split) for split in load_folder_dataset(dst, num_classes=2)] == \
        [len(split) for split in load_folder_dataset(src, num_classes=2)], "the loaders list the same images"
    assert (dst / ".mobilemamba_exclude.txt").read_text() == "train/class_000/truncated.jpg\n", "still excluded"
    again = _prepare(str(src), str(dst), "--max-side", "24")
    assert again.returncode == 0 and "nothing to do" in again.stdout


def test_small_images_are_copied_byte_for_byte_and_bad_arguments_are_one_line_errors(tmp_path):
    src = _dataset(tmp_path)
    done = _prepare(str(src), str(tmp_path / "big"), "--max-side", "50", "--workers", "1")
    assert "resized 1, copied 10" in done.stdout  # only the 120x60 image has its shorter side above 50
    one = Path("val") / "class_000" / "val_000_00000.jpg"
    assert (tmp_path / "big" / one).read_bytes() == (src / one).read_bytes()
    inside = _prepare(str(src), str(src / "copy"), "--max-side", "24")
    assert inside.returncode == 1 and inside.stdout.strip().startswith("error: resized: DST")
    tiny = _prepare(str(src), str(tmp_path / "x"), "--max-side", "2")
    assert tiny.returncode == 1 and "--max-side must be >= 8" in tiny.stdout
