"""Fault-injection hooks for tests/faults/. Every hook is inert unless its environment variable is set.

The one place that lists them (the loop and the checkpoint writer call the functions below):

- ``MOBILEMAMBA_FAULT_KILL_AT=N[@R]``   after update N (on rank R only; default every rank) the process sends
  itself SIGKILL, exactly like ``kill -9``: no handler, no flush, no checkpoint.
- ``MOBILEMAMBA_FAULT_EXIT_AT=N[@R]``   after update N (on rank R) the process ends with ``os._exit(13)``: a rank
  that crashes (torchrun sees a failed worker and restarts the group when ``--max-restarts`` allows).
- ``MOBILEMAMBA_FAULT_ONCE=PATH``        the kill/exit above fires only while PATH does not exist, and creates PATH
  just before firing: the restarted group (or a rerun of the same command) then runs clean.
- ``MOBILEMAMBA_FAULT_SAVE_DELAY=S[@N]`` a checkpoint write whose payload is at update >= N (default 0) pauses S
  seconds after half of the temporary file is written: a window to kill the writer mid-write.
- ``MOBILEMAMBA_FAULT_SAVE_ERROR=N[:ERRNO]`` a checkpoint write whose payload is at update >= N fails half-way
  with ``OSError(ERRNO)`` (a name such as ENOSPC, EROFS, EACCES; default ENOSPC): a full or read-only disk.
- ``MOBILEMAMBA_FAULT_NAN_INPUT=N1,N2,...[@R]`` the train batches of those updates (on rank R) are all NaN, so
  activations, BN statistics, loss and gradients go non-finite.

Updates are counted as in checkpoints (``iteration``: optimizer updates done over the whole run, 1-based here).
Config-level hooks (no env var): ``trainer.debug.nan_at`` / ``nan_rank`` (a NaN loss), ``trainer.debug.stop_at``
(SIGTERM to itself), ``trainer.debug.sleep`` (seconds per update).
"""
from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path
from typing import Any, BinaryIO

PREFIX = "MOBILEMAMBA_FAULT_"
CRASH_EXIT_CODE = 13


def active() -> dict[str, str]:
    """The fault variables set in this process (empty in every normal run)."""
    return {k: v for k, v in os.environ.items() if k.startswith(PREFIX)}


def _at(value: str) -> tuple[int, int | None]:
    """'N' or 'N@R' → (N, R or None)."""
    n, _, r = value.partition("@")
    return int(n), (int(r) if r else None)


def _claim_once() -> bool:
    """True when the fault may fire now (no MOBILEMAMBA_FAULT_ONCE, or its marker did not exist yet)."""
    marker = os.environ.get(PREFIX + "ONCE")
    if not marker:
        return True
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\n".encode())
    os.fsync(fd)
    os.close(fd)
    return True


def after_update(update: int, rank: int) -> None:
    """Called by the loop once update `update` is done (and logged), before any checkpoint of it."""
    for name, action in (("KILL_AT", _kill), ("EXIT_AT", _crash)):
        value = os.environ.get(PREFIX + name)
        if not value:
            continue
        n, r = _at(value)
        if update == n and (r is None or r == rank) and _claim_once():
            action()


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # never reached: SIGKILL cannot be caught


def _crash() -> None:
    os._exit(CRASH_EXIT_CODE)


class _FaultyFile:
    """Wraps the temporary checkpoint file: pauses or fails once half of the payload went through."""

    def __init__(self, f: BinaryIO, half: int, delay: float, error: OSError | None):
        self._f, self._half, self._delay, self._error = f, half, delay, error
        self._written = 0
        self._fired = False

    def write(self, data: Any) -> int:
        n = self._f.write(data)
        self._written += n
        if not self._fired and self._written >= self._half:
            self._fired = True
            self._f.flush()
            if self._delay:
                time.sleep(self._delay)
            if self._error is not None:
                raise self._error
        return n

    def flush(self) -> None:
        self._f.flush()

    def fileno(self) -> int:
        return self._f.fileno()


def _errno(name: str) -> int:
    code = getattr(errno, name.upper(), None) if not name.isdigit() else int(name)
    if code is None:
        raise ValueError(f"{PREFIX}SAVE_ERROR: unknown errno name {name!r}")
    return int(code)


def checkpoint_file(f: BinaryIO, payload: Any, path: Path, expected_size: int = 1 << 20) -> BinaryIO:
    """The file object atomic_save writes into: `f` itself unless a SAVE_DELAY / SAVE_ERROR hook applies."""
    delay_v = os.environ.get(PREFIX + "SAVE_DELAY")
    error_v = os.environ.get(PREFIX + "SAVE_ERROR")
    if not (delay_v or error_v):
        return f
    iteration = int(payload.get("iteration", 0)) if isinstance(payload, dict) else 0
    delay = 0.0
    if delay_v:
        s, _, from_n = delay_v.partition("@")
        if iteration >= int(from_n or 0):
            delay = float(s)
    error = None
    if error_v:
        n, _, name = error_v.partition(":")
        if iteration >= int(n):
            code = _errno(name or "ENOSPC")
            error = OSError(code, os.strerror(code), str(path))
    if not delay and error is None:
        return f
    return _FaultyFile(f, max(1, expected_size // 2), delay, error)  # type: ignore[return-value]


def payload_size(payload: Any) -> int:
    """Bytes of tensor data in a checkpoint payload (where 'half of the file' lies)."""
    import torch

    total = 0
    stack = [payload]
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            total += obj.numel() * obj.element_size()
        elif isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
    return total


def poison_batch(images: Any, update: int, rank: int) -> Any:
    """``MOBILEMAMBA_FAULT_NAN_INPUT=N1,N2,...[@R]``: the train batch of those updates (on rank R) becomes all NaN,
    so activations, BN statistics, loss and gradients are non-finite (a realistic bad step, unlike a NaN loss)."""
    value = os.environ.get(PREFIX + "NAN_INPUT")
    if not value:
        return images
    updates, _, r = value.partition("@")
    if update in {int(u) for u in updates.split(",") if u} and (not r or int(r) == rank):
        return images * float("nan")
    return images
