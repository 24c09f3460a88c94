"""`bench.py` times inference and the training step and writes one CSV row per configuration (CPU smoke)."""
import csv
import subprocess
import sys

import pytest

from mobilemamba.benchmark import BenchConfig, expand, resolve_name


def test_comma_lists_expand_to_one_config_per_combination():
    cfgs = list(expand({"model": "t2,s6", "mode": "infer,train", "batch": "8", "compile": "true"}))
    assert [(c.model, c.mode) for c in cfgs] == [("t2", "infer"), ("t2", "train"), ("s6", "infer"), ("s6", "train")]
    assert all(c.batch == 8 and c.compile is True for c in cfgs)
    assert resolve_name("s6") == "mobilemamba_s6"


def test_unknown_options_and_models_are_errors():
    with pytest.raises(ValueError, match="unknown bench option"):
        list(expand({"modle": "t2"}))
    with pytest.raises(ValueError, match="unknown model 'x9'"):
        resolve_name("x9")


@pytest.mark.slow
def test_bench_cli_writes_a_row_per_configuration(tmp_path):
    out = subprocess.run(
        [sys.executable, "bench.py", "model=t2", "mode=infer,train", "batch=2", "amp=none", "img_size=32",
         "warmup=1", "iters=1", "repeats=2", "model_kwargs=embed_dim=16-32-48,depth=1-1-1", f"out={tmp_path}"],
        capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "bench.csv")))
    assert [r["mode"] for r in rows] == ["infer", "train"]
    assert all(float(r["img_per_s"]) > 0 for r in rows)
    assert BenchConfig().batch == 256
