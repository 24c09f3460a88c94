"""The training engine: `run_training(cfg, run_dir)` is everything train.py does; `run_eval` is eval.py.

Exit codes of train.py (documented in README): 0 done, 1 crash or checkpoint write failure (disk full),
2 bad config/checkpoint/data (one-line error),
3 stopped after trainer.max_nonfinite non-finite updates, 75 preempted (last.ckpt written; rerun to resume),
130 Ctrl-C (SIGINT: last.ckpt written as for 75; a second Ctrl-C stops at once).
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig
from omegaconf.errors import OmegaConfBaseException

from .checkpoint import CheckpointLoadError, CheckpointSaveError
from .config import ConfigError, lr_plan, resolve_phases, validate_train_config
from .preempt import EXIT_INTERRUPTED, EXIT_PREEMPTED, Preempted

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_NONFINITE = 3

log = logging.getLogger("mobilemamba.engine")

__all__ = [
    "run_training", "run_eval", "ConfigError", "CheckpointLoadError", "CheckpointSaveError", "Preempted",
    "EXIT_PREEMPTED", "EXIT_INTERRUPTED", "EXIT_NONFINITE", "EXIT_BAD_INPUT", "lr_plan", "resolve_phases", "validate_train_config",
]


def prepare_generated_data(cfg: DictConfig, is_main: bool) -> None:
    """data.generate: write the synthetic JPEG folder once (the data layer writes it atomically)."""
    gen = cfg.data.get("generate")
    root = cfg.data.get("root")
    if not gen or not root or Path(str(root)).exists() or not is_main:
        return
    from mobilemamba.data.prepare import make_synthetic_jpeg_folder

    make_synthetic_jpeg_folder(str(root), classes=int(gen.classes), per_class_train=int(gen.per_class_train),
                               per_class_val=int(gen.per_class_val), size=int(gen.size))  # atomic, written once


def error_exit(kind: str, exc: BaseException, code: int) -> None:
    """One line on stderr, and the same in the run's log file (not on the console a second time)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    print(f"error: {text}", file=sys.stderr, flush=True)
    record = log.makeRecord(log.name, logging.ERROR, __file__, 0, "%s: %s", (kind, text), None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)
    raise SystemExit(code)


def run_training(cfg: DictConfig, run_dir: str | os.PathLike) -> dict[str, Any]:
    """Validate → join the process group → build → run all phases. Ends the process with a documented
    exit code on bad input (2), non-finite stop (3) or preemption (75)."""
    from . import distributed as D
    from .trainer import NonFiniteError, Trainer

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    try:
        warnings_found = validate_train_config(cfg, world_size)
    except (ConfigError, OmegaConfBaseException) as exc:  # OmegaConf: a mandatory value (???) left unset, ...
        error_exit("config", exc, EXIT_BAD_INPUT)
    env = D.init_distributed(str(cfg.trainer.get("device", "auto")))
    D.quiet_other_ranks(env.rank)
    for text in warnings_found if env.is_main else ():
        log.warning("%s", text)
    try:
        prepare_generated_data(cfg, env.is_main)
        D.barrier()
        trainer = Trainer(cfg, run_dir, env).build()
        return trainer.run()
    except Preempted as exc:
        log.warning("%s", exc)
        raise SystemExit(exc.exit_code)
    except KeyboardInterrupt:
        log.warning("stopped at once by a second SIGINT; last.ckpt holds the last checkpoint written")
        raise SystemExit(EXIT_INTERRUPTED)
    except NonFiniteError as exc:
        error_exit("non-finite", exc, EXIT_NONFINITE)
    except CheckpointSaveError as exc:
        error_exit(type(exc).__name__, exc, EXIT_FAILED)
    except (ConfigError, CheckpointLoadError, OmegaConfBaseException) as exc:
        error_exit(type(exc).__name__, exc, EXIT_BAD_INPUT)
    except Exception as exc:
        if type(exc).__name__ in ("DatasetError", "DistillConfigError", "TeacherError", "CheckpointError"):
            error_exit(type(exc).__name__, exc, EXIT_BAD_INPUT)
        raise
    finally:
        D.destroy_distributed()
    return {}


def run_eval(cfg: DictConfig, out_dir: str | os.PathLike, explicit: Iterable[str] = ()) -> dict[str, Any]:
    """eval.py's work; `explicit`: the keys set on the command line (they win over what the checkpoint records)."""
    from .evalrun import evaluate_checkpoint

    try:
        return evaluate_checkpoint(cfg, Path(out_dir), set(explicit))
    except (ConfigError, CheckpointLoadError, OmegaConfBaseException) as exc:
        error_exit(type(exc).__name__, exc, EXIT_BAD_INPUT)
    except Exception as exc:
        if type(exc).__name__ in ("DatasetError", "CheckpointError"):
            error_exit(type(exc).__name__, exc, EXIT_BAD_INPUT)
        raise
    return {}
