"""timm's RandAugment policy string (``rand-m9-n2-mstd0.5-mmax10-p0.5-inc1``), shared by both GPU RandAugments
(``batch_randaug.py`` in torch, ``dali_randaug.py`` in DALI ops); importing it needs neither."""
from __future__ import annotations

import re
from dataclasses import dataclass

from .folder import DatasetError


@dataclass(frozen=True)
class RandAugmentSpec:
    magnitude: float = 9.0
    num_layers: int = 2
    magnitude_std: float = 0.5
    magnitude_max: float = 10.0
    prob: float = 0.5


def parse_rand_augment(spec: str) -> RandAugmentSpec:
    """Parse timm's ``rand-m9-n2-mstd0.5-mmax10-p0.5-inc1`` string (only the ``inc1`` op set is supported)."""
    parts = spec.split("-")
    if parts[0] != "rand":
        raise DatasetError(f"aug.auto_augment={spec!r}: the DALI loader supports only timm 'rand-...' policies")
    kw: dict = {}
    inc = False
    for part in parts[1:]:
        m = re.match(r"([a-z]+)([\d.]+)$", part)
        if not m:
            raise DatasetError(f"aug.auto_augment={spec!r}: cannot parse {part!r}")
        key, val = m.group(1), float(m.group(2))
        if key == "m":
            kw["magnitude"] = val
        elif key == "n":
            kw["num_layers"] = int(val)
        elif key == "mstd":  # timm: above 100 means a uniform magnitude in [0, m]
            kw["magnitude_std"] = float("inf") if val > 100 else val
        elif key == "mmax":
            kw["magnitude_max"] = val
        elif key == "p":
            kw["prob"] = val
        elif key == "inc":
            inc = bool(val)
        else:
            raise DatasetError(f"aug.auto_augment={spec!r}: option {key!r} is not supported by the DALI loader")
    if not inc:
        raise DatasetError(f"aug.auto_augment={spec!r}: the DALI loader implements the 'inc1' op set only")
    return RandAugmentSpec(**kw)
