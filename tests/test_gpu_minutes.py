"""benchmarks/gpu_minutes.py: a reproduction's GPU minutes, with lanes that share a GPU counted once."""
from tests.benchmark_scripts import load_benchmark


def test_runs_side_by_side_on_one_gpu_count_once_and_gaps_do_not_count():
    gm = load_benchmark("gpu_minutes")
    rows = [["b1", "300", "1", "0", "15", "1000", "0"],
            ["s6", "400", "1", "0", "15", "1000", "0"],   # beside b1 on GPU 0: 1000..1400
            ["t2_kd", "100", "1", "0", "30", "1500", "0"],  # after a 100 s gap
            ["t2", "60", "1", "0", "15", "1000", "1"]]      # on GPU 1
    assert gm.gpu_seconds(rows) == 400 + 100 + 60


def test_a_multi_gpu_run_counts_each_gpu_and_old_rows_count_seconds_times_gpus(tmp_path, capsys):
    gm = load_benchmark("gpu_minutes")
    (tmp_path / "timings.tsv").write_text("kd\t120\t2\t0\t30\t50\t0,1\nold\t30\t2\t0\t15\n")
    assert gm.main([str(tmp_path / "timings.tsv")]) == 0
    assert "GPU minutes for training so far: 5.0" in capsys.readouterr().out  # (2 x 120 + 2 x 30) / 60
