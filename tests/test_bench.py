"""`bench.py` times inference and the training step and writes one CSV row per configuration (CPU smoke)."""
import copy
import dataclasses
import csv
import fcntl
import importlib
import subprocess
import sys

import pytest
import torch

import mobilemamba
from mobilemamba.benchmark import (BenchConfig, BenchError, BenchResult, _compile, _GpuLock, check, expand,
                                   format_table, inference_model, read_csv, resolve_name, run_one, write_csv)
from mobilemamba.models.wavelet import HaarTransform


def test_comma_lists_expand_to_one_config_per_combination():
    cfgs = list(expand({"model": "t2,s6", "mode": "infer,train", "batch": "8", "compile": "true"}))
    assert [(c.model, c.mode) for c in cfgs] == [("t2", "infer"), ("t2", "train"), ("s6", "infer"), ("s6", "train")]
    assert all(c.batch == 8 and c.compile == "true" and c.compiling for c in cfgs)
    assert resolve_name("s6") == "mobilemamba_s6"


def test_unknown_options_and_models_are_errors():
    with pytest.raises(ValueError, match="unknown bench option"):
        list(expand({"modle": "t2"}))
    with pytest.raises(ValueError, match="unknown model 'x9'"):
        resolve_name("x9")


def test_model_names_are_mobilemamba_variants_or_any_timm_model():
    assert [resolve_name(n) for n in ("t2", "mobilemamba_b4", "levit_256", "vit_tiny_patch16_224.augreg_in21k")] == \
        ["mobilemamba_t2", "mobilemamba_b4", "levit_256", "vit_tiny_patch16_224.augreg_in21k"]
    with pytest.raises(BenchError, match="compile=regional compiles MobileMamba's blocks.*levit_256 use compile=true"):
        check(BenchConfig(model="levit_256", compile="regional", device="cpu"))
    check(BenchConfig(model="s6", compile="regional", device="cpu"))
    with pytest.raises(BenchError, match="takes 1024x768 inputs; give img_size=N"):
        check(BenchConfig(model="vit_base_patch16_sapiens2", device="cpu"))
    check(BenchConfig(model="vit_base_patch16_sapiens2", img_size=224, device="cpu"))


def test_a_bad_model_name_is_a_one_line_error_before_anything_runs():
    out = subprocess.run([sys.executable, "bench.py", "model=t2,levit_2566", "device=cpu"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.strip().splitlines() == [
        "bench.py: unknown model 'levit_2566': neither a MobileMamba variant (t2, t4, s6, b1, b2, b4) nor a timm model "
        "(timm.list_models()); did you mean levit_256, levit_256d, levit_conv_256?"]


def test_timm_models_are_timed_reparameterized_as_timm_does_it():
    """Inference of a model with RepVGG-style blocks and Conv+BN pairs (a tiny RepViT) runs the folded model."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("repvit_m0_9", embed_dim=(16, 32, 48, 64), depth=(1, 1, 1, 1), num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)
        fused = inference_model(model, fused=True)
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        assert not fused.training and torch.allclose(fused(x), ref, rtol=1e-4, atol=1e-4)


def test_a_reparameterized_timm_model_keeps_its_dtype_and_device():
    """LeViT's fuse() builds its merged convs as new float32 CPU modules; the fused model must stay where the model
    was (here: float64, as a stand-in for a CUDA or bf16 model), or its first call fails on mixed types."""
    import timm

    model = timm.create_model("levit_128s", num_classes=10).eval().double()
    x = torch.randn(2, 3, 224, 224, dtype=torch.float64)
    with torch.inference_mode():
        ref = model(x)
        fused = inference_model(model, fused=True)
        assert {p.dtype for p in fused.parameters()} == {torch.float64}
        assert torch.allclose(fused(x), ref, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_bench_cli_times_timm_models_by_name_each_at_its_own_resolution(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench.py", "model=test_vit,test_resnet", "mode=infer,train", "batch=2", "amp=none",
         "warmup=1", "iters=1", "repeats=1", "device=cpu", f"out={tmp_path}"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = read_csv(tmp_path / "bench.csv")
    assert [(r.model, r.mode, r.img_size, r.fused) for r in rows] == [
        ("test_vit", "infer", 160, True), ("test_vit", "train", 160, False),
        ("test_resnet", "infer", 160, True), ("test_resnet", "train", 160, False)]
    assert all(r.img_per_s > 0 and r.scan_backend == "-" and r.wavelet == "-" for r in rows)
    assert [line.split()[0] for line in out.stdout.splitlines()[-5:-1]] == [r.model for r in rows]


def test_compile_options_parse_and_bad_combinations_are_errors():
    cfgs = list(expand({"compile": "false,true,regional,1,no", "compile_mode": "max-autotune-no-cudagraphs",
                        "cuda_graph": "true"}))
    assert [c.compile for c in cfgs] == ["false", "true", "regional", "true", "false"]
    assert [c.compiling for c in cfgs] == [False, True, True, True, False]
    assert all(c.cuda_graph and c.compile_mode == "max-autotune-no-cudagraphs" for c in cfgs)
    assert BenchConfig().compile == "false" and BenchConfig().compile_mode == "default"
    with pytest.raises(BenchError, match="compile must be true|false|regional"):
        BenchConfig(compile="partly")
    with pytest.raises(BenchError, match="compile_mode must be one of"):
        BenchConfig(compile="true", compile_mode="fast")
    with pytest.raises(BenchError, match="cuda_graph=true is for mode=infer"):
        BenchConfig(mode="train", cuda_graph=True)
    with pytest.raises(BenchError, match="capture CUDA graphs twice"):
        BenchConfig(compile="regional", compile_mode="reduce-overhead", cuda_graph=True)
    BenchConfig(compile="false", compile_mode="reduce-overhead", cuda_graph=True)  # no compile: mode unused


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cuda_graph_without_cuda_is_a_one_line_error(capsys):
    bench = importlib.import_module("bench")
    with pytest.raises(SystemExit) as exc:
        bench.main(["model=t2", "mode=infer", "cuda_graph=false,true", "device=cpu"])
    assert str(exc.value) == "bench.py: bench cuda_graph=true needs a CUDA device, got 'cpu'"
    assert capsys.readouterr().out == ""  # checked before the first configuration runs


def test_freeze_compiles_inference_with_inductors_freezing_and_the_row_records_it():
    """freeze=true: the compiler sees torch._inductor.config.freezing on (parameters folded in as constants)."""
    from mobilemamba.benchmark import run_one
    from torch._inductor import config as inductor_config

    seen = []

    def recording_backend(gm, example_inputs):
        seen.append(inductor_config.freezing)
        return gm.forward

    torch._dynamo.reset()
    torch._dynamo.register_backend(recording_backend, name="record_freezing")
    base = dict(model="t2", mode="infer", compile="true", compile_backend="record_freezing", batch=2, amp="none",
                img_size=32, warmup=1, iters=1, repeats=1, device="cpu", scan_backend="torch",
                model_kwargs="embed_dim=16-32-48,depth=1-1-1")
    rows = [run_one(BenchConfig(**base, freeze=freeze)) for freeze in (True, False)]
    assert seen == [True, False] and [r.freeze for r in rows] == [True, False]
    assert format_table(rows).splitlines()[0].split()[8:10] == ["graph", "frz"]
    with pytest.raises(BenchError, match="freeze=true is for compiled inference"):
        BenchConfig(mode="infer", freeze=True)
    with pytest.raises(BenchError, match="freeze=true is for compiled inference"):
        BenchConfig(mode="train", compile="true", freeze=True)


def test_regional_compile_gives_the_eager_outputs():
    torch.manual_seed(0)
    model = mobilemamba.create_model("mobilemamba_t2", num_classes=10, scan_backend="torch",
                                     embed_dim=(16, 32, 48), depth=(1, 2, 1)).fuse()
    x = torch.randn(2, 3, 32, 32)
    with torch.inference_mode():
        ref = model(x)
        compiled = _compile(copy.deepcopy(model), BenchConfig(compile="regional", compile_backend="eager"))
        assert type(compiled) is type(model)  # compiled in place: the model and its state-dict keys stay
        assert list(compiled.state_dict()) == list(model.state_dict())
        assert all(r._compiled_call_impl is not None for r in compiled.regions())
        assert torch.equal(compiled(x), ref)


def test_table_and_csv_carry_the_new_columns(tmp_path):
    base = dict(model="mobilemamba_s6", mode="infer", img_size=224, batch=256, amp="bf16", fused=True,
                channels_last=True, kd=False, scan_backend="triton", world_size=1, img_per_s_min=0.0,
                img_per_s_max=0.0, peak_mem_gib=1.0, device_name="gpu")
    rows = [BenchResult(**base, compile="false", compile_mode="-", cuda_graph=False, img_per_s=1000.0, setup_s=1.0),
            BenchResult(**base, compile="regional", compile_mode="default", cuda_graph=True, img_per_s=2500.0,
                        setup_s=30.0)]
    write_csv(rows, tmp_path / "bench.csv")
    assert read_csv(tmp_path / "bench.csv") == rows
    lines = format_table(rows).splitlines()
    assert all(k in lines[0] for k in ("compile", "cmode", "graph", "x eager", "setup s"))
    assert lines[3].split()[6:9] == ["regional", "default", "T"] and " 2.50 " in lines[3]


def test_gpu_lock_is_let_go_while_dynamo_compiles(tmp_path):
    path = tmp_path / "lock"
    seen = []

    def probe(*_):
        with open(path, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                fcntl.flock(f, fcntl.LOCK_UN)
                seen.append("free")
            except BlockingIOError:
                seen.append("held")

    from torch._dynamo.callback import callback_handler
    torch._dynamo.reset()
    with _GpuLock(str(path)).held():
        callback_handler.register_start_callback(probe)  # runs after the lock's own start callback
        try:
            torch.compile(lambda t: t.sin() + 1, backend="eager")(torch.randn(3))
        finally:
            callback_handler.remove_start_callback(probe)
        probe()
    probe()
    assert seen == ["free", "held", "free"]


def test_bench_prints_its_table_once_a_row_as_each_configuration_finishes(monkeypatch, tmp_path, capsys):
    bench = importlib.import_module("bench")
    row = BenchResult("mobilemamba_t2", "infer", 192, 8, "none", False, "false", "-", False, False, False, "torch",
                      1, 100.0, 90.0, 110.0, 0.0, 1.0, "cpu")
    printed_before = []  # what was on stdout when each configuration started
    monkeypatch.setattr(bench, "run_one", lambda cfg: (printed_before.append(capsys.readouterr().out),
                                                       dataclasses.replace(row, mode=cfg.mode))[1])
    bench.main(["model=t2", "mode=infer,train", "device=cpu", f"out={tmp_path}"])
    lines = "".join(printed_before + [capsys.readouterr().out]).splitlines()
    assert printed_before[1].splitlines()[2].split()[:2] == ["mobilemamba_t2", "infer"], "a row before the next runs"
    assert [line.split()[:2] for line in lines[2:4]] == [["mobilemamba_t2", "infer"], ["mobilemamba_t2", "train"]]
    assert lines[0].startswith("model") and lines[1].startswith("---") and lines[4] == f"wrote {tmp_path / 'bench.csv'}"
    assert len(lines) == 5, "the table once"


def test_bench_help_prints_its_usage(capsys):
    importlib.import_module("bench").main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("Throughput benchmark: `python bench.py model=s6 mode=infer,train") and "out=DIR" in out


@pytest.mark.slow
def test_bench_cli_writes_a_row_per_configuration(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench.py", "model=t2", "mode=infer,train", "compile=false,regional", "compile_backend=eager",
         "batch=2", "amp=none", "img_size=32", "warmup=1", "iters=1", "repeats=2",
         "model_kwargs=embed_dim=16-32-48,depth=1-1-1", f"gpu_lock={tmp_path / 'lock'}", f"out={tmp_path}"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert [(r["mode"], r["compile"]) for r in rows] == [("infer", "false"), ("infer", "regional"),
                                                          ("train", "false"), ("train", "regional")]
    assert all(float(r["img_per_s"]) > 0 and float(r["setup_s"]) > 0 for r in rows)
    assert BenchConfig().batch == 256


def haar_steps_run(monkeypatch, **cfg) -> tuple[set[str], BenchResult]:
    """The Haar formulations a tiny CPU bench run calls, and its row."""
    seen = set()
    dwt = HaarTransform.dwt
    monkeypatch.setattr(HaarTransform, "dwt", lambda self, *a: (seen.add(self.impl), dwt(self, *a))[1])
    tiny = "embed_dim=16-32-48,depth=1-1-1"
    row = run_one(BenchConfig(model="t2", batch=2, amp="none", img_size=32, warmup=1, iters=1, repeats=1,
                              device="cpu", scan_backend="torch", model_kwargs=tiny, **cfg))
    return seen, row


def test_the_fused_model_runs_the_haar_formulation_asked_for_and_the_row_records_it(monkeypatch):
    """model.fuse() switches to the conv formulation; bench's wavelet=... must win over that."""
    seen, row = haar_steps_run(monkeypatch, mode="infer", fused=True, wavelet="shuffle")
    assert seen == {"shuffle"} and row.wavelet == "shuffle" and " shuffle " in format_table([row]).splitlines()[2]


@pytest.mark.parametrize("mode", ["infer", "train"])
def test_auto_runs_eager_models_with_the_conv_haar_step_as_fuse_does(monkeypatch, mode):
    """The fastest eager formulation (S6 fused on an H200: 19.4k img/s with conv, 9.4k with pytorch_wavelets)."""
    seen, row = haar_steps_run(monkeypatch, mode=mode, fused=True, wavelet="auto")
    assert seen == {"conv"} and row.wavelet == "conv"
    fused = mobilemamba.create_model("mobilemamba_t2", embed_dim=(16, 32, 48), depth=(1, 1, 1)).fuse()
    assert {m.impl for m in fused.modules() if isinstance(m, HaarTransform)} == {"conv"}


def test_csv_rows_written_before_the_haar_and_freeze_columns_still_load(tmp_path):
    path = tmp_path / "old.csv"
    rows = [BenchResult("mobilemamba_t2", "infer", 192, 256, "bf16", True, "false", "-", False, True, False, "triton",
                        1, 100.0, 90.0, 110.0, 1.0, 2.0, "gpu")]
    write_csv(rows, path)
    header, line = path.read_text().splitlines()
    assert header.endswith(",wavelet,freeze")
    path.write_text(header.replace(",wavelet,freeze", "") + "\n" + line.rsplit(",", 2)[0] + "\n")
    old = read_csv(path)[0]
    assert old.wavelet == "-" and old.freeze is False and old.img_per_s == 100.0
