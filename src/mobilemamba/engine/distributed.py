"""Distributed helpers: process-group setup from torchrun (or SLURM) env vars, seeding, collectives.

Every helper is a no-op (or the identity) in a single process, so the loop reads the same either way.
"""
from __future__ import annotations

import logging
import os
import random
import warnings
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


# `log.warning(..., extra=RANK_SPECIFIC)`: a warning about this rank alone, shown by every rank (see quiet_other_ranks)
RANK_SPECIFIC = {"rank_specific": True}


class _OwnProblemsOnly(logging.Filter):
    """What a rank other than 0 shows: errors, and warnings about itself alone."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.ERROR or bool(getattr(record, "rank_specific", False))


def quiet_other_ranks(rank: int) -> None:
    """Rank 0 alone logs to the console and to the run's log file, every warning once; other ranks show their
    errors and the warnings logged with `extra=RANK_SPECIFIC` (e.g. an unreadable image of their shard)."""
    if rank == 0:
        return
    warnings.simplefilter("ignore")  # library warnings are the same on every rank: rank 0 shows them
    root = logging.getLogger()
    for h in list(root.handlers):
        if isinstance(h, logging.FileHandler):
            root.removeHandler(h)
        else:
            h.setLevel(logging.WARNING)
            h.addFilter(_OwnProblemsOnly())


def _export_slurm_env() -> None:
    """Inside a multi-task submitit/SLURM job (no torchrun), derive RANK/WORLD_SIZE/MASTER_* via submitit."""
    if "RANK" in os.environ or os.environ.get("SUBMITIT_EXECUTOR") != "slurm":
        return
    if int(os.environ.get("SLURM_NTASKS", "1")) <= 1:
        return
    try:
        import submitit

        submitit.helpers.TorchDistributedEnvironment().export()
    except Exception as exc:  # noqa: BLE001 - a plain single-process run is still possible
        raise RuntimeError(f"SLURM job with several tasks but its rendezvous could not be set up: {exc}") from exc


def resolve_device(preference: str, local_rank: int) -> torch.device:
    """`auto` → this rank's GPU when CUDA is available, else CPU."""
    if preference not in ("auto", "cpu", "cuda") and not preference.startswith("cuda:"):
        raise ValueError(f"trainer.device must be auto|cpu|cuda|cuda:N, got {preference!r}")
    if preference == "cpu" or (preference == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError(f"trainer.device={preference} but CUDA is not available")
    if preference.startswith("cuda:"):
        return torch.device(preference)
    return torch.device("cuda", local_rank)


def init_distributed(device_preference: str = "auto", timeout_min: float = 30.0) -> DistEnv:
    """Join the process group described by the env (torchrun: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_*).

    NCCL on CUDA, gloo on CPU. Without those variables this is a single-process run.
    """
    _export_slurm_env()
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"backend": backend, "timeout": timedelta(minutes=timeout_min)}
        if device.type == "cuda":
            kwargs["device_id"] = device
        store = _per_attempt_store(timedelta(minutes=timeout_min))
        if store is not None:
            kwargs.update(store=store, rank=rank, world_size=world_size)
        dist.init_process_group(**kwargs)
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def _per_attempt_store(timeout: timedelta) -> Any:
    """Under torchrun the agent's TCPStore outlives a failed worker group (static rendezvous reuses it as is), so
    a restarted group would read the dead group's keys (gloo/NCCL peer addresses) and hang or connect to dead
    peers. A prefix per restart attempt keeps the attempts apart. None outside torchrun's agent store."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or "MASTER_ADDR" not in os.environ:
        return None
    base = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=timeout)
    return dist.PrefixStore(f"mobilemamba/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", base)


def destroy_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices). Callers pass seed + rank for per-rank streams."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """Deterministic kernels (bit-exact reruns) or cuDNN autotuning (speed)."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = enabled
        torch.backends.cudnn.benchmark = not enabled


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def barrier() -> None:
    if _active():
        dist.barrier()


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """In-place sum over ranks (returns the tensor)."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast_buffers(module: torch.nn.Module, src: int = 0) -> None:
    """Rank `src`'s buffers (BN running stats) on every rank. DDP does this only at the start of the next
    forward, so between an optimizer step and that forward each rank holds its own local statistics."""
    if not _active():
        return
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for buf in module.buffers():
        by_dtype.setdefault(buf.dtype, []).append(buf)
    for bufs in by_dtype.values():  # one collective per dtype, not one per BN layer
        flat = torch.cat([b.detach().reshape(-1) for b in bufs])
        dist.broadcast(flat, src)
        with torch.no_grad():
            for b, v in zip(bufs, flat.split([b.numel() for b in bufs])):
                b.copy_(v.view_as(b))


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """In-place max over ranks: a flag raised on any rank is raised on all."""
    if _active():
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_gather_object(obj: Any) -> list[Any]:
    """One entry per rank (just [obj] in a single process)."""
    if not _active():
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s object on every rank."""
    if not _active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
