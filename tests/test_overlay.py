"""benchmarks/overlay.py: two runs' per-update losses side by side (the check that a fast path trains the same)."""
import json
from pathlib import Path

from tests.benchmark_scripts import load_benchmark


def _run(tmp: Path, name: str, losses: list[float], ips: float, skipped: tuple = ()) -> Path:
    run = tmp / name
    run.mkdir()
    lines = [{"kind": "event", "event": "phase"}]
    lines += [{"kind": "train", "iteration": i + 1, "loss": v, "img_per_s": (ips / 10 if i < 3 else ips),
               "skipped": i + 1 in skipped} for i, v in enumerate(losses)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in lines) + "\n")
    return run


def test_the_largest_loss_difference_and_the_speed_ratio_are_reported(tmp_path, capsys):
    eager = _run(tmp_path, "eager", [2.0, 1.9, 1.8, 1.7, 1.6], ips=100.0)
    fast = _run(tmp_path, "fast", [2.0, 1.9, 1.8 * 1.001, 1.7, 9.9], ips=300.0, skipped=(5,))
    ov = load_benchmark("overlay")
    assert ov.main([str(eager), str(fast), "--labels", "eager,graphs", "--skip", "3"]) == 0
    out = capsys.readouterr().out
    assert "4 shared updates" in out, "a skipped update is not compared"
    assert "at most 1.00e-03 (update 3)" in out
    assert "| median img/s after warm-up | 100 | 300 (3.00x) |" in out
    assert (fast / "overlay.png").stat().st_size > 0


def test_runs_without_shared_updates_are_an_error(tmp_path, capsys):
    ov = load_benchmark("overlay")
    a = _run(tmp_path, "a", [1.0], ips=1.0)
    b = tmp_path / "empty"
    b.mkdir()
    assert ov.main([str(a), str(b)]) == 1
    assert "share no logged update" in capsys.readouterr().err
