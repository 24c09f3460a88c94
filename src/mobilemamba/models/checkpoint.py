"""Loading checkpoints — ours and the published reference's — strictly and safely.

Never unpickles code (`weights_only=True`); every failure is one `CheckpointError` line naming the file and
what is wrong (missing, truncated, code in the pickle, another variant, another number of classes).
`checkpoint_filter_fn` does the same for timm's own pretrained loading (`pretrained=True` with a file).
"""
from __future__ import annotations

import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
import torch.nn as nn

RAW_KEYS = ("model", "net", "state_dict")  # where a training checkpoint keeps the weights
EMA_KEYS = ("ema", "net_E", "model_ema", "state_dict_ema")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel / torch.compile
HEAD_PREFIXES = ("head.", "head_dist.")  # the classifier(s)
FIRST_CONV = "patch_embed.0.c.weight"  # the stem conv, adapted by timm to another number of input channels


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message is one line."""


def load_state_dict_file(path: str | os.PathLike) -> Any:
    """torch.load with weights_only=True, mapping every failure to a one-line CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"refusing to load {path}: it is not a plain tensor checkpoint "
                              f"(weights_only=True rejected it: {first})") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"cannot read checkpoint {path}: truncated or corrupt ({first})") from None


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _strip_wrappers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        for prefix in WRAPPER_PREFIXES:
            while key.startswith(prefix):
                key = key[len(prefix):]
        out[key] = value
    return out


def extract_state_dict(obj: Any, ema: bool = False, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The model weights in a loaded checkpoint: a raw state dict, or one held under a known key."""
    if not ema and _is_state_dict(obj):
        return _strip_wrappers(obj)
    if isinstance(obj, Mapping):
        for key in EMA_KEYS if ema else RAW_KEYS:
            if key in obj and _is_state_dict(obj[key]):
                return _strip_wrappers(obj[key])
        if ema and _is_state_dict(obj):
            raise CheckpointError(f"{source} holds a raw state dict, not EMA weights (use ema=false)")
        wanted = "|".join(EMA_KEYS if ema else RAW_KEYS)
        found = ", ".join(sorted(map(str, obj.keys()))[:8])
        raise CheckpointError(f"{source} has no {'EMA ' if ema else ''}weights under {wanted} (keys: {found})")
    raise CheckpointError(f"{source} is a {type(obj).__name__}, not a state dict")


def _describe_mismatch(model_name: str, source: str, missing: list[str], unexpected: list[str],
                       shapes: list[tuple[str, tuple, tuple]]) -> str:
    parts = []
    if shapes:
        shown = "; ".join(f"{k}: checkpoint {list(a)} vs model {list(b)}" for k, a, b in shapes[:3])
        parts.append(f"{len(shapes)} shape mismatches ({shown})")
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    hint = ""
    head = [s for s in shapes if s[0].startswith("head.")]
    if head and len(shapes) == len(head) and not missing and not unexpected:
        hint = f" — the checkpoint's head has {head[0][1][0]} classes, the model {head[0][2][0]}"
    elif shapes or missing or unexpected:
        hint = " — is it a checkpoint of another variant?"
    return f"{source} does not fit {model_name}: " + ", ".join(parts) + hint


def _equal_shapes(key: str, theirs: tuple, ours: tuple) -> bool:
    return theirs == ours


def _check_fit(own: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], model_name: str, source: str,
               same_shape: Callable[[str, tuple, tuple], bool] = _equal_shapes) -> None:
    """Raise one CheckpointError line unless `state` has exactly `own`'s keys with shapes `same_shape` accepts."""
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [(k, tuple(state[k].shape), tuple(v.shape)) for k, v in own.items()
              if k in state and not same_shape(k, tuple(state[k].shape), tuple(v.shape))]
    if missing or unexpected or shapes:
        raise CheckpointError(_describe_mismatch(model_name, source, missing, unexpected, shapes))


def load_into(model: nn.Module, state: Mapping[str, torch.Tensor], source: str = "checkpoint",
              model_name: str | None = None) -> None:
    """Strict load: every model tensor present with the same shape, every checkpoint tensor consumed."""
    _check_fit(model.state_dict(), state, model_name or type(model).__name__, source)
    model.load_state_dict(state, strict=True)


def load_checkpoint(model: nn.Module, path: str | os.PathLike, ema: bool = False,
                    model_name: str | None = None) -> None:
    """Load a checkpoint file (raw state dict, or ours/the reference's training checkpoint) into `model`."""
    state = extract_state_dict(load_state_dict_file(path), ema=ema, source=str(path))
    load_into(model, state, source=str(path), model_name=model_name)


@dataclass(frozen=True)
class CheckpointLayout:
    """What a checkpoint says about the model it fits."""

    num_classes: int  # rows of its head (0: it has none, timm's convention for a headless model)
    fused: bool  # BN already folded (`head.weight`, no BN statistics)
    img_size: int | None  # the training resolution its recorded config names (this project's); None otherwise


def checkpoint_layout(path: str | os.PathLike, ema: bool = False) -> CheckpointLayout:
    """Class count and fusion read from the weights; image size from the config this project's checkpoints record."""
    obj = load_state_dict_file(path)
    state = extract_state_dict(obj, ema=ema, source=str(path))
    num_classes = 0
    fused = not any(k.endswith(".bn.running_var") for k in state)
    for key, is_fused in (("head.l.weight", False), ("head.weight", True)):
        if key in state:
            num_classes, fused = int(state[key].shape[0]), is_fused
            break
    config = obj.get("config") if isinstance(obj, Mapping) else None
    model_cfg = config.get("model") if isinstance(config, Mapping) else None
    img_size = model_cfg.get("img_size") if isinstance(model_cfg, Mapping) else None
    return CheckpointLayout(num_classes, fused, int(img_size) if img_size else None)

def unwrap_weights(obj: Any, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The weights of a published or training checkpoint: the EMA ones (`net_E`, `ema`, ...) where the file holds
    them, since the published accuracies are the EMA weights' (spec §6.1), else the raw ones; a raw state dict as
    it is."""
    has_ema = isinstance(obj, Mapping) and any(_is_state_dict(obj.get(k)) for k in EMA_KEYS)
    return extract_state_dict(obj, ema=has_ema, source=source)


def _head(state: Mapping[str, torch.Tensor]) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in state.items() if k.startswith(HEAD_PREFIXES)}


def _same_or_other_input_channels(key: str, theirs: tuple, ours: tuple) -> bool:
    """Shapes equal, or the stem conv's differing in input channels only: timm adapts that conv after the
    filter (in_chans != 3)."""
    if key == FIRST_CONV:
        return theirs[:1] + theirs[2:] == ours[:1] + ours[2:]
    return _equal_shapes(key, theirs, ours)


def checkpoint_filter_fn(state_dict: Any, model: nn.Module) -> dict[str, torch.Tensor]:
    """timm's `pretrained_filter_fn` for a published checkpoint (or one of ours): unwraps it (`unwrap_weights`)
    and returns a state dict that loads strictly into `model`.

    A head that does not fit (another number of classes, no classifier, another pooling width, with or without
    the distillation head) is replaced by the model's own fresh one; every other tensor must fit, else one
    CheckpointError line.
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    name, source = cfg.get("architecture") or type(model).__name__, str(cfg.get("file") or "pretrained checkpoint")
    state = unwrap_weights(state_dict, source=source)
    own = model.state_dict()
    if _head(state) != _head(own):
        state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
        state.update({k: v for k, v in own.items() if k.startswith(HEAD_PREFIXES)})
    _check_fit(own, state, name, source, same_shape=_same_or_other_input_channels)
    return state
