"""Reading ``data`` and ``aug`` config groups (plain dicts or OmegaConf DictConfigs) with recipe defaults."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .folder import DatasetError

# "folder" is an alias of "torch"; "auto" is "dali" on a CUDA device when DALI is installed, else "torch"
LOADERS = ("auto", "torch", "folder", "dali", "synthetic")


def to_dict(cfg: Any) -> dict:
    """A plain dict from None, a Mapping or an OmegaConf DictConfig (interpolations resolved)."""
    if cfg is None:
        return {}
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return dict(OmegaConf.to_container(cfg, resolve=True))
    except ImportError:  # pragma: no cover - omegaconf is a dependency
        pass
    if isinstance(cfg, Mapping):
        return dict(cfg)
    raise DatasetError(f"expected a dict or DictConfig for the data/aug config, got {type(cfg).__name__}")


@dataclass(frozen=True)
class AugParams:
    """Train augmentation of the published recipe (timm defaults when a key is missing)."""

    auto_augment: Optional[str] = "rand-m9-mstd0.5-inc1"
    reprob: float = 0.25
    remode: str = "pixel"
    recount: int = 1
    train_interpolation: str = "random"
    hflip: float = 0.5
    scale: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    color_jitter: float = 0.4

    @classmethod
    def from_cfg(cls, aug_cfg: Any) -> "AugParams":
        d = to_dict(aug_cfg)
        kw: dict[str, Any] = {}
        for key in cls.__dataclass_fields__:
            if key in d and d[key] is not None:
                kw[key] = d[key]
            elif key == "auto_augment" and key in d:  # an explicit null disables RandAugment
                kw[key] = None
        for key in ("scale", "ratio"):
            if key in kw:
                v = tuple(float(x) for x in kw[key])
                if len(v) != 2 or v[0] > v[1]:
                    raise DatasetError(f"aug.{key} must be [low, high], got {list(v)}")
                kw[key] = v
        if kw.get("auto_augment") in ("", "none", "None"):
            kw["auto_augment"] = None
        if kw.get("remode", "pixel") not in ("pixel", "rand", "const"):
            raise DatasetError(f"aug.remode must be pixel, rand or const, got {kw['remode']!r}")
        return cls(**kw)


@dataclass(frozen=True)
class DataParams:
    """The ``data`` group keys the data layer reads (others, e.g. batch sizes, belong to the engine)."""

    loader: str = "torch"
    root: Optional[str] = None
    train_split: str = "train"
    val_split: str = "val"
    num_classes: Optional[int] = None
    workers: int = 8
    pin_memory: bool = True
    exclude_file: Optional[str] = None
    max_per_class: Optional[int] = None
    synthetic_size: int = 1280
    synthetic_val_size: Optional[int] = None
    dali_device: str = "auto"  # auto: gpu when the target device is CUDA, else cpu
    dali_threads: Optional[int] = None
    prefetch: int = 2

    @classmethod
    def from_cfg(cls, data_cfg: Any) -> "DataParams":
        d = to_dict(data_cfg)
        # the config files name the synthetic sizes train_size / val_size
        if "synthetic_size" not in d and d.get("train_size") is not None:
            d["synthetic_size"] = d["train_size"]
        if "synthetic_val_size" not in d and d.get("val_size") is not None:
            d["synthetic_val_size"] = d["val_size"]
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d and d[k] is not None}
        p = cls(**kw)
        if p.loader not in LOADERS:
            raise DatasetError(f"data.loader must be one of {', '.join(LOADERS)}, got {p.loader!r}")
        if p.loader != "synthetic" and not p.root:
            raise DatasetError(f"data.root is not set (needed by data.loader={p.loader})")
        if p.dali_device not in ("auto", "gpu", "cpu"):
            raise DatasetError(f"data.dali_device must be auto, gpu or cpu, got {p.dali_device!r}")
        if p.num_classes is not None and int(p.num_classes) < 1:
            raise DatasetError(f"data.num_classes must be >= 1, got {p.num_classes}")
        return p
