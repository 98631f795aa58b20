"""Supernet step benchmark (the yardstick of the performance work).

Times one weight step (zero_grad, forward, cross-entropy, backward; no optimiser step) and one
architecture step (the same with gradients for alpha and beta only) on random data, and a fixed
calibration workload in the same process, and prints JSON: medians, their ratio to the
calibration, and peak memory. The calibration and the step follow ../shared/BENCHMARKS.md, so
figures compare across noisy machines as ratios.

    python experiments/bench_supernet.py --crop 64
    python experiments/bench_supernet.py --crop 128 --steps 5 --warmup 2
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from autodeeplab import build_supernet


def calibration_unit_seconds(repeats: int = 7, warmup: int = 2) -> float:
    """Median time of one unit: five passes of zero_grad, forward, square-mean, backward
    through four 3x3 convs at 32 channels on a (2, 32, 64, 64) input."""
    torch.manual_seed(0)
    net = nn.Sequential(*[nn.Conv2d(32, 32, 3, padding=1) for _ in range(4)])
    x = torch.randn(2, 32, 64, 64)
    times = []
    for i in range(warmup + repeats):
        start = time.perf_counter()
        for _ in range(5):
            net.zero_grad()
            net(x).square().mean().backward()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(fn, steps: int, warmup: int, device: torch.device) -> list[float]:
    times = []
    for i in range(warmup + steps):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--filter-multiplier", type=int, default=8)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--levels", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=5)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--crop", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-arch", action="store_true", help="skip the architecture step")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    calibration_before = calibration_unit_seconds() if device.type == "cpu" else None

    torch.manual_seed(0)
    net = build_supernet(
        num_classes=args.classes,
        layers=args.layers,
        levels=args.levels,
        filter_multiplier=args.filter_multiplier,
        blocks=args.blocks,
    ).to(device)
    net.train()
    images = torch.randn(args.batch, 3, args.crop, args.crop, device=device)
    target = torch.randint(0, args.classes, (args.batch, args.crop, args.crop), device=device)
    arch = list(net.arch_parameters())

    def weight_step() -> None:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(images), target).backward()

    def arch_step() -> None:
        torch.autograd.grad(F.cross_entropy(net(images), target), arch)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    weight_times = time_steps(weight_step, args.steps, args.warmup, device)
    arch_times = [] if args.no_arch else time_steps(arch_step, args.steps, args.warmup, device)
    calibration_after = calibration_unit_seconds() if device.type == "cpu" else None

    weight_median = statistics.median(weight_times)
    result = {
        "config": vars(args),
        "weight_step_s": weight_median,
        "weight_step_times_s": weight_times,
        "arch_step_s": statistics.median(arch_times) if arch_times else None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "weight_parameters": sum(p.numel() for p in net.weight_parameters()),
    }
    if calibration_before is not None:
        calibration = (calibration_before + calibration_after) / 2
        result["calibration_s"] = calibration
        result["weight_step_over_calibration"] = weight_median / calibration
    if device.type == "cuda":
        result["peak_gpu_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    json.dump(result, sys.stdout, indent=2)
    print()
    return result


if __name__ == "__main__":
    main()
