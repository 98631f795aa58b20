"""Data-pipeline throughput benchmark: how many training samples per second the loader delivers.

Writes N synthetic Cityscapes-sized (1024x2048) JPEG images with PNG class masks (19 classes)
into a temporary ``folder`` dataset, then times the search's training pipeline on it: decode,
random scale 0.5-2.0, random crop, flip and normalisation (``search_transform`` through
``SeededSubset``) batched by ``epoch_loader``, once per worker count. Prints JSON: samples/s per
worker count, first-batch latency, and the single-process cost of decoding and of the transform
per sample (where the time goes).

    python experiments/bench_data.py
    python experiments/bench_data.py --images 16 --batch 2 --crop 513 --workers 0 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from autodeeplab.data import SeededSubset, build_dataset, epoch_loader, search_transform
from autodeeplab.data import folder as _folder  # noqa: F401  (registers "folder")

NUM_CLASSES = 19


def write_sample(root: Path, index: int, height: int, width: int, rng: np.random.Generator) -> None:
    """One image + mask: ~40 Voronoi regions of random classes, each a class colour plus
    coarse and fine noise, so JPEG decoding costs about what a real photo costs."""
    seeds = rng.uniform(0, 1, (40, 2)) * (height, width)
    classes = rng.integers(0, NUM_CLASSES, len(seeds))
    # Regions on a 1/8 grid, upsampled: exact Voronoi at full size would dominate setup time.
    gy, gx = np.mgrid[0:height:8, 0:width:8]
    dist = (gy[None] - seeds[:, 0, None, None]) ** 2 + (gx[None] - seeds[:, 1, None, None]) ** 2
    coarse = classes[np.argmin(dist, axis=0)]
    mask = coarse.repeat(8, axis=0).repeat(8, axis=1)[:height, :width].astype(np.uint8)
    colours = rng.integers(30, 225, (NUM_CLASSES, 3))
    blotches = rng.normal(0, 20, (height // 32 + 1, width // 32 + 1, 3))
    blotches = blotches.repeat(32, axis=0).repeat(32, axis=1)[:height, :width]
    grain = rng.normal(0, 12, (height, width, 1))
    image = np.clip(colours[mask] + blotches + grain, 0, 255).astype(np.uint8)
    Image.fromarray(image).save(root / "images" / "train" / f"img{index:04d}.jpg", quality=90)
    Image.fromarray(mask, mode="L").save(root / "masks" / "train" / f"img{index:04d}.png")


def make_dataset(root: Path, count: int, height: int, width: int, seed: int = 0) -> None:
    """A ``folder`` dataset with ``count`` training samples under ``root``."""
    for sub in ("images", "masks"):
        (root / sub / "train").mkdir(parents=True, exist_ok=True)
    (root / "classes.txt").write_text("".join(f"class{c}\n" for c in range(NUM_CLASSES)))
    rng = np.random.default_rng(seed)
    for i in range(count):
        write_sample(root, i, height, width, rng)


def time_epochs(subset, args: argparse.Namespace, workers: int) -> dict:
    """Time ``args.warmup + args.epochs`` epochs with ``workers`` loader processes. Each epoch
    builds its loader, as the search does, so worker start-up is part of the figure."""
    seconds, first_batch, timed_samples = [], [], 0
    for epoch in range(args.warmup + args.epochs):
        start = time.perf_counter()
        loader = epoch_loader(
            subset,
            args.batch,
            shuffle=True,
            seed=0,
            epoch=epoch,
            num_workers=workers,
            pin_memory=False,  # CPU-only machine: pinning would only cost a copy
        )
        samples = 0
        for b, (images, masks) in enumerate(loader):
            if b == 0:
                first = time.perf_counter() - start
            assert images.shape[-2:] == masks.shape[-2:] == (args.crop, args.crop)
            samples += len(images)
        del loader  # shuts its workers down before the next epoch's start
        if epoch >= args.warmup:
            seconds.append(time.perf_counter() - start)
            first_batch.append(first)
            timed_samples += samples
    return {
        "num_workers": workers,
        "samples_per_s": round(timed_samples / sum(seconds), 2),
        "epoch_s": [round(s, 3) for s in seconds],
        "first_batch_s": round(statistics.median(first_batch), 3),
    }


def stage_costs(dataset, transform, count: int) -> dict:
    """Median single-process milliseconds per sample of decoding (``dataset[i]``: JPEG + PNG
    read, label check) and of the augmentation alone."""
    decode, augment = [], []
    for i in range(count):
        start = time.perf_counter()
        image, mask = dataset[i]
        decode.append(time.perf_counter() - start)
        generator = torch.Generator().manual_seed(i)
        start = time.perf_counter()
        transform(image, mask, generator)
        augment.append(time.perf_counter() - start)
    return {
        "decode_ms": round(1000 * statistics.median(decode), 1),
        "transform_ms": round(1000 * statistics.median(augment), 1),
    }


def build_parser() -> argparse.ArgumentParser:
    """The command line of :func:`main`."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16, help="samples in the dataset")
    parser.add_argument("--height", type=int, default=1024, help="image height, pixels")
    parser.add_argument("--width", type=int, default=2048, help="image width, pixels")
    parser.add_argument("--crop", type=int, default=513, help="side of the training crop")
    parser.add_argument("--batch", type=int, default=2, help="images per batch")
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[0, 1, 2], help="loader worker counts to time"
    )
    parser.add_argument("--epochs", type=int, default=2, help="timed epochs per worker count")
    parser.add_argument("--warmup", type=int, default=1, help="untimed epochs first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (main process)")
    return parser


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        make_dataset(root, args.images, args.height, args.width)
        elapsed = time.perf_counter() - start
        print(f"wrote {args.images} samples in {elapsed:.1f} s", file=sys.stderr)
        dataset = build_dataset("folder", root=root, split="train")
        transform = search_transform(args.crop, scale=(0.5, 2.0), flip=True)
        subset = SeededSubset(dataset, range(len(dataset)), transform, seed=0)
        result = {
            "image_size": [args.height, args.width],
            "crop": args.crop,
            "batch": args.batch,
            "images": args.images,
            "epochs": args.epochs,
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "jpeg_mib": round(
                sum(p.stat().st_size for p in root.glob("images/train/*")) / args.images / 2**20,
                2,
            ),
            **stage_costs(dataset, transform, min(args.images, 8)),
            "loader": [],
        }
        for workers in args.workers:
            result["loader"].append(time_epochs(subset, args, workers))
            print(json.dumps(result["loader"][-1]), file=sys.stderr)
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
