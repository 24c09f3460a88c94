"""Folder datasets in the ImageNet layout: ``ROOT/<split>/<class>/<image>``.

Everything here is pure Python (no decoding): the file lists are shared by the torch and the DALI loaders,
so both see the same classes, the same order and the same exclusions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".ppm", ".pgm", ".tif", ".tiff", ".gif")
JPEG_EXTENSIONS = (".jpg", ".jpeg")
EXCLUDE_FILENAME = ".mobilemamba_exclude.txt"


class DatasetError(Exception):
    """A dataset problem, in one line naming the path or config key at fault."""


@dataclass(frozen=True)
class FolderSplit:
    """One split of a folder dataset: ``samples[i] = (absolute path, class index)``."""

    root: Path
    classes: tuple[str, ...]
    samples: tuple[tuple[str, int], ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.samples)


def is_image_file(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def resolve_split_dir(root: str | os.PathLike, split: str, fallbacks: Sequence[str] = ()) -> Path:
    """``root/split``, else the first existing ``root/<fallback>`` (CIFAR-10 folders name val ``test``)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a directory (data.root)")
    for name in (split, *fallbacks):
        if (root / name).is_dir():
            return root / name
    tried = ", ".join(str(root / n) for n in (split, *fallbacks))
    raise DatasetError(f"dataset split missing: none of {tried} exists")


def list_classes(split_dir: Path) -> tuple[str, ...]:
    """Sorted sub-folder names (hidden folders ignored)."""
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))
    if not classes:
        raise DatasetError(f"no class folders in {split_dir}")
    return tuple(classes)


def list_images(class_dir: Path) -> list[str]:
    """Sorted image files of one class folder (recursively, hidden files ignored)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(class_dir):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(os.path.join(dirpath, f) for f in filenames if not f.startswith(".") and is_image_file(f))
    return sorted(out)


def read_exclude_file(path: str | os.PathLike | None) -> set[str]:
    """Absolute paths listed (one per line, relative to the file's folder or absolute; ``#`` comments)."""
    if path is None:
        return set()
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"exclude file {path} does not exist (data.exclude_file)")
    base = path.parent
    out = set()
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.add(os.path.normpath(line if os.path.isabs(line) else os.path.join(base, line)))
    return out


def default_exclude_file(root: str | os.PathLike) -> Optional[Path]:
    """``ROOT/.mobilemamba_exclude.txt`` when present (written by ``python -m mobilemamba.data.check``)."""
    p = Path(root) / EXCLUDE_FILENAME
    return p if p.is_file() else None


def scan_split(
    split_dir: Path,
    classes: Optional[Sequence[str]] = None,
    exclude: Iterable[str] = (),
    max_per_class: Optional[int] = None,
) -> FolderSplit:
    """List the images of one split; ``classes`` (from the train split) fixes the label order."""
    found = list_classes(split_dir)
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise DatasetError(f"{split_dir} has class folders not in the train split: {', '.join(extra[:5])}")
    excluded = {os.path.normpath(os.path.abspath(p)) for p in exclude}
    samples: list[tuple[str, int]] = []
    for label, name in enumerate(classes):
        class_dir = split_dir / name
        if not class_dir.is_dir():
            continue  # a val split may lack a class; the train split may not (checked below)
        files = [f for f in list_images(class_dir) if os.path.normpath(os.path.abspath(f)) not in excluded]
        if not files:
            raise DatasetError(f"class folder {class_dir} has no (non-excluded) images")
        if max_per_class is not None:
            files = files[: int(max_per_class)]
        samples.extend((os.path.abspath(f), label) for f in files)
    return FolderSplit(root=split_dir, classes=tuple(classes), samples=tuple(samples))


def load_folder_dataset(
    root: str | os.PathLike,
    train_split: str = "train",
    val_split: str = "val",
    num_classes: Optional[int] = None,
    exclude_file: str | os.PathLike | None = None,
    max_per_class: Optional[int] = None,
) -> tuple[FolderSplit, FolderSplit]:
    """Scan train and val splits with all start-up checks; val falls back to ``test`` when ``val`` is absent.

    ``exclude_file=None`` uses ``ROOT/.mobilemamba_exclude.txt`` if present. ``max_per_class`` limits the
    train split only (the first N files per class in sorted order, so it is deterministic).
    """
    train_dir = resolve_split_dir(root, train_split)
    val_dir = resolve_split_dir(root, val_split, fallbacks=("test",) if val_split == "val" else ())
    exclude_path = exclude_file if exclude_file is not None else default_exclude_file(root)
    exclude = read_exclude_file(exclude_path)
    train = scan_split(train_dir, exclude=exclude, max_per_class=max_per_class)
    if num_classes is not None and int(num_classes) != train.num_classes:
        raise DatasetError(
            f"{train_dir} has {train.num_classes} class folders but data.num_classes={int(num_classes)}"
        )
    val = scan_split(val_dir, classes=train.classes, exclude=exclude)
    return train, val
