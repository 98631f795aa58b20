"""Cost of a model: parameters, Multi-Adds and latency (median and p90 over timed runs)."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autodeeplab.export.formats import Runner


def count_parameters(model: nn.Module) -> int:
    """Number of weights (every parameter tensor's elements)."""
    return sum(p.numel() for p in model.parameters())


def count_multi_adds(model: nn.Module, size: tuple[int, int]) -> int:
    """Multi-Adds of one forward pass on a ``(1, 3, H, W)`` input: ``FlopCounterMode``'s FLOPs
    (convolutions and matmuls, 2 per multiply-add) halved. It runs on a ``meta`` copy of the
    model, so it costs no arithmetic and no memory at any size. (The counter miscounts the
    backward pass of grouped convolutions; forward counts are right.)"""
    meta = copy.deepcopy(model).to("meta").eval()
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        meta(torch.empty(1, 3, *size, device="meta"))
    return counter.get_total_flops() // 2


def time_runs(
    step: Callable[[], Any], *, warmup: int, runs: int, sync: Callable[[], None] | None = None
) -> dict[str, float]:
    """Call ``step`` ``warmup`` times untimed, then ``runs`` times timed (``sync`` after each
    call, e.g. ``torch.cuda.synchronize``); returns ``median_ms`` and ``p90_ms``."""
    if warmup < 0 or runs < 1:
        raise ValueError(f"latency_warmup={warmup}, latency_runs={runs}; need >= 0 and >= 1")
    for _ in range(warmup):
        step()
    if sync is not None:
        sync()
    times = []
    for _ in range(runs):
        began = time.perf_counter()
        step()
        if sync is not None:
            sync()
        times.append((time.perf_counter() - began) * 1e3)
    return {
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
    }


def eager_latency(
    model: nn.Module, size: tuple[int, int], device: torch.device, *, warmup: int, runs: int
) -> dict[str, float]:
    """Latency of the eager ``model`` on a ``(1, 3, H, W)`` input on ``device`` (the model is
    copied there; ``torch.inference_mode``)."""
    model = copy.deepcopy(model).to(device).eval()
    images = torch.randn(1, 3, *size, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else None

    def step() -> None:
        with torch.inference_mode():
            model(images)

    return time_runs(step, warmup=warmup, runs=runs, sync=sync)


def runner_latency(
    runner: Runner, size: tuple[int, int], *, warmup: int, runs: int
) -> dict[str, float]:
    """Latency of an exported-file :data:`Runner` on a ``(1, 3, H, W)`` input."""
    images = np.random.default_rng(0).standard_normal((1, 3, *size), dtype=np.float32)
    return time_runs(lambda: runner(images), warmup=warmup, runs=runs)


def latency_report(
    model: nn.Module,
    runner: Runner,
    runtime: str,
    size: tuple[int, int],
    *,
    warmup: int,
    runs: int,
) -> dict[str, Any]:
    """Latencies at ``size`` (batch 1): the exported file under ``runtime`` (e.g.
    ``"onnxruntime_cpu"``), the eager model on the CPU and, when CUDA is present, on the GPU."""
    report: dict[str, Any] = {
        "size": list(size),
        "batch": 1,
        "warmup": warmup,
        "runs": runs,
        "threads": torch.get_num_threads(),
        runtime: runner_latency(runner, size, warmup=warmup, runs=runs),
        "torch_eager_cpu": eager_latency(
            model, size, torch.device("cpu"), warmup=warmup, runs=runs
        ),
    }
    if torch.cuda.is_available():
        device = torch.device("cuda")
        report["torch_eager_cuda"] = eager_latency(model, size, device, warmup=warmup, runs=runs)
        report["cuda_device"] = torch.cuda.get_device_name(device)
    return report
