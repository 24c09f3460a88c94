"""Run by test_ddp_step.py under torchrun (gloo, CPU): the trainer's update on the SAME batches on every rank, for the
eager, the compiled (aot_eager) and the captured (capture=update, no graph on CPU) paths; the last rank's loss is NaN
at update 3. Rank 0 writes {path: [[loss, kd, bad, skipped, stop] per update] per rank} as JSON to argv[1].

With identical batches on every rank, DDP's averaged gradient is each rank's own, so a 2-rank run must give the
losses of a 1-rank run; no update reads a value back to the host (mixup, forward, DDP, compiled or captured step).
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
UPDATES = 4
PATHS = {
    "eager": [],
    "compiled": ["trainer.compile=true", "trainer.compile_backend=aot_eager"],
    "captured": ["trainer.capture=update"],
}


def main(out: str, cache: str) -> None:
    import torch
    from hydra import compose, initialize_config_dir

    from mobilemamba.engine import distributed as D
    from mobilemamba.engine.trainer import Trainer
    from tests.engine.helpers import NoHostRead

    env = D.init_distributed("cpu")
    results = {}
    for name, overrides in PATHS.items():
        torch._dynamo.reset()
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=[
                "experiment=smoke", "data.batch_size=8", "trainer.deterministic=true", "trainer.progress=false",
                f"data.root={cache}/smoke", "trainer.debug.nan_at=[3]", f"trainer.debug.nan_rank={env.world_size - 1}",
                *overrides])
        trainer = Trainer(cfg, tempfile.mkdtemp(), env).build()
        trainer._enter_phase(0)
        D.seed_everything(0)  # the same drop-path and mixup draws on every rank
        g = torch.Generator().manual_seed(1)
        records = []
        for _ in range(UPDATES):
            batch = torch.randn(8, 3, 32, 32, generator=g), torch.randint(0, 4, (8,), generator=g)
            with NoHostRead():
                records.append(trainer._queue_update(iter([batch])).record)
            trainer.update += 1
        results[name] = D.all_gather_object(torch.stack(records).tolist())
    if env.is_main:
        Path(out).write_text(json.dumps(results))
    D.destroy_distributed()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
