"""Reading ``data`` and ``aug`` config groups (plain dicts or OmegaConf DictConfigs) with recipe defaults."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

from .batch_randaug import KERNELS as RANDAUG_KERNELS  # auto: Triton on CUDA tensors, torch ops otherwise
from .folder import DatasetError

# nvJPEG's share of JPEGs for the GPU's hardware decoder (A100/H100/H200); DALI 2.x defaults to 0.65 (0.9 in
# some 2.x releases); 0.9 leaves the CPU threads, the scarce resource at 16 cores per GPU, only ~10% of the Huffman
# decoding (docs/results.md#hw-decoder).
DALI_HW_DECODER_LOAD = 0.9

# "folder" is an alias of "torch"; "auto" is "dali" on a CUDA device when DALI is installed, else "torch"
LOADERS = ("auto", "torch", "folder", "dali", "synthetic")
# where the DALI loader runs RandAugment: on the device batch in torch (batch_randaug.py), or in DALI's pipeline
DALI_RANDAUGS = ("torch", "dali")


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
    dali_threads: Optional[int] = None  # None or 0: the cores of this process / local ranks
    # DALI pipeline / nvJPEG knobs (documented in conf/data/imagenet.yaml); only dali_prefetch and
    # dali_roi_decode also apply to CPU decoding, the others go to the ``mixed`` (GPU) decoders alone
    dali_prefetch: int = 4  # prefetch_queue_depth; the older key ``prefetch`` is read when this one is absent
    dali_hw_decoder_load: float = DALI_HW_DECODER_LOAD
    dali_preallocate_width_hint: int = 5980  # NVIDIA's ImageNet example (largest ImageNet image); 0 = none
    dali_preallocate_height_hint: int = 6430
    dali_roi_decode: bool = True  # decode only the random crop (False: decode whole, then crop + resize)
    dali_zero_copy: bool = True  # GPU outputs handed to torch on its stream via DLPack (False: host-synced copy)
    dali_randaug: str = "torch"  # torch: batched on the device after DALI (batch_randaug.py) | dali: in the pipeline
    dali_thread: Optional[bool] = None  # hand-off + torch tail in a background thread; None (auto): see auto_thread
    randaug_kernels: str = "auto"  # the batched RandAugment's kernels: auto (Triton on CUDA) | triton | torch

    @classmethod
    def from_cfg(cls, data_cfg: Any) -> "DataParams":
        d = to_dict(data_cfg)
        # the config files name the synthetic sizes train_size / val_size
        if "synthetic_size" not in d and d.get("train_size") is not None:
            d["synthetic_size"] = d["train_size"]
        if "synthetic_val_size" not in d and d.get("val_size") is not None:
            d["synthetic_val_size"] = d["val_size"]
        if d.get("dali_prefetch") is None and d.get("prefetch") is not None:
            d["dali_prefetch"] = d["prefetch"]
        kw = {k: _typed(k, d[k]) for k in cls.__dataclass_fields__ if k in d and d[k] is not None}
        p = cls(**kw)
        if p.loader not in LOADERS:
            raise DatasetError(f"data.loader must be one of {', '.join(LOADERS)}, got {p.loader!r}")
        if p.loader != "synthetic" and not p.root:
            raise DatasetError(f"data.root is not set (needed by data.loader={p.loader})")
        if p.dali_device not in ("auto", "gpu", "cpu"):
            raise DatasetError(f"data.dali_device must be auto, gpu or cpu, got {p.dali_device!r}")
        if p.dali_randaug not in DALI_RANDAUGS:
            raise DatasetError(f"data.dali_randaug must be torch or dali, got {p.dali_randaug!r}")
        if p.randaug_kernels not in RANDAUG_KERNELS:
            raise DatasetError(f"data.randaug_kernels must be one of {', '.join(RANDAUG_KERNELS)}, "
                               f"got {p.randaug_kernels!r}")
        if p.num_classes is not None and int(p.num_classes) < 1:
            raise DatasetError(f"data.num_classes must be >= 1, got {p.num_classes}")
        if not 0.0 <= p.dali_hw_decoder_load <= 1.0:
            raise DatasetError(f"data.dali_hw_decoder_load must be in [0, 1], got {p.dali_hw_decoder_load}")
        for key, low in (("dali_prefetch", 1), ("dali_threads", 0), ("dali_preallocate_width_hint", 0),
                         ("dali_preallocate_height_hint", 0)):  # fmt: skip
            value = getattr(p, key)
            if value is not None and value < low:
                raise DatasetError(f"data.{key} must be >= {low}, got {value}")
        return p

    @property
    def prefetch(self) -> int:
        """The older name of :attr:`dali_prefetch`."""
        return self.dali_prefetch

    def dali_options(self) -> dict:
        """Keyword arguments of ``build_dali_loaders`` for the DALI knobs."""
        return dict(
            dali_device=self.dali_device,
            num_threads=self.dali_threads,
            prefetch=self.dali_prefetch,
            hw_decoder_load=self.dali_hw_decoder_load,
            preallocate_hint=(self.dali_preallocate_width_hint, self.dali_preallocate_height_hint),
            roi_decode=self.dali_roi_decode,
            zero_copy=self.dali_zero_copy,
            randaug=self.dali_randaug,
            thread=self.dali_thread,
            randaug_kernels=self.randaug_kernels,
        )


# the DALI knobs are checked and converted here (the other keys keep their values as given)
_INT_KEYS = ("dali_threads", "dali_prefetch", "dali_preallocate_width_hint", "dali_preallocate_height_hint")
_BOOL_KEYS = ("dali_roi_decode", "dali_zero_copy", "dali_thread")


def _typed(key: str, value: Any) -> Any:
    """``value`` as the type of ``data.<key>`` (one-line :class:`DatasetError` when it is not one)."""
    try:
        if key in _INT_KEYS:
            if isinstance(value, bool) or float(value) != int(float(value)):
                raise ValueError
            return int(float(value))
        if key == "dali_hw_decoder_load":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if key in _BOOL_KEYS:
            if key == "dali_thread" and isinstance(value, str) and value.lower() == "auto":
                return None
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            if not isinstance(value, (bool, int)) or value not in (0, 1):
                raise ValueError
            return bool(value)
    except (TypeError, ValueError, OverflowError):
        kind = "an integer" if key in _INT_KEYS else "true or false" if key in _BOOL_KEYS else "a number"
        kind += " (or auto)" if key == "dali_thread" else ""
        raise DatasetError(f"data.{key} must be {kind}, got {value!r}") from None
    return value
