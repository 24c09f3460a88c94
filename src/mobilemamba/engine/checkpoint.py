"""Training checkpoints: atomic writes, safe reads (weights_only=True), RNG state capture and restore.

A checkpoint is a plain dict of tensors and python primitives (see docs/interfaces.md, "Run directory"),
so `torch.load(..., weights_only=True)` reads it and nothing inside can execute code.
"""
from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import faults

LAST = "last.ckpt"
BEST = "best.ckpt"


class CheckpointSaveError(RuntimeError):
    """A checkpoint could not be written; the previous file at that path is untouched."""


class CheckpointLoadError(RuntimeError):
    """A checkpoint could not be read or does not belong to this run (one-line message)."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save to a temporary file in the same directory, fsync, then os.replace over `path`.

    A crash or a full disk at any moment leaves either the old file or the new one, never a partial one.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_tmp(path)
        with open(tmp, "wb") as f:
            sink = faults.checkpoint_file(f, obj, path, faults.payload_size(obj)) if faults.active() else f
            writer = _ErrorKeepingWriter(sink)
            torch.save(obj, writer)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except (OSError, RuntimeError) as exc:  # RuntimeError: torch's writer turns a failed write into "unexpected pos"
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        cause = writer.error if "writer" in locals() and writer.error is not None else exc
        reason = getattr(cause, "strerror", None) or str(cause).splitlines()[0]
        raise CheckpointSaveError(f"could not write checkpoint {path}: {reason} (the previous checkpoint is intact)") from exc


class _ErrorKeepingWriter:
    """The file torch.save writes through; keeps the OSError of a failed write (ENOSPC, EROFS, EIO...), which
    torch's zip writer would otherwise report only as "unexpected pos"."""

    def __init__(self, f: Any):
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self._f.flush()


def _remove_stale_tmp(path: Path) -> None:
    """Temporary files left by a writer killed mid-save (kill -9, OOM): never read, only deleted."""
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        try:
            stale.unlink()
        except OSError:
            pass


def load_file(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only=True, on CPU); any failure is one CheckpointLoadError line."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointLoadError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused a global: the file would run code
        lines = [ln.strip() for ln in str(exc).splitlines() if "GLOBAL" in ln or "Unsupported" in ln]
        first = lines[0] if lines else type(exc).__name__
        raise CheckpointLoadError(
            f"refused checkpoint {path}: it holds pickled Python objects other than tensors and plain containers "
            f"(loading it would run code; nothing was executed): {first[:200]}"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - truncated zip, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointLoadError(f"cannot read checkpoint {path}: {first[:300]}") from exc
    if not isinstance(obj, dict):
        raise CheckpointLoadError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict")
    return obj


# ----------------------------------------------------------------------------------------------- RNG
def capture_rng() -> dict[str, Any]:
    """This process's RNG states as weights_only-loadable values (numpy's array becomes a tensor)."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np.asarray(np_state[1], dtype=np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _as_tuple(value: Any) -> Any:
    """random.setstate needs tuples back (a list may have come through serialization)."""
    if isinstance(value, list):
        return tuple(_as_tuple(v) for v in value)
    return value


def restore_rng(state: dict[str, Any]) -> None:
    random.setstate(_as_tuple(state["python"]))
    npst = state["numpy"]
    np.random.set_state(
        (npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"], npst["cached_gaussian"])
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ----------------------------------------------------------------------------------------------- identity
def check_same_run(saved_cfg: dict[str, Any], cfg: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume a run dir that holds another experiment/model/dataset shape."""
    checks = [
        ("name", saved_cfg.get("name"), cfg.get("name")),
        ("model.name", _get(saved_cfg, "model.name"), _get(cfg, "model.name")),
        ("model.img_size", _get(saved_cfg, "model.img_size"), _get(cfg, "model.img_size")),
        ("model.kwargs", _get(saved_cfg, "model.kwargs"), _get(cfg, "model.kwargs")),
        ("data.num_classes", _get(saved_cfg, "data.num_classes"), _get(cfg, "data.num_classes")),
    ]
    for key, old, new in checks:
        if old != new:
            raise CheckpointLoadError(
                f"{key}: {run_dir} holds a run with {key}={old!r}, this command has {new!r}; "
                f"use another hydra.run.dir (or name=...) or resume=never in an empty dir"
            )


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(d, dict):
            return None
        d = d.get(part)  # type: ignore[assignment]
    return d
