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
            "--checkpoint",
            "--project-images",
            "101",
            "--project-epochs",
            "3",
            "--project-arch-start",
            "1",
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
    # 101 images -> halves of 50 -> 25 batches of 2; 3 weight epochs, 2 with architecture steps.
    expected = 25 * (3 * result["weight_step_s"] + 2 * result["arch_step_s"]) / 3600
    assert result["projected_search_hours"] == pytest.approx(expected)
    assert result["config"]["checkpoint"] is True
    # 4 bytes per float32 weight; the floor counts the weights twice (their gradients).
    assert result["weight_mib"] == pytest.approx(result["weight_parameters"] * 4 / 2**20)
    floor = result["baseline_rss_mib"] + 2 * result["weight_mib"]
    assert result["memory_floor_mib"] == pytest.approx(floor)
    assert 0 < result["baseline_rss_mib"] <= result["peak_rss_mib"]
