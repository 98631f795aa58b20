"""Supernet step benchmark (the yardstick of the performance work).

Times one weight step (zero_grad, forward, cross-entropy, backward; no optimiser step) and one
architecture step (the same with gradients for alpha and beta only) on random data, and a fixed
calibration workload in the same process, and prints JSON: medians, their ratio to the
calibration, peak memory and its floor (the process before the supernet is built, plus the
weights and their gradients), and the malloc the process ran on. The calibration
(:func:`calibration_unit_seconds`, timed before and after the steps, the mean of both taken)
and the step are fixed, so figures compare across noisy machines as ratios.

    python experiments/bench_supernet.py --crop 64 --reference
    python experiments/bench_supernet.py --crop 128 --checkpoint
    python experiments/bench_supernet.py --crop 64 --partial-channels 4
    python experiments/bench_supernet.py --device cuda --crop 321 --precision bf16

It also projects the time of a whole search from the step times: by default the paper's
Cityscapes search (2,975 images split into halves A and B, batch 2, 40 epochs, architecture
steps after epoch 20), which on a GPU is the GPU-hours figure.

For the settings the performance issue states targets for (the paper's supernet at 64x64 and
128x128 on one CPU thread, where the most used public port was measured, and 321x321 on a GPU),
``targets`` compares the figures with them (:func:`target_report`).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from autodeeplab import Supernet, build_supernet
from autodeeplab.engine.runtime import deterministic_algorithms
from autodeeplab.search.bilevel import loss_and_gradients
from autodeeplab.search.graphs import graphed_steps
from autodeeplab.space.reference import reference_forward

#: The most used public port (NoamRosenberg/autodeeplab at 065cf99) on this project's 2-core CPU
#: machine kind, measured as this script measures (the same step, calibration, medians and one
#: thread): step / calibration and peak RSS by crop, for the paper's supernet
#: (:data:`REFERENCE_SETTINGS`).
PUBLIC_PORT_CPU = {
    64: {"weight_step_over_calibration": 75.7, "peak_rss_mib": 1046.0},
    128: {"weight_step_over_calibration": 102.4, "peak_rss_mib": 2534.0},
}
#: The settings the public port was measured with, as this script's options name them.
REFERENCE_SETTINGS = {
    "filter_multiplier": 8,
    "layers": 12,
    "levels": 4,
    "blocks": 5,
    "classes": 19,
    "batch": 2,
    "threads": 1,
}
#: The performance issue's targets. CPU: a weight step this many times faster than the public
#: port's (by crop), in at most this fraction of its peak memory. GPU: the paper's setting (F = 8,
#: batch 2, 321x321 crops, a weight and an architecture step) within 6 GB of GPU memory, and the
#: projected 40-epoch Cityscapes search within 6 GPU-hours (the paper: 72 P100-hours).
CPU_SPEEDUP_TARGET = {64: 10.0, 128: 5.0}
CPU_MEMORY_FRACTION_TARGET = 0.5
GPU_CROP = 321
GPU_MEMORY_TARGET_MIB = 6e9 / 2**20
GPU_HOURS_TARGET = 6.0
#: The paper's Cityscapes search, which the projection assumes by default and the hours target
#: is stated for: training images, epochs, the epoch after which architecture steps start.
PAPER_SEARCH = {"project_images": 2975, "project_epochs": 40, "project_arch_start": 20}


def target_report(config: dict, result: dict) -> dict | None:
    """The figures of ``result`` against the performance issue's targets, where ``config`` (the
    parsed options, ``device`` as a device type) is a setting they were stated for, else
    ``None``:

    * on the CPU, the public port's supernet at a crop of :data:`PUBLIC_PORT_CPU` on one thread:
      the speed-up over the port (its step / calibration over this one's) and the fraction of
      its peak RSS;
    * on CUDA, the paper's setting (:data:`GPU_CROP`) with an architecture step: the peak GPU
      memory the process reserved (what it holds, at least what its tensors took), and the
      projected search against the hours target where the projection is the paper's search
      (2,975 images, 40 epochs, architecture steps after 20; else the hours are ``None``).

    ``exact``: whether the step computes eq. 6 (``partial_channels`` 1; PC-DARTS changes the
    algorithm). The precision (bf16 autocast on a GPU) is in ``config``."""
    if any(config[key] != value for key, value in REFERENCE_SETTINGS.items() if key != "threads"):
        return None
    exact = config["partial_channels"] == 1
    if config["device"] == "cpu":
        port = PUBLIC_PORT_CPU.get(config["crop"])
        if port is None or config["threads"] != REFERENCE_SETTINGS["threads"]:
            return None
        speedup = port["weight_step_over_calibration"] / result["weight_step_over_calibration"]
        fraction = result["peak_rss_mib"] / port["peak_rss_mib"]
        return {
            "exact": exact,
            "public_port": port,
            "speedup_over_public_port": speedup,
            "speedup_target": CPU_SPEEDUP_TARGET[config["crop"]],
            "speedup_met": speedup >= CPU_SPEEDUP_TARGET[config["crop"]],
            "peak_rss_fraction_of_public_port": fraction,
            "memory_fraction_target": CPU_MEMORY_FRACTION_TARGET,
            "memory_met": fraction <= CPU_MEMORY_FRACTION_TARGET,
        }
    if config["device"] != "cuda" or config["crop"] != GPU_CROP or result["arch_step_s"] is None:
        return None
    memory = result["peak_gpu_reserved_mib"]
    paper = all(config[key] == value for key, value in PAPER_SEARCH.items())
    hours = result["projected_search_hours"] if paper else None
    return {
        "exact": exact,
        "peak_gpu_reserved_mib": memory,
        "memory_target_mib": GPU_MEMORY_TARGET_MIB,
        "memory_met": memory <= GPU_MEMORY_TARGET_MIB,
        "projected_search_hours": hours,
        "hours_target": GPU_HOURS_TARGET,
        "hours_met": None if hours is None else hours <= GPU_HOURS_TARGET,
    }


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


#: Allocators that replace malloc when preloaded (``LD_PRELOAD``), as named in their library files.
PRELOADABLE_ALLOCATORS = ("tcmalloc", "jemalloc", "mimalloc")


def memory_allocator(maps: str | None = None) -> str:
    """The malloc of this process, from the libraries it has mapped (``/proc/self/maps`` unless
    ``maps`` is given): one of :data:`PRELOADABLE_ALLOCATORS`, ``"system"`` for the C library's,
    or ``"unknown"`` where the map cannot be read. CPU step times depend on it (README)."""
    if maps is None:
        try:
            with open("/proc/self/maps") as file:
                maps = file.read()
        except OSError:
            return "unknown"
    libraries = {line.rsplit("/", 1)[-1] for line in maps.splitlines() if "/" in line}
    for name in PRELOADABLE_ALLOCATORS:
        if any(library.startswith(f"lib{name}") for library in libraries):
            return name
    return "system"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak_flops(
    size: int = 2048,
    repeats: int = 5,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> float:
    """FLOP/s of a large ``size`` x ``size`` matmul in ``dtype`` on ``device`` (random
    operands): the machine's practical limit for this process."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    device = a.device
    a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


def step_flops(forward, images: torch.Tensor, target: torch.Tensor) -> float:
    """FLOPs of one training step: the forward pass counted by ``torch.utils.flop_counter``,
    times 3 for forward + backward. (Its own count of ``convolution_backward`` multiplies
    grouped convolutions by their group count, so the backward is not taken from it.)"""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        F.cross_entropy(forward(images), target)
    return 3.0 * counter.get_total_flops()


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


def add_supernet_options(parser: argparse.ArgumentParser) -> None:
    """The supernet's size and the step's input, as this benchmark and the A/B scripts take them
    (defaults: the paper's search space, batch 2, 64x64 crops)."""
    parser.add_argument(
        "--filter-multiplier", type=int, default=8, help="F, channels per block at level 0"
    )
    parser.add_argument("--layers", type=int, default=12, help="L, layers of the supernet")
    parser.add_argument(
        "--levels", type=int, default=4, help="resolutions (level l: stride 4 * 2**l)"
    )
    parser.add_argument("--blocks", type=int, default=5, help="B, blocks per cell")
    parser.add_argument("--classes", type=int, default=19, help="classes of the random labels")
    parser.add_argument("--crop", type=int, default=64, help="side of the square input, pixels")
    parser.add_argument("--batch", type=int, default=2, help="images per step")


def supernet_from_options(args: argparse.Namespace, **options) -> Supernet:
    """The supernet that :func:`add_supernet_options`' arguments describe, seeded with 0;
    ``options`` are further :func:`build_supernet` arguments."""
    torch.manual_seed(0)
    return build_supernet(
        num_classes=args.classes,
        layers=args.layers,
        levels=args.levels,
        filter_multiplier=args.filter_multiplier,
        blocks=args.blocks,
        **options,
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_supernet_options(parser)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (the median is kept)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps before them")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--no-arch", action="store_true", help="skip the architecture step")
    parser.add_argument(
        "--checkpoint", action="store_true", help="activation checkpointing per node"
    )
    parser.add_argument(
        "--precision",
        choices=["fp32", "bf16"],
        default="fp32",
        help="bf16: autocast as search.precision=bf16 runs it (alpha and beta stay float32)",
    )
    parser.add_argument(
        "--cuda-graphs",
        action="store_true",
        help="replay each step from a CUDA graph, as search.cuda_graphs does (CUDA only)",
    )
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="PyTorch's deterministic algorithms, as search.deterministic uses (GPU speed cost)",
    )
    parser.add_argument(
        "--partial-channels",
        type=int,
        default=1,
        help="K of PC-DARTS partial channel connections (changes the algorithm; 1: exact eq. 6)",
    )
    project = PAPER_SEARCH
    parser.add_argument(
        "--project-images", type=int, default=project["project_images"], help="training images"
    )
    parser.add_argument(
        "--project-epochs", type=int, default=project["project_epochs"], help="search epochs"
    )
    parser.add_argument(
        "--project-arch-start",
        type=int,
        default=project["project_arch_start"],
        help="the epoch after which architecture steps run",
    )
    parser.add_argument(
        "--reference",
        action="store_true",
        help="also time the weight step of the plain eq. 6 implementation (slow)",
    )
    return parser


def main(argv: list[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.cuda_graphs and torch.device(args.device).type != "cuda":
        parser.error(f"--cuda-graphs needs a CUDA device, not --device {args.device}")
    with deterministic_algorithms(args.deterministic):
        return measure(args)


def measure(args: argparse.Namespace) -> dict:
    """The figures :func:`main` prints, for its parsed options."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    calibration_before = calibration_unit_seconds() if device.type == "cpu" else None
    # The process before the supernet exists (torch, this library, the calibration).
    baseline_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    net = supernet_from_options(args, partial_channels=args.partial_channels).to(device)
    net.train()
    net.checkpoint_nodes = args.checkpoint
    net.autocast_dtype = torch.bfloat16 if args.precision == "bf16" else None
    images = torch.randn(args.batch, 3, args.crop, args.crop, device=device)
    target = torch.randint(0, args.classes, (args.batch, args.crop, args.crop), device=device)
    arch = list(net.arch_parameters())

    def weight_step() -> None:
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(images), target).backward()

    def arch_step() -> None:
        # As in the search: the weight step frees its gradients after the optimiser step.
        net.zero_grad(set_to_none=True)
        loss_and_gradients(net, arch, images, target, -100)

    capture_s = None
    if args.cuda_graphs:
        # The steps of the search with search.cuda_graphs: both captured on the first call
        # (timed here), then replayed. The gradients land in the graphs' own tensors.
        graphed = graphed_steps(net, [list(net.weight_parameters()), arch], -100)
        weight_step = functools.partial(graphed[0], images, target)
        arch_step = functools.partial(graphed[1], images, target)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if args.cuda_graphs:  # the first call captures both steps' graphs
        capture_s = time_steps(weight_step, 1, 0, device)[0]
    weight_times = time_steps(weight_step, args.steps, args.warmup, device)
    arch_times = [] if args.no_arch else time_steps(arch_step, args.steps, args.warmup, device)
    # Peak memory before the reference runs (it needs far more).
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.type == "cuda":
        peak_gpu_mib = torch.cuda.max_memory_allocated(device) / 2**20
        peak_gpu_reserved_mib = torch.cuda.max_memory_reserved(device) / 2**20
    reference_times = []
    if args.reference:

        def reference_step() -> None:
            net.zero_grad(set_to_none=True)
            F.cross_entropy(reference_forward(net, images), target).backward()

        reference_times = time_steps(reference_step, args.steps, min(args.warmup, 1), device)
    calibration_after = calibration_unit_seconds() if device.type == "cpu" else None

    weight_median = statistics.median(weight_times)
    flops = step_flops(net, images, target)
    weight_mib = sum(p.numel() * p.element_size() for p in net.weight_parameters()) / 2**20
    result = {
        "config": vars(args),
        "allocator": memory_allocator(),
        "weight_step_s": weight_median,
        "weight_step_times_s": weight_times,
        "arch_step_s": statistics.median(arch_times) if arch_times else None,
        "capture_s": capture_s,
        "peak_rss_mib": peak_rss_mib,
        "weight_parameters": sum(p.numel() for p in net.weight_parameters()),
        "weight_mib": weight_mib,
        # Held by any weight step whatever its activations take: the process before the
        # supernet, the weights and their gradients.
        "baseline_rss_mib": baseline_rss_mib,
        "memory_floor_mib": baseline_rss_mib + 2 * weight_mib,
        "step_gflop": flops / 1e9,
        "step_gflop_per_s": flops / weight_median / 1e9,
    }
    # The matmul in the step's precision: fp32 on the CPU; on a GPU bf16 under --precision
    # bf16, else fp32 as torch.backends.cuda.matmul.allow_tf32 has it (cuDNN's convolutions
    # take TF32 where torch.backends.cudnn.allow_tf32 allows, by default).
    if device.type == "cpu":
        peak = matmul_peak_flops()
    else:
        dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
        peak = matmul_peak_flops(8192, 10, device, dtype)
        result["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
        result["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
    result["matmul_peak_gflop_per_s"] = peak / 1e9
    result["fraction_of_matmul_peak"] = flops / weight_median / peak
    if arch_times:
        # Each epoch: one weight step per batch of split A and, after the start epoch, one
        # architecture step per batch of split B (the optimiser steps are not timed).
        steps = math.ceil(args.project_images // 2 / args.batch)
        arch_epochs = max(0, args.project_epochs - args.project_arch_start)
        seconds = steps * (
            args.project_epochs * weight_median + arch_epochs * result["arch_step_s"]
        )
        result["weight_and_arch_steps_per_s"] = 1 / (weight_median + result["arch_step_s"])
        result["projected_search_hours"] = seconds / 3600
    if reference_times:
        result["reference_weight_step_s"] = statistics.median(reference_times)
        result["speedup_over_reference"] = result["reference_weight_step_s"] / weight_median
    if calibration_before is not None:
        calibration = (calibration_before + calibration_after) / 2
        result["calibration_s"] = calibration
        result["weight_step_over_calibration"] = weight_median / calibration
    if device.type == "cuda":
        result["peak_gpu_mib"] = peak_gpu_mib
        result["peak_gpu_reserved_mib"] = peak_gpu_reserved_mib
        result["gpu"] = torch.cuda.get_device_name(device)
    result["targets"] = target_report(vars(args) | {"device": device.type}, result)
    json.dump(result, sys.stdout, indent=2)
    print()
    return result


if __name__ == "__main__":
    main()
