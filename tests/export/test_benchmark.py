"""Latency timing: the warm-up runs are made and left out of the figures."""

import time

import pytest

from autodeeplab.export.benchmark import time_runs


def test_warm_up_runs_are_made_but_not_timed():
    calls = []

    def step():
        calls.append(None)
        time.sleep(0.2 if len(calls) <= 2 else 0.001)  # a slow first two: warm-up

    figures = time_runs(step, warmup=2, runs=5)
    assert len(calls) == 7
    assert figures["median_ms"] < 100 and figures["p90_ms"] < 100
    assert figures["median_ms"] <= figures["p90_ms"]


def test_bad_counts_are_refused():
    with pytest.raises(ValueError, match="latency_warmup=-1, latency_runs=1"):
        time_runs(lambda: None, warmup=-1, runs=1)
    with pytest.raises(ValueError, match="latency_runs=0"):
        time_runs(lambda: None, warmup=0, runs=0)
