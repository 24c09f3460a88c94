"""Scan a folder dataset for files the loaders would choke on, and write an exclusion list both loaders honour.

    python -m mobilemamba.data.check ROOT [--write-exclude [FILE]] [--exclude-non-jpeg] [--workers N] [--quick]

Every file under ``ROOT/<split>/<class>/`` is classified: ``ok`` (a readable JPEG), ``non_jpeg`` (readable but
not JPEG: the torch loader reads it, DALI decodes JPEG on the GPU and other formats only on the CPU),
``unreadable`` (PIL cannot open or fully decode it: truncated, corrupt, not an image at all) or ``ignored``
(no image extension; no loader lists it). Only with ``--write-exclude`` (or ``--out``) does it write the exclusion
list (default ``ROOT/.mobilemamba_exclude.txt``, picked up automatically by ``build_loaders``): the unreadable
files, plus the non-JPEG ones with ``--exclude-non-jpeg``. Exit status: 0 when nothing is unreadable, 1 otherwise.
"""
from __future__ import annotations

import argparse
import os
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from PIL import Image

from .folder import EXCLUDE_FILENAME, DatasetError, is_image_file


def classify(path: str, quick: bool = False) -> str:
    """``ok``, ``non_jpeg`` or ``unreadable`` (``quick`` checks the structure without a full decode)."""
    try:
        with Image.open(path) as img:
            fmt = img.format
            if quick:
                img.verify()
            else:
                img.convert("RGB")
    except Exception:
        return "unreadable"
    return "ok" if fmt in ("JPEG", "MPO") else "non_jpeg"  # MPO: a camera JPEG with extra frames


def _classify_star(args: tuple[str, bool]) -> str:
    return classify(*args)


@dataclass
class CheckReport:
    root: Path
    counts: dict = field(default_factory=lambda: defaultdict(Counter))  # (split, class) -> Counter of status
    problems: dict = field(default_factory=lambda: defaultdict(list))  # status -> [path]

    def split_counts(self) -> dict[str, Counter]:
        out: dict[str, Counter] = defaultdict(Counter)
        for (split, _), c in self.counts.items():
            out[split].update(c)
            out[split]["classes"] += 1
        return out


def list_files(root: Path) -> list[tuple[str, str, str]]:
    """``(split, class, path)`` for every regular file under ``root/<split>/<class>/`` (hidden ones skipped)."""
    if not root.is_dir():
        raise DatasetError(f"dataset root {root} does not exist or is not a directory")
    out = []
    for split in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for cls in sorted(p for p in split.iterdir() if p.is_dir() and not p.name.startswith(".")):
            for dirpath, dirnames, filenames in os.walk(cls):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                out.extend((split.name, cls.name, os.path.join(dirpath, f)) for f in sorted(filenames)
                           if not f.startswith("."))  # fmt: skip
    if not out:
        raise DatasetError(f"no files under {root}/<split>/<class>/")
    return out


def check_dataset(root: str | os.PathLike, workers: int = 0, quick: bool = False) -> CheckReport:
    """Classify every file (``workers`` > 1 decodes in that many processes)."""
    root = Path(root)
    files = list_files(root)
    images = [(s, c, p) for s, c, p in files if is_image_file(p)]
    jobs = [(p, quick) for _, _, p in images]
    if workers > 1 and len(jobs) > 256:
        with ProcessPoolExecutor(workers) as ex:
            statuses = list(ex.map(_classify_star, jobs, chunksize=256))
    else:
        statuses = [classify(p, quick) for p, _ in jobs]
    report = CheckReport(root=root)
    for (split, cls, path), status in zip(images, statuses):
        report.counts[(split, cls)][status] += 1
        if status != "ok":
            report.problems[status].append(path)
    for split, cls, path in files:
        if not is_image_file(path):
            report.counts[(split, cls)]["ignored"] += 1
            report.problems["ignored"].append(path)
    return report


def write_exclude_file(report: CheckReport, path: str | os.PathLike, non_jpeg: bool = False) -> list[str]:
    """Write the unreadable (and optionally non-JPEG) files, relative to the list's folder when inside it."""
    path = Path(path)
    excluded = sorted(report.problems["unreadable"] + (report.problems["non_jpeg"] if non_jpeg else []))
    base = path.parent.resolve()
    lines = []
    for p in excluded:
        ap = Path(p).resolve()
        lines.append(str(ap.relative_to(base)) if ap.is_relative_to(base) else str(ap))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("# written by python -m mobilemamba.data.check; one file per line\n" + "".join(
        line + "\n" for line in lines))  # fmt: skip
    return excluded


def format_report(report: CheckReport, per_class: bool) -> str:
    cols = ("ok", "non_jpeg", "unreadable", "ignored")
    lines = [f"{'split':<12}{'classes':>8}" + "".join(f"{c:>12}" for c in cols)]
    for split, c in sorted(report.split_counts().items()):
        lines.append(f"{split:<12}{c['classes']:>8}" + "".join(f"{c[k]:>12}" for k in cols))
    if per_class:
        lines.append("")
        lines.append(f"{'split/class':<40}" + "".join(f"{c:>12}" for c in cols))
        for (split, cls), c in sorted(report.counts.items()):
            lines.append(f"{split + '/' + cls:<40}" + "".join(f"{c[k]:>12}" for k in cols))
    for status in ("unreadable", "non_jpeg", "ignored"):
        paths = report.problems[status]
        if paths:
            lines.append(f"\n{status} ({len(paths)}):")
            lines.extend(f"  {p}" for p in paths[:50])
            if len(paths) > 50:
                lines.append(f"  ... and {len(paths) - 50} more")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m mobilemamba.data.check", description=__doc__.split("\n")[0])
    ap.add_argument("root")
    ap.add_argument("--write-exclude", nargs="?", const="", default=None, metavar="FILE",
                    help=f"write the exclusion list (default ROOT/{EXCLUDE_FILENAME})")  # fmt: skip
    ap.add_argument("--out", default=None, help="same as --write-exclude FILE")
    ap.add_argument("--exclude-non-jpeg", action="store_true", help="also exclude readable non-JPEG images")
    ap.add_argument("--workers", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--quick", action="store_true", help="check file structure only (no full decode)")
    ap.add_argument("--per-class", action="store_true", help="print one line per class")
    args = ap.parse_args(argv)
    try:
        report = check_dataset(args.root, workers=args.workers, quick=args.quick)
    except DatasetError as e:
        print(f"error: {e}")
        return 2
    n_classes = len(report.counts)
    print(format_report(report, per_class=args.per_class or n_classes <= 40))
    out = args.out or args.write_exclude
    if out is not None or args.write_exclude is not None:
        path = Path(out) if out else Path(args.root) / EXCLUDE_FILENAME
        excluded = write_exclude_file(report, path, non_jpeg=args.exclude_non_jpeg)
        print(f"\nwrote {len(excluded)} excluded files to {path}")
    elif report.problems["unreadable"]:
        print(f"\nnothing written: run again with --write-exclude to write ROOT/{EXCLUDE_FILENAME}, the list of files "
              f"both loaders skip")
    return 1 if report.problems["unreadable"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
