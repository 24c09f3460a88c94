"""benchmarks/data_wait.py: the data wait's share of the training step from a run's metrics.jsonl."""
import json
import sys

import pytest

from tests.benchmark_scripts import load_benchmark


def test_share_of_step_time_skips_the_compile_records(tmp_path, monkeypatch, capsys):
    records = [{"kind": "event", "event": "phase"}]
    records += [{"kind": "train", "data_time": 5.0, "step_time": 100.0}]  # compilation + graph capture: skipped
    records += [{"kind": "train", "data_time": d, "step_time": 0.05} for d in (0.001, 0.002, 0.003, 0.004)]
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    monkeypatch.setattr(sys, "argv", ["data_wait.py", str(path), "--skip", "1"])
    load_benchmark("data_wait").main()
    last = capsys.readouterr().out.splitlines()[-1]
    assert "4 records after the first 1" in last and "median 2.50 ms of a median 50.0 ms step" in last
    assert "5.0% of all step time" in last  # 10 ms of 200 ms


def test_too_few_records_is_one_clear_line(tmp_path, monkeypatch):
    path = tmp_path / "metrics.jsonl"
    path.write_text(json.dumps({"kind": "train", "data_time": 0.1, "step_time": 1.0}) + "\n")
    monkeypatch.setattr(sys, "argv", ["data_wait.py", str(path)])
    with pytest.raises(SystemExit, match="fewer than 3 train records"):
        load_benchmark("data_wait").main()


def test_a_missing_metrics_file_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["data_wait.py", str(tmp_path / "nope.jsonl")])
    with pytest.raises(SystemExit, match="nope.jsonl: cannot read the run's records"):
        load_benchmark("data_wait").main()
