"""Two `smoke` search runs (seeds 0 and 1), made once per session by the real command line."""

import os
import subprocess
import sys
from pathlib import Path

import matplotlib
import pytest

from autodeeplab.analysis import SearchRun, load_run

matplotlib.use("Agg")

ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def smoke_search(run_dir: Path, *extra: str) -> Path:
    command = [
        sys.executable,
        "-m",
        "autodeeplab.search",
        "experiment=smoke",
        "threads=1",
        "progress=false",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, env=ENV, cwd=run_dir.parent, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return run_dir


@pytest.fixture(scope="session")
def smoke_dir(tmp_path_factory) -> Path:
    return smoke_search(tmp_path_factory.mktemp("search") / "smoke_seed0")


@pytest.fixture(scope="session")
def smoke_dir_seed1(tmp_path_factory) -> Path:
    return smoke_search(tmp_path_factory.mktemp("search") / "smoke_seed1", "seed=1")


@pytest.fixture(scope="session")
def smoke_dir_two_levels(tmp_path_factory) -> Path:
    """A run of another search space: the smoke run's cell and layers on two levels (one
    epoch), so its genotype compares with theirs but its lattice does not."""
    run_dir = tmp_path_factory.mktemp("search") / "two_levels"
    return smoke_search(run_dir, "space.levels=2", "search.epochs=1")


@pytest.fixture(scope="session")
def smoke_run(smoke_dir) -> SearchRun:
    return load_run(smoke_dir)


@pytest.fixture(scope="session")
def smoke_run_seed1(smoke_dir_seed1) -> SearchRun:
    return load_run(smoke_dir_seed1)
