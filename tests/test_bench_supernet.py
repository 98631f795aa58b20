import ctypes.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "experiments" / "bench_supernet.py"


@pytest.fixture(scope="module")
def bench(experiment_script):
    return experiment_script("bench_supernet")


def _maps(*paths):
    return "\n".join(
        f"7f00{i:08x}-7f01{i:08x} r-xp 00000000 08:01 {i} {path}" for i, path in enumerate(paths)
    )


def test_memory_allocator_names_the_preloaded_malloc(bench):
    libc = "/usr/lib/libc.so.6"
    assert bench.memory_allocator(_maps(libc, "[heap]")) == "system"
    tcmalloc = "/usr/lib/libtcmalloc_minimal.so.4.5.10"
    assert bench.memory_allocator(_maps(tcmalloc, libc)) == "tcmalloc"
    assert bench.memory_allocator(_maps("/opt/lib/libjemalloc.so.2", libc)) == "jemalloc"
    # Only a library's own name counts, not a folder named after an allocator.
    assert bench.memory_allocator(_maps("/opt/tcmalloc/lib/libfoo.so", libc)) == "system"
    if not os.environ.get("LD_PRELOAD"):  # this process: the C library's malloc
        assert bench.memory_allocator() == "system"


def test_memory_allocator_sees_a_preloaded_library():
    names = {"tcmalloc": "tcmalloc_minimal", "jemalloc": "jemalloc"}
    found = {name: ctypes.util.find_library(lib) for name, lib in names.items()}
    found = {name: lib for name, lib in found.items() if lib}
    if not found:
        pytest.skip("no tcmalloc or jemalloc installed")
    name, library = next(iter(found.items()))
    code = (
        "import importlib.util;"
        f"spec = importlib.util.spec_from_file_location('b', {str(BENCH)!r});"
        "m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m);"
        "print(m.memory_allocator())"
    )
    env = {**os.environ, "LD_PRELOAD": library}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == name


@pytest.mark.slow
def test_benchmark_reports_step_time_memory_and_reference_speedup(bench, capsys):
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
    assert result["allocator"] == bench.memory_allocator()
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
    assert result["targets"] is None  # no target is stated for this small supernet


def _options(bench, **changes):
    options = dict(bench.REFERENCE_SETTINGS, crop=64, device="cpu", partial_channels=1)
    options |= {"project_images": 2975, "project_epochs": 40, "project_arch_start": 20}  # paper
    return options | changes


def test_targets_compare_with_the_public_port_where_it_was_measured(bench):
    # The public port: 75.7 calibrations and 1046 MiB at 64x64, 102.4 and 2534 MiB at 128x128.
    report = bench.target_report(
        _options(bench), {"weight_step_over_calibration": 7.57, "peak_rss_mib": 523.0}
    )
    assert report["speedup_over_public_port"] == pytest.approx(10.0)
    assert report["peak_rss_fraction_of_public_port"] == pytest.approx(0.5)
    assert report["speedup_met"] and report["memory_met"] and report["exact"]
    report = bench.target_report(
        _options(bench, crop=128, partial_channels=4),
        {"weight_step_over_calibration": 25.6, "peak_rss_mib": 1300.0},
    )
    assert report["speedup_over_public_port"] == pytest.approx(4.0)
    assert not report["speedup_met"] and not report["memory_met"]  # 5x and 1267 MiB
    assert report["speedup_target"] == 5.0 and not report["exact"]
    # Settings the port was not measured at have no comparison.
    figures = {"weight_step_over_calibration": 10.0, "peak_rss_mib": 500.0}
    for changes in ({"crop": 96}, {"layers": 6}, {"threads": 2}, {"batch": 4}):
        assert bench.target_report(_options(bench, **changes), figures) is None, changes


def test_gpu_targets_are_the_papers_setting_with_an_architecture_step(bench):
    paper = _options(bench, device="cuda", crop=321)
    figures = {"arch_step_s": 0.2, "peak_gpu_reserved_mib": 5000.0, "projected_search_hours": 6.5}
    report = bench.target_report(paper, figures)
    assert report["memory_met"] and not report["hours_met"] and report["exact"]
    assert report["memory_target_mib"] == pytest.approx(6e9 / 2**20)  # 6 GB
    other = figures | {"peak_gpu_reserved_mib": 6000.0, "projected_search_hours": 5.0}
    assert bench.target_report(paper | {"partial_channels": 4, "threads": 4}, other) == report | {
        "peak_gpu_reserved_mib": 6000.0, "memory_met": False, "exact": False,
        "projected_search_hours": 5.0, "hours_met": True,
    }  # fmt: skip
    # Another projection keeps the memory figure but has no hours to compare.
    shorter = bench.target_report(paper | {"project_epochs": 10}, figures)
    assert shorter["memory_met"] and shorter["projected_search_hours"] is None
    assert shorter["hours_met"] is None
    assert bench.target_report(paper | {"crop": 256}, figures) is None
    assert bench.target_report(paper, figures | {"arch_step_s": None}) is None
    assert bench.target_report(paper | {"device": "mps"}, {"arch_step_s": 0.2}) is None
