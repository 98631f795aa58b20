"""Shared test settings: one torch thread per test process (the machine's other core is often
busy), and one pytest-xdist worker per core (``-n auto`` in pyproject.toml)."""

import os

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")

#: Most workers ``-n auto`` starts: the end-to-end tests start processes of their own (two ranks
#: under torchrun), and each worker holds its own models and fixtures.
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker per core this process may run on, at most :data:`MAX_WORKERS`."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(cores or 1, MAX_WORKERS))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
