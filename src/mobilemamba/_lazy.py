"""Defer importing wandb until it is used.

timm imports wandb at import time when it is installed (only to offer it to timm's own train script), and
wandb 0.22 takes 20-50 s of CPU to import. Every process that imports this package (train.py, eval.py, bench.py,
the CLIs, each torchrun rank) would pay that even with wandb logging off. A stand-in module makes `import wandb`
cheap; the first attribute looked up on it imports the real wandb, which then replaces it in sys.modules.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any


class _Deferred(types.ModuleType):
    """Stands in for a module until an attribute of it is needed. ``__spec__`` is None, so the import system
    returns it from sys.modules as it is; ``__file__`` is set, because ``inspect.getmodule`` (run by
    torch.library when ops are registered) probes it on every module in sys.modules."""

    def __getattr__(self, attr: str) -> Any:  # only for attributes the stand-in does not have
        return getattr(self._load(), attr)

    def _load(self) -> types.ModuleType:
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return importlib.import_module(self.__name__)


def defer_import(name: str) -> None:
    """Put a stand-in for `name` in sys.modules, unless it is imported (or blocked with None) already or not
    installed."""
    spec = None if name in sys.modules else importlib.util.find_spec(name)
    if spec is None:
        return
    stand_in = _Deferred(name)
    stand_in.__file__ = spec.origin
    sys.modules[name] = stand_in
