"""In-process A/B of the joined ``prev``/``prev_prev`` mixed-op call against a call per input.

Two copies of the supernet with the same weights, one whose cells run ``prev`` and ``prev_prev``
as one call (the default, five calls per cell) and one with a call per input (six), alternate
weight steps (zero_grad, forward, cross-entropy, backward) in one process, in alternating order.
A process-level comparison moves with the shared machine's phases by more than the effect;
alternating steps in one process sees the same phases for both. Prints JSON: the medians and
minima of both and their ratios (joined / separate), and the largest difference of their logits
(training mode, before the steps).

    python experiments/ab_joined_calls.py --crop 64 --pairs 16
    python experiments/ab_joined_calls.py --crop 128 --pairs 10
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling benchmark script

from bench_supernet import add_supernet_options, supernet_from_options

from autodeeplab.space.cell import SearchCell
from autodeeplab.space.supernet import Supernet


def separate_calls(net: Supernet) -> Supernet:
    """A copy of ``net`` whose cells make one mixed-op call per input (same weights)."""
    other = copy.deepcopy(net)
    for node in other.nodes:
        cell = node.cell
        separate = SearchCell(
            cell.channels,
            cell.blocks,
            cell.paths,
            cell.has_prev_prev,
            cell.partial_channels,
            join_prev_prev=False,
        )
        separate.load_state_dict(cell.state_dict())
        node.cell = separate.train(cell.training)
    return other


def build_parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_supernet_options(parser)
    parser.add_argument("--pairs", type=int, default=16, help="timed steps of each version")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each version")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    joined = supernet_from_options(args).train()
    versions = {"joined": joined, "separate": separate_calls(joined)}
    images = torch.randn(args.batch, 3, args.crop, args.crop)
    target = torch.randint(0, args.classes, (args.batch, args.crop, args.crop))
    with torch.no_grad():  # training mode (batch statistics), on copies: no step counted
        logits = [copy.deepcopy(net)(images) for net in versions.values()]
    difference = (logits[0] - logits[1]).abs().max().item()

    def step(net: Supernet) -> float:
        start = time.perf_counter()
        net.zero_grad(set_to_none=True)
        F.cross_entropy(net(images), target).backward()
        return time.perf_counter() - start

    for _ in range(args.warmup):
        for net in versions.values():
            step(net)
    times: dict[str, list[float]] = {name: [] for name in versions}
    for i in range(args.pairs):
        order = list(versions) if i % 2 == 0 else list(reversed(versions))
        for name in order:
            times[name].append(step(versions[name]))
    result = {
        "config": vars(args),
        "max_logit_difference": difference,
        **{f"{name}_median_s": statistics.median(t) for name, t in times.items()},
        **{f"{name}_min_s": min(t) for name, t in times.items()},
    }
    result["median_ratio"] = result["joined_median_s"] / result["separate_median_s"]
    result["min_ratio"] = result["joined_min_s"] / result["separate_min_s"]
    json.dump(result, sys.stdout, indent=2)
    print()
    return result


if __name__ == "__main__":
    main()
