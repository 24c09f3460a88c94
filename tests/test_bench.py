"""`bench.py` times inference and the training step and writes one CSV row per configuration (CPU smoke)."""
import copy
import csv
import fcntl
import importlib
import subprocess
import sys

import pytest
import torch

import mobilemamba
from mobilemamba.benchmark import (BenchConfig, BenchError, BenchResult, _compile, _GpuLock, expand, format_table,
                                   read_csv, resolve_name, run_one, write_csv)
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


def test_csv_rows_written_before_the_haar_column_still_load(tmp_path):
    path = tmp_path / "old.csv"
    rows = [BenchResult("mobilemamba_t2", "infer", 192, 256, "bf16", True, "false", "-", False, True, False, "triton",
                        1, 100.0, 90.0, 110.0, 1.0, 2.0, "gpu")]
    write_csv(rows, path)
    header, line = path.read_text().splitlines()
    path.write_text(header.replace(",wavelet", "") + "\n" + line.rsplit(",", 1)[0] + "\n")
    assert read_csv(path)[0].wavelet == "-"
