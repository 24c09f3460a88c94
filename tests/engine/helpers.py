"""Run the engine in-process on tiny configs (no interpreter start-up per run)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from hydra import compose, initialize_config_dir
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[2]

# 2 epochs x 3 updates of 8 images at 32 px, one val batch, deterministic kernels
FAST = [
    "experiment=smoke", "data.batch_size=8", "trainer.max_iters_per_epoch=3", "trainer.eval_max_batches=1",
    "trainer.final_eval=false", "trainer.deterministic=true", "trainer.progress=false", "trainer.log_every=1",
]


def compose_cfg(cache: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[*FAST, f"data.root={cache / 'smoke'}", *overrides])


def run(cache: Path, run_dir: Path, *overrides: str) -> int:
    """Exit code of one training run (0 when it returns normally)."""
    from mobilemamba.engine import run_training

    cfg = compose_cfg(cache, *overrides)
    try:
        run_training(cfg, run_dir)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def assert_same_state(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Model, EMA and optimizer state bit for bit."""
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for idx in sa:
        for k in sa[idx]:
            assert torch.equal(torch.as_tensor(sa[idx][k]), torch.as_tensor(sb[idx][k])), f"optimizer state {idx}.{k} differs"
    assert a["iteration"] == b["iteration"] and a["epoch"] == b["epoch"]


class NoHostRead(TorchDispatchMode):
    """Fails on any read of a tensor's value by the host (aten._local_scalar_dense: .item(), and the implicit ones,
    such as a tensor passed where torch takes a number), which on CUDA would wait for the device."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        assert func is not torch.ops.aten._local_scalar_dense.default, "a host read of a device value"
        return func(*args, **(kwargs or {}))
