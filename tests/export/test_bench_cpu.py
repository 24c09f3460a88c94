"""The CPU benchmark's command line and table (the timing itself is run by hand: docs/results.md#cpu-inference)."""
import pytest

from mobilemamba.export.bench_cpu import RUNTIMES, Row, format_table, main


def test_the_table_has_one_row_per_runtime_with_speed_up_and_accuracy():
    rows = [Row("mobilemamba_t2", 192, "sequential", 0.0, 100.0, 90.0, 180.0, 20.0, 21.0, 1.0, 0.0),
            Row("mobilemamba_t2", 192, "onnxruntime", 5.2, 25.0, 24.0, 45.0, 80.0, 85.0, 4.0, 3e-7)]
    table = format_table(rows).splitlines()
    assert len(table) == 4 and table[0].startswith("| model | px | runtime")
    assert table[3] == "| T2 | 192 | onnxruntime | 25.0 / 24.0 | 45.0 | 80.0 / 85.0 | 4.00x | 5.2 | 3.0e-07 |"


def test_unknown_variants_and_runtimes_are_one_line_errors():
    with pytest.raises(SystemExit, match="unknown variant x9"):
        main(["--variants", "t2,x9"])
    with pytest.raises(SystemExit, match="unknown runtime tensorrt"):
        main(["--runtimes", "tensorrt"])
    assert "compile" in RUNTIMES and "sequential" in RUNTIMES
