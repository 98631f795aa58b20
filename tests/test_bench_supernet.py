import ctypes.util
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[1] / "experiments" / "bench_supernet.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_supernet", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
