"""Write small datasets as JPEG folders (``ROOT/train/<class>/*.jpg``, ``ROOT/val/<class>/*.jpg``).

Each writer is idempotent: it builds the folder in a temporary sibling, renames it into place and leaves a
``.complete.json`` stamp with its parameters; a second call with the same parameters does nothing (so all
ranks of a job, or repeated ``make demo`` runs, may call it).

CLI::

    python -m mobilemamba.data.prepare synthetic ROOT [--classes 4 --per-class-train 16 --per-class-val 8 --size 48]
    python -m mobilemamba.data.prepare fashion-mnist ROOT [--per-class N] [--val-per-class M] [--source DIR]
    python -m mobilemamba.data.prepare resized SRC DST --max-side N [--quality 90 --workers 8]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import tempfile
import urllib.request
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np
from PIL import Image

from .folder import DatasetError, is_image_file

STAMP = ".complete.json"
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian package dataset-fashion-mnist
FASHION_MNIST_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "val": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_CLASSES = (
    "0_tshirt_top", "1_trouser", "2_pullover", "3_dress", "4_coat",
    "5_sandal", "6_shirt", "7_sneaker", "8_bag", "9_ankle_boot",
)  # fmt: skip


def _is_complete(root: Path, params: dict) -> bool:
    stamp = root / STAMP
    if not stamp.is_file():
        return False
    try:
        return json.loads(stamp.read_text()) == params
    except ValueError:
        return False


def _write_atomically(root: Path, params: dict, write: Callable[[Path], None]) -> Path:
    """Run ``write(tmp_dir)`` and move the result to ``root`` (replacing a stale or partial folder)."""
    if _is_complete(root, params):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.tmp", dir=root.parent))
    try:
        write(tmp)
        (tmp / STAMP).write_text(json.dumps(params, sort_keys=True))
        if _is_complete(root, params):  # another process finished first
            return root
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return root


# ---------------------------------------------------------------- synthetic


def synthetic_image(label: int, classes: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """An HxWx3 uint8 image whose class shows in its colour and stripe direction, under noise.

    Class ``c`` has hue ``c / classes`` and stripes at angle ``c * 180° / classes``; brightness, phase, stripe
    frequency and per-pixel noise vary per image. Both cues survive crops, flips and RandAugment, so a tiny
    model learns the task in a few epochs.
    """
    hue = label / classes
    base = np.array([0.5 + 0.5 * np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)])  # a colour wheel
    angle = np.pi * label / classes
    yy, xx = np.mgrid[0:size, 0:size] / size
    freq = rng.uniform(3.0, 5.0)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * freq * (xx * np.cos(angle) + yy * np.sin(angle)) + rng.uniform(0, 6.3))
    img = base[None, None, :] * (0.55 + 0.45 * stripes[..., None]) * rng.uniform(0.7, 1.0)
    img = img + rng.normal(0.0, 0.06, img.shape)
    return (np.clip(img, 0, 1) * 255).astype(np.uint8)


def make_synthetic_jpeg_folder(
    root: str | os.PathLike,
    classes: int = 4,
    per_class_train: int = 16,
    per_class_val: int = 8,
    size: int = 48,
    seed: int = 0,
    *,
    num_classes: Optional[int] = None,
) -> Path:
    """Write a learnable ``classes``-class JPEG folder at ``root`` once; returns ``root``."""
    classes = int(num_classes if num_classes is not None else classes)
    if classes < 1 or per_class_train < 1 or per_class_val < 1 or size < 8:
        raise DatasetError(
            f"make_synthetic_jpeg_folder: need classes, per_class_train, per_class_val >= 1 and size >= 8, got "
            f"{classes}, {per_class_train}, {per_class_val}, {size}"
        )
    params = dict(kind="synthetic", classes=classes, per_class_train=per_class_train,
                  per_class_val=per_class_val, size=size, seed=seed)  # fmt: skip

    def write(tmp: Path) -> None:
        rng = np.random.default_rng(seed)
        for split, n in (("train", per_class_train), ("val", per_class_val)):
            for c in range(classes):
                d = tmp / split / f"class_{c:03d}"
                d.mkdir(parents=True)
                for i in range(n):
                    img = synthetic_image(c, classes, size, rng)
                    Image.fromarray(img).save(d / f"{split}_{c:03d}_{i:05d}.jpg", quality=92)

    return _write_atomically(Path(root), params, write)


# ---------------------------------------------------------------- Fashion-MNIST

# A subset shipped with the package, so that the demo needs no network: the first 300 train and the first 50 test
# images of each class in the files' order (what `make demo` uses), as an xz-compressed .npz; licence and source
# in fashion_mnist_demo.LICENSE beside it. The checksum covers the arrays, not the compressed bytes.
FASHION_MNIST_EMBEDDED = Path(__file__).with_name("fashion_mnist_demo.npz.xz")
FASHION_MNIST_EMBEDDED_PER_CLASS = {"train": 300, "val": 50}
FASHION_MNIST_EMBEDDED_SHA256 = "039ceef7772797ea02900404d0480da2048b8ebd1a4b4d984774d80bd2355217"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class Split:
    """Images (N x 28 x 28 uint8), their labels and their index in the dataset's file, class by class."""

    images: np.ndarray
    labels: np.ndarray
    index: np.ndarray

    def first_per_class(self, limit: Optional[int]) -> "Split":
        keep = _first_per_class(self.labels, limit)
        return Split(self.images[keep], self.labels[keep], self.index[keep])


def _first_per_class(labels: np.ndarray, limit: Optional[int]) -> np.ndarray:
    """Positions of the first ``limit`` images of each class (all with None), class by class."""
    return np.concatenate([np.flatnonzero(labels == c)[:limit] for c in range(len(FASHION_MNIST_CLASSES))])


def _read_idx(path: Path) -> np.ndarray:
    """An IDX (MNIST format) array from a .gz file."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _read_files(folder: Path, limits: dict[str, Optional[int]]) -> dict[str, Split]:
    """The first ``limits[split]`` images per class from the four .gz files in ``folder``."""
    out = {}
    for split, names in FASHION_MNIST_FILES.items():
        img_path, lbl_path = (folder / name for name in names)
        for path in (img_path, lbl_path):
            if not path.is_file():
                raise DatasetError(f"Fashion-MNIST file {path} is missing")
        labels = _read_idx(lbl_path)
        index = _first_per_class(labels, limits[split])
        out[split] = Split(_read_idx(img_path)[index], labels[index], index)
    return out


def subset_sha256(splits: dict[str, Split]) -> str:
    """sha256 over the images, labels and indices of train then val, as raw bytes (indices little-endian int64)."""
    digest = hashlib.sha256()
    for split in SPLITS:
        s = splits[split]
        for array in (s.images.astype(np.uint8), s.labels.astype(np.uint8), s.index.astype("<i8")):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


def write_embedded_subset(source: str | os.PathLike, path: str | os.PathLike = FASHION_MNIST_EMBEDDED) -> str:
    """Write the shipped subset file from a folder with the four .gz files; returns its checksum."""
    splits = _read_files(Path(source), FASHION_MNIST_EMBEDDED_PER_CLASS)
    arrays = {f"{split}_{field}": getattr(s, field) for split, s in splits.items() for field in ("images", "labels", "index")}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    Path(path).write_bytes(lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME))
    return subset_sha256(splits)


def read_embedded_subset(path: str | os.PathLike = FASHION_MNIST_EMBEDDED) -> dict[str, Split]:
    """The shipped subset, checked against its recorded checksum."""
    try:
        with np.load(io.BytesIO(lzma.decompress(Path(path).read_bytes()))) as npz:
            splits = {split: Split(*(npz[f"{split}_{field}"] for field in ("images", "labels", "index")))
                      for split in SPLITS}
    except (OSError, lzma.LZMAError, KeyError, ValueError) as e:
        raise DatasetError(f"cannot read the Fashion-MNIST subset shipped with the package ({path}): {e}") from None
    if subset_sha256(splits) != FASHION_MNIST_EMBEDDED_SHA256:
        raise DatasetError(f"{path} does not match its recorded checksum (a damaged copy: reinstall the package)")
    return splits


def _fits_embedded(limits: dict[str, Optional[int]]) -> bool:
    return all(limits[s] is not None and limits[s] <= n for s, n in FASHION_MNIST_EMBEDDED_PER_CLASS.items())


def _download(cache: Path, limits: dict[str, Optional[int]]) -> Path:
    """The four .gz files downloaded into ``cache`` (kept for the next call); the error names the other sources."""
    cache.mkdir(parents=True, exist_ok=True)
    for name in (n for pair in FASHION_MNIST_FILES.values() for n in pair):
        path = cache / name
        if path.is_file():
            continue
        try:
            urllib.request.urlretrieve(FASHION_MNIST_URL + name, path.with_suffix(".part"))
        except OSError as e:
            wanted = f"{limits['train'] or 'all'} train / {limits['val'] or 'all'} val images per class"
            shipped = "{train} / {val}".format(**FASHION_MNIST_EMBEDDED_PER_CLASS)
            raise DatasetError(
                f"{wanted} is more than the subset shipped with the package ({shipped}) and the download of "
                f"{FASHION_MNIST_URL + name} failed ({e}): give a local copy with --source DIR (a folder with the "
                f"four .gz files) or install the Debian package dataset-fashion-mnist ({FASHION_MNIST_DIR})"
            ) from None
        os.replace(path.with_suffix(".part"), path)
    return cache


def fashion_mnist_splits(limits: dict[str, Optional[int]], source: Optional[Path], cache: Path) -> dict[str, Split]:
    """The images to write, from the first of: ``source``; the shipped subset (when ``limits`` fit in it); the
    Debian package folder; a download into ``cache``."""
    if source is None and _fits_embedded(limits):
        return {split: s.first_per_class(limits[split]) for split, s in read_embedded_subset().items()}
    if source is None:
        source = FASHION_MNIST_DIR if FASHION_MNIST_DIR.is_dir() else _download(cache, limits)
    return _read_files(source, limits)


def prepare_fashion_mnist(
    root: str | os.PathLike,
    per_class: Optional[int] = None,
    val_per_class: Optional[int] = None,
    source: str | os.PathLike | None = None,
) -> Path:
    """Write Fashion-MNIST (28x28 grey) as a JPEG folder: train 60k → ``train/``, test 10k → ``val/``.

    ``per_class`` keeps the first N train images of each class (``val_per_class`` the first M val images,
    default: the same N); ``None`` keeps all. Images come from ``source``, else from the subset shipped with the
    package when it holds enough (300 train / 50 val per class), else from ``/usr/share/datasets/fashion-mnist``
    (Debian package ``dataset-fashion-mnist``), else from a download; every source writes the same files.
    """
    root = Path(root)
    val_per_class = val_per_class if val_per_class is not None else per_class
    params = dict(kind="fashion-mnist", per_class=per_class, val_per_class=val_per_class)
    limits = {"train": per_class, "val": val_per_class}

    def write(tmp: Path) -> None:
        splits = fashion_mnist_splits(limits, Path(source) if source else None, root.parent / ".fashion_mnist_download")
        for split, s in splits.items():
            for name in FASHION_MNIST_CLASSES:
                (tmp / split / name).mkdir(parents=True)
            for image, label, i in zip(s.images, s.labels, s.index):
                Image.fromarray(image).save(tmp / split / FASHION_MNIST_CLASSES[label] / f"{split}_{i:05d}.jpg",
                                            quality=95)

    return _write_atomically(root, params, write)


# ---------------------------------------------------------------- resized copy


@dataclass
class ResizeReport:
    """What `resize_jpeg_folder` did: file counts by outcome, and the paths of the files it could not re-encode."""

    counts: Counter = field(default_factory=Counter)  # resized | copied (small enough) | non_jpeg | unreadable | other
    problems: dict = field(default_factory=lambda: {"non_jpeg": [], "unreadable": []})
    done_before: bool = False  # DST already held this copy (same source and parameters): nothing written

    def format(self, limit: int = 50) -> str:
        if self.done_before:
            return "already prepared with these parameters: nothing to do"
        lines = [", ".join(f"{k} {self.counts[k]}" for k in ("resized", "copied", "non_jpeg", "unreadable", "other"))]
        for status, paths in self.problems.items():
            if paths:
                lines.append(f"{status} ({len(paths)}), copied as they are:")
                lines += [f"  {path}" for path in paths[:limit]] + ([f"  ... and {len(paths) - limit} more"] if len(paths) > limit else [])
        return "\n".join(lines)


def resize_jpeg(src: str, dst: str, max_side: int, quality: int) -> str:
    """Write ``src`` to ``dst``: a JPEG whose shorter side exceeds ``max_side`` re-encoded at that shorter side
    (Lanczos, same mode, EXIF and ICC profile kept); anything else copied byte for byte. Returns the outcome."""
    try:
        with Image.open(src) as img:
            fmt, (w, h) = img.format, img.size
            if fmt not in ("JPEG", "MPO"):  # MPO: a camera JPEG with extra frames
                img.load()  # readable?
                status = "non_jpeg"
            elif min(w, h) <= max_side:
                img.load()
                status = "copied"
            else:
                scale = max_side / min(w, h)
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                img.draft(img.mode, (2 * size[0], 2 * size[1]))  # decode at >= 2x the target: fast, nothing lost
                out = img.resize(size, Image.Resampling.LANCZOS)
                extra = {k: img.info[k] for k in ("exif", "icc_profile") if img.info.get(k)}
                out.save(dst, "JPEG", quality=quality, **extra)
                return "resized"
    except Exception:  # noqa: BLE001 - PIL raises many kinds for a broken file; it is reported, not fatal
        status = "unreadable"
    shutil.copyfile(src, dst)
    return status


def _resize_star(args: tuple[str, str, int, int]) -> str:
    return resize_jpeg(*args)


def resize_jpeg_folder(src: str | os.PathLike, dst: str | os.PathLike, max_side: int, quality: int = 90,
                       workers: int = 0) -> ResizeReport:
    """A copy of the folder dataset ``src`` at ``dst`` (``train/val/<class>/...`` and the root's files kept) with
    every JPEG's shorter side at most ``max_side``: less for the loader to decode per image. Files that are not
    JPEGs, or cannot be read, are copied as they are and reported. Written atomically, once per parameters."""
    from .check import list_files  # the loaders' view of a folder dataset

    src, dst = Path(src).resolve(), Path(dst).resolve()
    if max_side < 8 or not 1 <= quality <= 100:
        raise DatasetError(f"resized: --max-side must be >= 8 and --quality in [1, 100], got {max_side}, {quality}")
    if dst == src or src in dst.parents:
        raise DatasetError(f"resized: DST {dst} must be outside SRC {src}")
    files = [Path(path).relative_to(src) for _, _, path in list_files(src)]
    params = dict(kind="resized", source=str(src), max_side=max_side, quality=quality)
    report = ResizeReport(done_before=_is_complete(dst, params))

    def write(tmp: Path) -> None:
        for rel in {f.parent for f in files}:
            (tmp / rel).mkdir(parents=True, exist_ok=True)
        jobs = [(str(src / f), str(tmp / f), max_side, quality) for f in files if is_image_file(f.name)]
        if workers > 1 and len(jobs) > 64:
            with ProcessPoolExecutor(workers) as ex:
                statuses = list(ex.map(_resize_star, jobs, chunksize=64))
        else:
            statuses = [resize_jpeg(*job) for job in jobs]
        for (path, *_), status in zip(jobs, statuses):
            report.counts[status] += 1
            if status in report.problems:
                report.problems[status].append(path)
        others = [f for f in files if not is_image_file(f.name)]
        others += [Path(p.name) for p in src.iterdir() if p.is_file() and p.name != STAMP]
        for f in others:  # no image extension (no loader lists it), and the root's files (e.g. the exclusion list)
            shutil.copyfile(src / f, tmp / f)
            report.counts["other"] += 1

    _write_atomically(dst, params, write)
    return report


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mobilemamba.data.prepare", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    s = sub.add_parser("synthetic", help="a generated, learnable JPEG folder")
    s.add_argument("root")
    s.add_argument("--classes", type=int, default=4)
    s.add_argument("--per-class-train", type=int, default=16)
    s.add_argument("--per-class-val", type=int, default=8)
    s.add_argument("--size", type=int, default=48)
    s.add_argument("--seed", type=int, default=0)
    f = sub.add_parser("fashion-mnist", help="Fashion-MNIST as a JPEG folder")
    f.add_argument("root")
    f.add_argument("--per-class", type=int, default=None, help="train images per class (default: all 6000)")
    f.add_argument("--val-per-class", type=int, default=None, help="val images per class (default: --per-class)")
    f.add_argument("--source", default=None,
                   help="folder with the four .gz files (default: the subset shipped with the package when it holds "
                        f"enough, else {FASHION_MNIST_DIR} from Debian's dataset-fashion-mnist, else a download)")
    r = sub.add_parser("resized", help="a copy of a JPEG folder dataset with the shorter side of every image <= N")
    r.add_argument("src")
    r.add_argument("dst")
    r.add_argument("--max-side", type=int, required=True, help="largest shorter side kept, in pixels")
    r.add_argument("--quality", type=int, default=90, help="JPEG quality of the re-encoded images")
    r.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    args = ap.parse_args(argv)
    try:
        if args.what == "synthetic":
            out = make_synthetic_jpeg_folder(
                args.root, args.classes, args.per_class_train, args.per_class_val, args.size, args.seed
            )
        elif args.what == "resized":
            report = resize_jpeg_folder(args.src, args.dst, args.max_side, args.quality, args.workers)
            print(report.format())
            out = Path(args.dst)
        else:
            out = prepare_fashion_mnist(args.root, args.per_class, args.val_per_class, args.source)
    except DatasetError as e:
        print(f"error: {e}")
        return 1
    print(f"ready: {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
