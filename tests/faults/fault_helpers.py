"""Shared by the fault-injection tests: the tiny run, launching it (in-process, as a process, under torchrun),
killing it, and comparing where it ends with where an uninterrupted run ends."""
from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
TORCHRUN = str(Path(PY).with_name("torchrun"))

# 2 epochs x 4 updates of 8 images at 32 px, last.ckpt every 2 updates, one val batch, bit-exact kernels
UPDATES_PER_EPOCH = 4
EPOCHS = 2
TOTAL_UPDATES = UPDATES_PER_EPOCH * EPOCHS
CKPT_EVERY = 2
TINY = [
    "experiment=smoke", "data.batch_size=8", f"trainer.max_iters_per_epoch={UPDATES_PER_EPOCH}",
    f"trainer.epochs={EPOCHS}", "trainer.eval_max_batches=1", "trainer.final_eval=false",
    "trainer.deterministic=true", "trainer.progress=false", "trainer.log_every=1",
    f"trainer.ckpt_every_iters={CKPT_EVERY}",
]
# the torchrun runs: rank 1 alone gets a NaN loss at update 3 (the skip must happen on both ranks)
DDP_EXTRA = ["trainer.debug.nan_at=[3]", "trainer.debug.nan_rank=1"]
PROC_TIMEOUT = 240  # seconds any one launched process may take on a busy 2-core box


# ------------------------------------------------------------------------------------------------ launching
def clean_env(cache: Path, **extra: str) -> dict[str, str]:
    """The environment of a launched run: no inherited rank or fault variables, loopback only, one thread."""
    drop = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "MOBILEMAMBA_RUN_DIR")
    env = {k: v for k, v in os.environ.items() if k not in drop and not k.startswith("MOBILEMAMBA_FAULT_")}
    env.update(MOBILEMAMBA_CACHE=str(cache), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env.update(extra)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_cmd(run_dir: Path, *overrides: str) -> list[str]:
    return [PY, str(REPO / "train.py"), *TINY, f"hydra.run.dir={run_dir}", *overrides]


def torchrun_cmd(run_dir: Path, *overrides: str, max_restarts: int = 0) -> list[str]:
    return [TORCHRUN, "--nnodes=1", "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={free_port()}",
            f"--max-restarts={max_restarts}", "--monitor-interval=0.2",
            str(REPO / "train.py"), *TINY, *DDP_EXTRA, f"hydra.run.dir={run_dir}", *overrides]


@dataclass
class Finished:
    code: int
    stderr: str
    seconds: float


class Launched:
    """A run started in a process group of its own, so the test can always tear the whole tree down."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path):
        self.log_path = log
        self._log = open(log, "w")
        self.t0 = time.time()
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def wait(self, timeout: float = PROC_TIMEOUT) -> Finished:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree()
            raise AssertionError(f"run did not end within {timeout} s; log: {self.tail()}")
        finally:
            self._log.close()
        return Finished(code, self.log_path.read_text(errors="replace"), time.time() - self.t0)

    def signal_group(self, sig: signal.Signals) -> None:
        """`sig` to the whole process group of the run, as SLURM, `timeout`, container runtimes and a terminal's
        Ctrl-C send it: the trainer and its loader's worker processes (or torchrun) all receive it."""
        os.killpg(self.proc.pid, sig)

    def kill_tree(self) -> None:
        """SIGKILL to the process group this test created and to its descendants (torchrun's workers live in
        process groups of their own), each by its id."""
        pids = _descendants(self.proc.pid)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=30)

    def tail(self, n: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]


def _descendants(root: int) -> list[int]:
    """Ids of every live descendant of process `root` (read from /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def launch(args: list[str], env: dict[str, str], log: Path) -> Launched:
    return Launched(args, env, log)


def run_to_end(args: list[str], env: dict[str, str], log: Path, timeout: float = PROC_TIMEOUT) -> Finished:
    return launch(args, env, log).wait(timeout)


def wait_for(cond: Callable[[], Any], launched: Launched, timeout: float = PROC_TIMEOUT, what: str = "") -> Any:
    """Poll `cond` every 20 ms until it returns something truthy (or the run ended / time ran out)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = cond()
        if value:
            return value
        if launched.proc.poll() is not None:
            raise AssertionError(f"run ended (code {launched.proc.returncode}) before {what}; log: {launched.tail()}")
        time.sleep(0.02)
    launched.kill_tree()
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------------------------------------ run dir
def records(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut by kill -9 (it is truncated away on resume)
            continue
    return out


def last_logged_update(run_dir: Path) -> int:
    its = [r["iteration"] for r in records(run_dir) if r["kind"] == "train"]
    return max(its) if its else 0


def load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


def checkpoint_iteration(run_dir: Path) -> int:
    """Update count stored in last.ckpt (0 when there is none yet)."""
    last = run_dir / "last.ckpt"
    return int(load(last)["iteration"]) if last.exists() else 0


def assert_every_checkpoint_loads(run_dir: Path) -> list[str]:
    """Every *.ckpt in the run dir reads back with weights_only=True and holds a model."""
    names = sorted(p.name for p in run_dir.glob("*.ckpt"))
    for name in names:
        ck = load(run_dir / name)
        assert isinstance(ck, dict) and "model" in ck and "iteration" in ck, name
    return names


def train_trace(run_dir: Path) -> list[tuple]:
    """What the metrics say about training, without the wall-clock fields."""
    return [(r["iteration"], r["epoch"], r["loss"], r["lr"], r["skipped"]) for r in records(run_dir) if r["kind"] == "train"]


def eval_trace(run_dir: Path) -> list[tuple]:
    return [(r["epoch"], r["top1"], r["top5"], r["val_loss"], r.get("ema_top1"), r.get("ema_val_loss"))
            for r in records(run_dir) if r["kind"] == "eval"]


def assert_same_end(run_dir: Path, reference: Path) -> None:
    """Weights, EMA, optimizer state, position and metrics are bit for bit those of the uninterrupted run."""
    a, b = load(run_dir / "last.ckpt"), load(reference / "last.ckpt")
    for key in ("model", "ema"):
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(a[key][name], b[key][name]), f"{key}.{name} differs from the uninterrupted run"
    sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for idx in sa:
        for k in sa[idx]:
            assert torch.equal(torch.as_tensor(sa[idx][k]), torch.as_tensor(sb[idx][k])), f"optimizer state {idx}.{k} differs"
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    for key in ("iteration", "epoch", "best", "last_eval", "nonfinite"):
        assert a[key] == b[key], f"{key}: {a[key]} != {b[key]}"
    assert train_trace(run_dir) == train_trace(reference), "train metrics differ from the uninterrupted run"
    assert eval_trace(run_dir) == eval_trace(reference), "eval metrics differ from the uninterrupted run"
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["status"] == "finished" and summary["iterations"] == TOTAL_UPDATES


def stale_tmp_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in run_dir.glob(".*.tmp-*"))


# ------------------------------------------------------------------------------------------------ the table
@dataclass
class FaultTable:
    """Rows of the fault table (docs/results.md#faults): one per trial, grouped by fault when printed."""

    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, fault: str, survived: bool, redone: int | None = 0, data_lost: str = "none") -> None:
        self.rows.append({"fault": fault, "survived": survived, "redone": redone, "data_lost": data_lost})

    @contextlib.contextmanager
    def trial(self, fault: str):
        """Records one trial: survived unless the block raised; the block may set row['redone'] / row['data_lost']."""
        row: dict[str, Any] = {"fault": fault, "survived": False, "redone": None, "data_lost": "none"}
        self.rows.append(row)
        try:
            yield row
        except BaseException:
            row["data_lost"] = "see failure"
            raise
        row["survived"] = True

    def markdown(self) -> str:
        lines = ["| fault | trials | survived | work lost (iterations redone) | data lost |",
                 "|---|---|---|---|---|"]
        order: list[str] = []
        for r in self.rows:
            if r["fault"] not in order:
                order.append(r["fault"])
        for fault in order:
            rs = [r for r in self.rows if r["fault"] == fault]
            redone = [r["redone"] for r in rs if r["redone"] is not None]
            lost = sorted({r["data_lost"] for r in rs})
            work = "n/a" if not redone else (f"{min(redone)}" if min(redone) == max(redone) else f"{min(redone)}-{max(redone)}")
            lines.append(f"| {fault} | {len(rs)} | {sum(bool(r['survived']) for r in rs)}/{len(rs)} | {work} | {', '.join(lost)} |")
        return "\n".join(lines)


TABLE = FaultTable()


# ------------------------------------------------------------------------------------------------ in-process
def compose_cfg(cache: Path, *overrides: str):
    """The composed train config of `train.py TINY... overrides` (no process start-up)."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, f"data.root={cache / 'smoke'}", *overrides])


def run_inproc(cache: Path, run_dir: Path, *overrides: str) -> int:
    """Exit code of one training run in this process (0 when it returns normally)."""
    from mobilemamba.engine import run_training

    cfg = compose_cfg(cache, *overrides)
    run_dir.mkdir(parents=True, exist_ok=True)  # as Hydra does before train.py's main runs
    try:
        run_training(cfg, run_dir)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]
