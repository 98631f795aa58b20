import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def test_benchmark_reports_step_time_memory_and_reference_speedup(capsys):
    path = Path(__file__).parents[1] / "experiments" / "bench_supernet.py"
    spec = importlib.util.spec_from_file_location("bench_supernet", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(
        [
            "--layers",
            "2",
            "--levels",
            "2",
            "--filter-multiplier",
            "2",
            "--blocks",
            "2",
            "--crop",
            "16",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--reference",
            "--classes",
            "3",
        ]
    )
    assert '"weight_step_s"' in capsys.readouterr().out
    assert len(result["weight_step_times_s"]) == 2
    for key in (
        "weight_step_s",
        "arch_step_s",
        "reference_weight_step_s",
        "calibration_s",
        "weight_step_over_calibration",
        "peak_rss_mib",
        "step_gflop",
        "matmul_peak_gflop_per_s",
    ):
        assert result[key] > 0, key
