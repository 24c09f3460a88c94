"""`python -m mobilemamba.report DIR` turns a tree of run directories into report.md, report.csv and two PNGs.

Most tests fabricate run directories in the engine's format (docs/interfaces.md "Run directory": run.json,
metrics.jsonl, .hydra/config.yaml; eval.py's results.json); the slow one trains a real two-job Hydra multirun.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mobilemamba import published
from mobilemamba.report import (PUBLISHED, collect, decide, find_run_dirs, main, make_report, published_overlays,
                                sampling_error)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------- fabricated runs
def write_run(path: Path, *, model: str = "mobilemamba_t2", name: str | None = None, img_size: int = 128,
              top1: list[float] = (40.0, 55.0, 60.0), ema: list[float] = (35.0, 52.0, 61.0), epochs: int = 3,
              status: str = "finished", kd: bool = False, params: int = 8_770_000, flops: int = 110_000_000,
              summary: bool = True, final_agree: bool = True, dataset: str = "cifar10_jpg", num_classes: int = 10,
              images: int = 10_000, kwargs: dict | None = None, eval_epochs: list[int] | None = None,
              published: dict | None = None) -> Path:
    """A run directory as the engine leaves it after `len(top1)` evaluated epochs (at `eval_epochs`, default
    1, 2, ...), each evaluation on `images` val images."""
    path.mkdir(parents=True, exist_ok=True)
    name = name or model.replace("mobilemamba", "cifar10") + ("_kd" if kd else "")
    recs = [{"kind": "event", "event": "phase", "phase": "main", "epoch": 0, "iteration": 0}]
    for e, t, m in zip(eval_epochs or range(1, len(top1) + 1), top1, ema):
        recs.append({"kind": "train", "epoch": e, "iteration": 10 * e, "loss": 2.5 - 0.3 * e, "lr": 1e-3,
                     "img_per_s": 1000.0 + e})
        recs.append({"kind": "eval", "phase": "main", "epoch": e, "iteration": 10 * e, "top1": t, "top5": 99.0,
                     "ema_top1": m, "ema_top5": 99.0, "images": images})
        recs.append({"kind": "event", "event": "epoch_end", "epoch": e, "iteration": 10 * e,
                     "train_loss": 2.4 - 0.3 * e, "img_per_s": 1000.0})
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (path / ".hydra").mkdir(exist_ok=True)
    (path / ".hydra" / "config.yaml").write_text(
        f"name: {name}\nmodel:\n  name: {model}\n  img_size: {img_size}\n  kwargs: {json.dumps(kwargs or {})}\n"
        f"distill:\n  kind: {'soft' if kd else 'none'}\ntrainer:\n  epochs: {epochs}\n")
    if summary:
        final = {k: {"top1": v[-1], "fused_top1": v[-1] if final_agree else v[-1] - 0.1, "fused_agree": final_agree,
                     "images": 10000} for k, v in (("raw", top1), ("ema", ema))}
        (path / "run.json").write_text(json.dumps({
            "status": status, "name": name, "model": model, "img_size": img_size, "params": params, "flops": flops,
            "best_top1_raw": max(top1), "best_top1_ema": max(ema), "last_top1": top1[-1], "last_top1_ema": ema[-1],
            "epochs": epochs, "epochs_done": (eval_epochs or [len(top1)])[-1], "iterations": 10 * len(top1),
            "dataset": {"name": dataset, "num_classes": num_classes, "val_split": "test"},
            "model_kwargs": kwargs or {}, "published": published,
            "phases": [{"name": "main", "epochs": epochs, "distill": "soft" if kd else None}],
            "train_img_per_s": 1234.5, "teacher": {"name": "mobilemamba_b1"} if kd else None,
            **({"final": final} if status == "finished" else {}),
        }))
    return path


def write_eval(run_dir: Path, sub: str, *, fused: bool, top1: float, throughput: float, amp: str = "none") -> None:
    """eval.py's results.json, written into RUN/<sub>/ (hydra.run.dir=RUN/<sub>)."""
    out = run_dir / sub
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({
        "model": "mobilemamba_t2", "img_size": 128, "checkpoint": str(run_dir / "best.ckpt"), "ema": True,
        "top1": top1, "top5": 99.0, "images": 10000, "fused": fused, "fused_agree": True if fused else None,
        "throughput": throughput, "throughput_batch": 256, "device": "cuda", "amp": amp}))


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    """A multirun of three sizes + a KD run, a run killed mid-way, and one that died before evaluating."""
    root = tmp_path / "multirun"
    b1 = write_run(root / "cifar10_b1" / "0", model="mobilemamba_b1", top1=[50, 70, 80], ema=[45, 68, 81.5],
                   params=17_100_000, flops=280_000_000)
    write_run(root / "cifar10_s6" / "1", model="mobilemamba_s6", top1=[45, 65, 75], ema=[40, 62, 76])
    t2 = write_run(root / "cifar10_t2" / "2", top1=[40, 55, 60], ema=[35, 52, 61])
    write_run(root / "cifar10_t2_kd" / "3", kd=True, top1=[42, 60, 70], ema=[40, 58, 71.25], epochs=6)
    write_eval(t2, "eval_unfused", fused=False, top1=61.0, throughput=9000)
    write_eval(t2, "eval_fused", fused=True, top1=61.0, throughput=15000)
    write_eval(t2, "eval_fused_bf16", fused=True, top1=61.02, throughput=30000, amp="bf16")
    write_eval(b1, "eval_fused", fused=True, top1=81.5, throughput=7000)
    # killed in epoch 3: no run.json yet, a torn last line in metrics.jsonl
    killed = write_run(root / "killed" / "0", name="killed", summary=False, top1=[30, 41], ema=[31, 42], epochs=30)
    with open(killed / "metrics.jsonl", "a") as f:
        f.write('{"kind": "train", "epoch": 3, "itera')
    # crashed before its first evaluation: run.json says running, nothing evaluated
    dead = write_run(root / "dead" / "0", name="dead", top1=[], ema=[], summary=False)
    (dead / "run.json").write_text(json.dumps({"status": "running", "name": "dead", "model": "mobilemamba_t2",
                                               "best_top1_raw": None, "best_top1_ema": None, "epochs_done": 0}))
    return root


def read_csv(path: Path) -> dict[str, dict[str, str]]:
    with open(path, newline="") as f:
        return {r["run"]: r for r in csv.DictReader(f)}


# ------------------------------------------------------------------------------------------- behaviour
def test_a_run_dir_is_any_dir_with_run_json_or_metrics_and_eval_subdirs_are_not_runs(sweep):
    found = {p.relative_to(sweep).as_posix() for p in find_run_dirs(sweep)}
    assert found == {"cifar10_b1/0", "cifar10_s6/1", "cifar10_t2/2", "cifar10_t2_kd/3", "killed/0", "dead/0"}


def test_csv_has_one_row_per_evaluated_run_with_the_summary_numbers(sweep):
    make_report(sweep)
    rows = read_csv(sweep / "report.csv")
    assert set(rows) == {"cifar10_b1", "cifar10_s6", "cifar10_t2", "cifar10_t2_kd", "killed"}
    b1 = rows["cifar10_b1"]
    assert (b1["variant"], b1["img_size"], b1["epochs"], b1["status"]) == ("B1", "128", "3/3", "finished")
    assert float(b1["params_m"]) == pytest.approx(17.1) and float(b1["flops_m"]) == pytest.approx(280.0)
    assert float(b1["best_top1_raw"]) == 80 and float(b1["best_top1_ema"]) == 81.5
    assert float(b1["last_top1_raw"]) == 80 and float(b1["last_top1_ema"]) == 81.5
    assert float(b1["train_img_s"]) == 1234.5
    assert rows["cifar10_t2_kd"]["variant"] == "T2†" and rows["cifar10_t2_kd"]["epochs"] == "3/6"
    assert rows["cifar10_s6"]["infer_img_s_fused"] == "", "no eval.py results: the column stays blank"


def test_rows_are_ordered_by_model_size_with_the_kd_run_after_its_plain_one(sweep):
    make_report(sweep)
    with open(sweep / "report.csv", newline="") as f:
        order = [r["run"] for r in csv.DictReader(f)]
    assert order == ["cifar10_t2", "killed", "cifar10_t2_kd", "cifar10_s6", "cifar10_b1"]


def test_inference_speed_is_the_fastest_fused_eval_and_fused_equals_unfused_is_checked(sweep):
    make_report(sweep)
    rows = read_csv(sweep / "report.csv")
    t2 = rows["cifar10_t2"]
    assert float(t2["infer_img_s_fused"]) == 30000 and t2["infer_setting"].startswith("bf16, batch 256")
    assert t2["fused_equals_unfused"] == "yes"  # engine final eval + eval.py fused/unfused pair (fp32) agree
    assert float(rows["cifar10_b1"]["infer_img_s_fused"]) == 7000


def test_a_fused_model_that_disagrees_is_flagged(tmp_path):
    write_run(tmp_path / "bad", final_agree=False)
    make_report(tmp_path)
    assert read_csv(tmp_path / "report.csv")["cifar10_t2"]["fused_equals_unfused"] == "NO"


def test_a_killed_run_without_run_json_is_rebuilt_from_metrics_jsonl(sweep):
    runs, _ = collect(sweep)
    killed = next(r for r in runs if r.name == "killed")
    assert killed.status == "incomplete" and killed.epochs_done == 2 and killed.epochs == 30
    assert killed.best_top1_raw == 41 and killed.best_top1_ema == 42 and killed.last_top1_raw == 41
    assert [p.epoch for p in killed.curve] == [1, 2]


def test_a_run_that_never_evaluated_is_skipped_with_a_note(sweep):
    result = make_report(sweep)
    assert [(p.name, why) for p, why in result["skipped"]] == [
        ("0", "no evaluation recorded (status running, stopped before the first epoch ended)")]
    md = (sweep / "report.md").read_text()
    assert "## Skipped" in md and "`dead/0`: no evaluation recorded" in md


def test_unreadable_files_are_a_skip_not_a_crash(tmp_path):
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "run.json").write_text("{not json")
    (tmp_path / "garbage" / "metrics.jsonl").write_text("")
    result = make_report(tmp_path)
    assert result["runs"] == [] and len(result["skipped"]) == 1
    assert (tmp_path / "report.md").exists() and (tmp_path / "accuracy_vs_speed.png").exists()


def test_markdown_shows_the_table_the_plots_and_the_published_reference(sweep):
    make_report(sweep)
    md = (sweep / "report.md").read_text()
    assert "| run | variant | res | params (M) | FLOPs (M) | best top-1 raw | best top-1 EMA |" in md
    assert "| cifar10_b1 | B1 | 128 | 17.1 | 280.0 | 80.00 | 81.50 | 80.00 | 81.50 | 3/3 | 1,234 | 7,000 | yes |" in md
    assert "![accuracy_vs_speed](accuracy_vs_speed.png)" in md and "![training_curves](training_curves.png)" in md
    for p in PUBLISHED:
        assert f"| {p.variant} | {p.img_size} |" in md and f"| {p.top1_kd} |" in md


def test_same_named_runs_of_a_seed_sweep_get_their_path_in_the_label(tmp_path):
    write_run(tmp_path / "0", name="smoke")
    write_run(tmp_path / "1", name="smoke")
    runs, _ = collect(tmp_path)
    assert sorted(r.label for r in runs) == ["smoke (0)", "smoke (1)"]


def _png_is_a_real_plot(path: Path, min_size: tuple[int, int]) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(path)
    assert img.shape[1] >= min_size[0] and img.shape[0] >= min_size[1]
    rgb = img[..., :3]
    assert rgb.std() > 0.05, "an almost blank image"
    colourful = (rgb.max(axis=2) - rgb.min(axis=2)) > 0.3  # the runs are coloured, the published points grey
    assert colourful.sum() > 200


def test_plots_are_written_beside_the_report_and_are_not_blank(sweep, tmp_path):
    out = tmp_path / "elsewhere"
    main([str(sweep), "--out", str(out)])
    assert {p.name for p in out.iterdir()} == {"report.md", "report.csv", "accuracy_vs_speed.png", "training_curves.png"}
    assert not (sweep / "report.md").exists(), "--out leaves DIR untouched"
    _png_is_a_real_plot(out / "accuracy_vs_speed.png", (1200, 500))
    _png_is_a_real_plot(out / "training_curves.png", (1200, 400))
    assert (out / "accuracy_vs_speed.png").stat().st_size > 30_000


def test_a_missing_directory_is_a_one_line_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "nope")])
    assert exc.value.code == 2 and "not a directory" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------- a real multirun
@pytest.mark.slow
def test_a_real_multirun_gives_one_dir_per_job_and_reports_it(tmp_path):
    """`python train.py -m experiment=smoke name=a,b`, run from an empty directory as a user would: each job
    gets its own run directory (multirun/<name>/<job number>), and the report reads both."""
    from mobilemamba.data.prepare import make_synthetic_jpeg_folder

    cache = tmp_path / "cache"
    make_synthetic_jpeg_folder(cache / "smoke", classes=4, per_class_train=8, per_class_val=4, size=32)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MOBILEMAMBA_RUN_DIR")}
    env.update(MOBILEMAMBA_CACHE=str(cache), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "src"), str(REPO)])
    args = [sys.executable, str(REPO / "train.py"), "-m",
            "experiment=smoke", "name=smoke_a,smoke_b", "trainer.epochs=1", "trainer.max_iters_per_epoch=2",
            "trainer.progress=false"]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    multirun = tmp_path / "multirun"
    jobs = {p.relative_to(multirun).as_posix() for p in find_run_dirs(multirun)}
    assert jobs == {"smoke_a/0", "smoke_b/1"}
    result = make_report(multirun)
    assert sorted(r.name for r in result["runs"]) == ["smoke_a", "smoke_b"] and not result["skipped"]
    rows = read_csv(multirun / "report.csv")
    for name in ("smoke_a", "smoke_b"):
        assert rows[name]["status"] == "finished" and rows[name]["epochs"] == "1/1"
        assert rows[name]["best_top1_ema"] != "" and rows[name]["fused_equals_unfused"] == "yes"
    _png_is_a_real_plot(multirun / "training_curves.png", (1200, 400))


def test_checks_state_the_papers_claims_as_far_as_the_runs_show_them(sweep):
    result = make_report(sweep)
    checks = result["checks"]
    assert ("size ranking on cifar10_jpg (10 classes, 10,000 val images), 128 px, 3/3 epochs: "
            "T2 61.00 < S6 76.00 < B1 81.50: holds (T2→S6 +15.00 vs 2 SE 1.30, S6→B1 +5.50 vs 2 SE 1.15)") in checks
    assert not any(c.startswith("KD:") for c in checks), "the KD run stopped at 3 of its 6 epochs: not compared yet"
    assert "fused = unfused (same top-1 on the same images): 4/4 runs" in checks
    md = (sweep / "report.md").read_text()
    assert "## Checks" in md and "binomial standard error sqrt(p(1-p)/n)" in md


# ------------------------------------------------------------------------------------------- checks vs noise
def test_the_sampling_error_is_binomial_on_the_val_images():
    assert sampling_error(50.0, 10_000) == pytest.approx(0.5)
    assert sampling_error(10.0, 200) == pytest.approx(100 * (0.1 * 0.9 / 200) ** 0.5)
    assert decide(66.55, 66.61, 10_000)[2] == "not decided" and decide(61.0, 76.0, 10_000)[2] == "higher"


def test_a_broken_size_ranking_is_reported_as_such(tmp_path):
    write_run(tmp_path / "a", model="mobilemamba_t2", top1=[70.0], ema=[70.0], epochs=1)
    write_run(tmp_path / "b", model="mobilemamba_b1", top1=[65.0], ema=[65.0], epochs=1)
    assert "T2 70.00 < B1 65.00: does NOT hold (T2→B1 -5.00 vs 2 SE 1.32)" in make_report(tmp_path)["checks"][0]


def test_a_size_ranking_within_sampling_error_is_not_decided(tmp_path):
    # the CIFAR-10 miniature at 15 epochs: S6 and B1 six images apart on 10,000
    for model, top in (("mobilemamba_t2", 64.49), ("mobilemamba_s6", 66.55), ("mobilemamba_b1", 66.61)):
        write_run(tmp_path / model, model=model, top1=[top], ema=[top], epochs=1)
    # a two-run sweep at chance level on 200 images, 1.5 points apart
    for model, top in (("mobilemamba_t2", 10.0), ("mobilemamba_s6", 11.5)):
        write_run(tmp_path / "sweep" / model, model=model, top1=[top], ema=[top], epochs=1, dataset="smoke",
                  num_classes=4, images=200)
    checks = make_report(tmp_path)["checks"]
    assert ("size ranking on cifar10_jpg (10 classes, 10,000 val images), 128 px, 1/1 epochs: T2 64.49 < S6 66.55 "
            "< B1 66.61: not decided (T2→S6 +2.06 vs 2 SE 1.34, S6→B1 +0.06 vs 2 SE 1.33)") in checks
    assert any(c.startswith("size ranking on smoke (4 classes, 200 val images)") and ": not decided (" in c
               for c in checks)


def test_only_runs_of_one_dataset_resolution_and_length_are_compared(tmp_path):
    write_run(tmp_path / "demo", model="mobilemamba_t2", name="demo", top1=[74.2], ema=[74.2], epochs=1,
              dataset="fashion_mnist", images=500)
    write_run(tmp_path / "kd", model="mobilemamba_t2", kd=True, top1=[10.0], ema=[10.0], epochs=1)  # CIFAR-10
    write_run(tmp_path / "s6_64px", model="mobilemamba_s6", img_size=64, top1=[80.0], ema=[80.0], epochs=1)
    write_run(tmp_path / "b1_long", model="mobilemamba_b1", top1=[90.0, 91.0], ema=[90.0, 91.0], epochs=2)
    checks = make_report(tmp_path)["checks"]
    assert not any(c.startswith(("KD:", "size ranking")) for c in checks), checks


def test_the_kd_gain_is_decided_against_its_sampling_error(tmp_path):
    write_run(tmp_path / "t2", top1=[40, 55, 60], ema=[35, 52, 61], epochs=3)
    write_run(tmp_path / "t2_kd", kd=True, top1=[42, 60, 70, 70, 71, 71], ema=[40, 58, 71.25, 71, 71, 71], epochs=6)
    write_run(tmp_path / "t2_kd_close", name="close_kd", kd=True, top1=[61.5], ema=[61.5], epochs=1)
    checks = make_report(tmp_path)["checks"]
    assert ("KD: cifar10_t2_kd (T2†, 6 epochs) 71.25 vs cifar10_t2 (T2, 3 epochs) 61.00 on cifar10_jpg (10 classes, "
            "10,000 val images), 128 px: +10.25 points vs 2 SE 1.33: holds") in "".join(checks)
    assert any(c.startswith("KD: close_kd (T2†, 1 epochs) 61.50 vs cifar10_t2") and ": not decided" in c
               for c in checks)


def test_models_that_are_not_a_published_variant_are_named_by_what_they_are(tmp_path):
    write_run(tmp_path / "smoke", model="mobilemamba_t2", name="smoke", top1=[30.0], ema=[30.0], epochs=1,
              kwargs={"embed_dim": [16, 32, 48], "depth": [1, 1, 1]}, params=60_000, flops=1_000_000)
    write_run(tmp_path / "repvit", model="repvit_m0_9", name="cifar10_repvit_m0_9", top1=[80.0], ema=[80.0], epochs=1)
    write_run(tmp_path / "b1", model="mobilemamba_b1", top1=[90.0], ema=[90.0], epochs=1)
    result = make_report(tmp_path)
    rows = read_csv(tmp_path / "report.csv")
    assert rows["smoke"]["variant"] == "mobilemamba_t2 (embed_dim 16/32/48, depth 1/1/1)"
    assert rows["cifar10_repvit_m0_9"]["variant"] == "repvit_m0_9"
    assert [r.name for r in result["runs"]] == ["cifar10_b1", "cifar10_repvit_m0_9", "smoke"], "variants first"
    assert not any(c.startswith("size ranking") for c in result["checks"]), "one published variant: nothing to rank"


# ------------------------------------------------------------------------------------------- vs published
def _imagenet_run(path: Path, **kw) -> Path:
    """A T2 run on ImageNet, evaluated at epochs 5, 10 and 12, compared with the published T2 curve."""
    args = dict(img_size=192, epochs=300, status="running", dataset="imagenet", num_classes=1000, images=50_000,
                eval_epochs=[5, 10, 12], top1=[25.0, 40.0, 44.0], ema=[0.5, 1.5, 9.0],
                published={"variant": "T2", "curve": "T2"})
    return write_run(path, **{**args, **kw})


def test_the_table_shows_the_last_evaluation_against_the_published_curve_at_that_epoch(tmp_path):
    _imagenet_run(tmp_path / "t2", name="imagenet_t2")
    _imagenet_run(tmp_path / "t2_kd", name="imagenet_t2_kd", kd=True,
                  published={"variant": "T2†", "curve": None, "note": "no published curve: ..."})
    make_report(tmp_path)
    row = read_csv(tmp_path / "report.csv")["imagenet_t2"]
    pub = published.at("T2", 12)  # between the logged epochs 10 and 15
    assert pub.interpolated and int(row["vs_published_epoch"]) == 12
    assert float(row["vs_published_raw"]) == pytest.approx(44.0 - pub.top1)
    assert float(row["vs_published_ema"]) == pytest.approx(9.0 - pub.top1_ema)
    md = (tmp_path / "report.md").read_text()
    assert "| vs published at this epoch |" in md
    assert f"| raw {44.0 - pub.top1:+.2f}, EMA {9.0 - pub.top1_ema:+.2f} (epoch 12, T2) |" in md
    assert "| no published † curve |" in md
    assert read_csv(tmp_path / "report.csv")["imagenet_t2_kd"]["vs_published_raw"] == ""


def test_runs_without_a_published_curve_leave_the_column_blank(sweep):
    make_report(sweep)
    assert {r["vs_published"] for r in read_csv(sweep / "report.csv").values()} == {""}


def test_the_training_curves_add_the_published_curve_of_each_variant_compared(tmp_path):
    _imagenet_run(tmp_path / "a", name="imagenet_t2_a")
    _imagenet_run(tmp_path / "b", name="imagenet_t2_b", eval_epochs=[5, 10, 20])
    write_run(tmp_path / "cifar", model="mobilemamba_s6")  # no curve: CIFAR-10
    runs, _ = collect(tmp_path)
    assert published_overlays(runs) == {"T2": (20, 0)}, "up to the last epoch evaluated by a run compared with it"
    make_report(tmp_path)
    _png_is_a_real_plot(tmp_path / "training_curves.png", (1200, 400))
