"""The KD speed bench runs end to end on CPU with tiny settings."""
from __future__ import annotations

import importlib.util
import json

import pytest

from distill import bench

TINY_MOBILEMAMBA = ["--student", "mobilemamba_t2", "--student-kwargs", '{"embed_dim": [16, 32, 48], "depth": [1, 1, 1]}']


@pytest.mark.slow
def test_bench_smoke_on_cpu(tmp_path, capsys):
    student = TINY_MOBILEMAMBA if importlib.util.find_spec("mobilemamba") else ["--student", "resnet10t"]
    out = tmp_path / "bench.json"
    rows = bench.main(["--device", "cpu", "--batch", "2", "--img-size", "32", "--steps", "1", "--warmup", "0",
                       *student, "--teacher", "resnet10t", "--teacher-img-size", "32",
                       "--num-classes", "10", "--json", str(out)])
    modes = [r["mode"] for r in rows]
    assert modes == ["plain step", "KD step, teacher fp32 eager", "teacher fp32 eager forward only",
                     "KD step, teacher fast", "teacher fast forward only"]
    assert all(r["img_per_s"] > 0 for r in rows)
    assert "| plain step |" in capsys.readouterr().out
    assert json.loads(out.read_text())["rows"][0]["mode"] == "plain step"


def test_odd_batch_is_refused():
    with pytest.raises(SystemExit):
        bench.parse_args(["--batch", "3"])
