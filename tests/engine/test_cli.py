"""The real command lines: train.py experiment=smoke, the same under torchrun (2 ranks, gloo), eval.py, bad input."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
PY = sys.executable
QUICK = ["trainer.max_iters_per_epoch=4", "trainer.progress=false"]


def _run(args, env, cwd=REPO, timeout=570):  # generous: a loaded 2-core box is 5-10x slower than an idle one
    t0, cpu0 = time.time(), _children_cpu()
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    proc.seconds = time.time() - t0  # type: ignore[attr-defined]
    proc.cpu_seconds = _children_cpu() - cpu0  # type: ignore[attr-defined]
    return proc


def _children_cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, cache_dir):
    """`python train.py experiment=smoke` exactly as a user types it (plus a run dir)."""
    import os

    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MOBILEMAMBA_RUN_DIR")}
    env.update(MOBILEMAMBA_CACHE=str(cache_dir), OMP_NUM_THREADS="2")
    run_dir = tmp_path_factory.mktemp("smoke_run")
    proc = _run([PY, str(REPO / "train.py"), "experiment=smoke", f"hydra.run.dir={run_dir}"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"experiment=smoke took {proc.seconds:.1f} s ({proc.cpu_seconds:.1f} CPU-s)")
    return run_dir, env, proc


@pytest.mark.slow
def test_smoke_experiment_trains_evaluates_and_writes_the_run_dir(smoke_run):
    run_dir, _, proc = smoke_run
    for name in ("last.ckpt", "best.ckpt", "metrics.jsonl", "metrics.csv", "run.json", "curves.png", ".hydra/config.yaml"):
        assert (run_dir / name).exists(), name
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["status"] == "finished" and summary["epochs_done"] == 2 and summary["iterations"] == 16
    assert summary["best_top1_raw"] is not None and summary["best_top1_ema"] is not None
    assert summary["final"]["ema"]["fused_agree"] and summary["final"]["raw"]["fused_agree"]
    kinds = {json.loads(line)["kind"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()}
    assert kinds == {"train", "eval", "event"}
    # under two minutes on 2 idle cores = 240 CPU-seconds (CPU time, not wall time: CI boxes may be busy)
    assert proc.cpu_seconds < 240


@pytest.mark.slow
def test_eval_py_on_the_fused_checkpoint(smoke_run, tmp_path):
    run_dir, env, _ = smoke_run
    proc = _run([PY, str(REPO / "eval.py"), "model=smoke", "data=smoke", f"checkpoint={run_dir / 'last.ckpt'}",
                 "ema=true", "fuse=true", "throughput.batch_size=8", f"hydra.run.dir={tmp_path}"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["fused"] is True and res["fused_agree"] is True and res["fused_max_abs_diff"] < 1e-3
    assert res["images"] == 32 and 0 <= res["top1"] <= res["top5"] <= 100 and res["throughput"] > 0
    assert "max |diff|" in proc.stdout
    # the EMA numbers agree with what training measured at the end (unfused, same val set)
    final = json.loads((run_dir / "run.json").read_text())["final"]["ema"]
    assert res["top1"] == pytest.approx(final["fused_top1"])


@pytest.mark.slow
def test_eval_py_takes_the_image_size_and_class_count_from_the_checkpoint(smoke_run, tmp_path, cache_dir):
    """The smoke model trained at 32 px on 4 classes, evaluated as a T2 of its size on any image folder: no
    model.img_size (T2's default is 192) and no data.num_classes (data=folder has none) on the command line."""
    run_dir, env, _ = smoke_run
    proc = _run([PY, str(REPO / "eval.py"), "model=t2", "+model.kwargs.embed_dim=[16,32,48]", "+model.kwargs.depth=[1,1,1]",
                 "data=folder", f"data.root={cache_dir / 'smoke'}", f"checkpoint={run_dir / 'last.ckpt'}", "fuse=false",
                 "throughput.iters=1", f"hydra.run.dir={tmp_path}"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads((tmp_path / "results.json").read_text())
    assert res["img_size"] == 32 and res["images"] == 32
    assert "mobilemamba_t2 @32 (raw, unfused)" in proc.stdout


@pytest.mark.slow
def test_eval_py_reads_a_published_style_state_dict(smoke_run, tmp_path):
    run_dir, env, _ = smoke_run
    ck = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)
    torch.save({"net": ck["model"], "net_E": ck["ema"]}, tmp_path / "published.pth")
    proc = _run([PY, str(REPO / "eval.py"), "model=smoke", "data=smoke", f"checkpoint={tmp_path / 'published.pth'}",
                 "ema=true", "fuse=false", "throughput.iters=1", f"hydra.run.dir={tmp_path}"], env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((tmp_path / "results.json").read_text())["fused"] is False


@pytest.mark.slow
def test_torchrun_two_ranks_share_one_run_dir(tmp_path, subprocess_env):
    """The default run dir outputs/<name> is the same on both ranks: one dir, one set of files, global batch 2x.
    A warning that holds for every rank is shown once (fp16 on CPU, from each rank's model; a long warm-up, from
    the config)."""
    torchrun = Path(PY).with_name("torchrun")
    args = [str(torchrun), "--nproc_per_node=2", "--master_addr=127.0.0.1", f"--master_port={_free_port()}",
            str(REPO / "train.py"), "experiment=smoke", "name=ddp_smoke", "trainer.epochs=1", *QUICK,
            "trainer.amp=fp16", "sched.warmup_epochs=0.5"]
    proc = _run(args, subprocess_env, cwd=tmp_path, timeout=570)
    assert proc.returncode == 0, proc.stderr[-4000:]
    output = proc.stdout + proc.stderr
    assert output.count("trainer.amp=fp16 needs CUDA") == 1, output[-4000:]
    assert output.count("sched.warmup_epochs=0.5 is longer than a third of the run") == 1, output[-4000:]
    assert [p.name for p in (tmp_path / "outputs").iterdir()] == ["ddp_smoke"]
    run_dir = tmp_path / "outputs" / "ddp_smoke"
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 32 and summary["status"] == "finished"
    evals = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [e["images"] for e in evals if e["kind"] == "eval"] == [32], "every val image counted once over 2 ranks"
    ck = torch.load(run_dir / "last.ckpt", map_location="cpu", weights_only=True)
    assert ck["rng"]["world_size"] == 2 and len(ck["rng"]["states"]) == 2
    # rerunning the same command finds the finished run and resumes it (nothing left to do)
    proc = _run(args, subprocess_env, cwd=tmp_path, timeout=570)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert any(json.loads(line).get("event") == "resume" for line in (run_dir / "metrics.jsonl").read_text().splitlines())


@pytest.mark.slow
def test_a_config_error_is_one_line_naming_the_key(tmp_path, subprocess_env):
    proc = _run([PY, str(REPO / "train.py"), "experiment=smoke", "optim.lr=-0.1", f"hydra.run.dir={tmp_path}"], subprocess_env)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: optim.lr must be a positive number, got -0.1"
    assert not (tmp_path / "last.ckpt").exists()
