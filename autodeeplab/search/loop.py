"""The search loop [P §4.2, §5.1]: alternating weight and architecture steps, per-epoch
evaluation, decoding, records and an exactly resumable checkpoint (DESIGN §3, §8)."""

from __future__ import annotations

import dataclasses
import logging
import resource
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from autodeeplab.data import (
    SeededSubset,
    build_dataset,
    epoch_loader,
    eval_transform,
    load_split,
    save_split,
    search_split,
    search_transform,
)
from autodeeplab.decode import decode
from autodeeplab.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from autodeeplab.engine.metrics import ConfusionMatrix
from autodeeplab.genotype import Genotype
from autodeeplab.search.bilevel import arch_step, segmentation_loss, weight_step
from autodeeplab.search.config import DataConfig, SearchConfig
from autodeeplab.search.records import TensorBoardLog, write_arch_history, write_metrics
from autodeeplab.space.supernet import Supernet, build_supernet

log = logging.getLogger(__name__)

CHECKPOINT = Path("checkpoints") / "last.pt"


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but CUDA is not available; use device=cpu or auto")
    return device


def peak_memory_mib(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def _dataset(cfg: DataConfig, split: str, limit: int | None):
    dataset = build_dataset(cfg.name, root=cfg.root, split=split, **cfg.options)
    if getattr(dataset, "num_classes", cfg.num_classes) != cfg.num_classes:
        raise ValueError(
            f"data.num_classes={cfg.num_classes} but dataset {cfg.name!r} has "
            f"{dataset.num_classes} classes"
        )
    if limit is not None:
        if limit < 1:
            raise ValueError(f"data.{split}_samples={limit}; expected a positive number or null")
        dataset = torch.utils.data.Subset(dataset, range(min(limit, len(dataset))))
    return dataset


def _batches(loader_factory, epoch: int) -> Iterator:
    """Endless batches of split B: a fresh pass each time one is used up."""
    cycle = 0
    while True:
        yield from loader_factory(epoch * 1000 + cycle)
        cycle += 1


@torch.no_grad()
def evaluate(
    net: nn.Module, loader, num_classes: int, ignore_index: int, device: torch.device
) -> dict[str, float]:
    """Supernet loss and mIoU on held-out data (BatchNorm in eval mode)."""
    was_training = net.training
    net.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index)
    total, count = 0.0, 0
    for images, target in loader:
        images, target = images.to(device), target.to(device)
        logits = net(images)
        total += segmentation_loss(logits, target, ignore_index).item() * len(images)
        count += len(images)
        matrix.update(logits, target)
    net.train(was_training)
    scores = matrix.compute()
    return {
        "val_loss": total / max(count, 1),
        "miou": scores["miou"],
        "pixel_acc": scores["pixel_acc"],
    }


def run_search(cfg: SearchConfig, run_dir: str | Path) -> Genotype:
    """Run (or, with ``cfg.resume``, continue) a search into ``run_dir``; returns the final
    genotype, also written to ``run_dir/genotype.json``."""
    run_dir = Path(run_dir)
    checkpoint_path = run_dir / CHECKPOINT
    if not cfg.resume and (checkpoint_path.exists() or (run_dir / "genotype.json").exists()):
        raise FileExistsError(
            f"{run_dir} already holds a search; pass resume=true to continue it or choose "
            "another hydra.run.dir (earlier outputs are never overwritten)"
        )
    if cfg.resume and not checkpoint_path.exists():
        raise FileNotFoundError(f"resume=true but there is no checkpoint at {checkpoint_path}")
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    loop, data, optim = cfg.search, cfg.data, cfg.optim
    if loop.arch_start_epoch < 0 or loop.epochs < 1:
        raise ValueError(
            f"search.epochs={loop.epochs} and search.arch_start_epoch="
            f"{loop.arch_start_epoch}: expected epochs >= 1 and a start >= 0"
        )
    torch.manual_seed(cfg.seed)

    train_set = _dataset(data, "train", data.train_samples)
    val_set = _dataset(data, "val", data.val_samples)
    split_path = run_dir / "split.json"
    if cfg.resume:
        part_a, part_b = load_split(split_path)
    else:
        part_a, part_b = search_split(len(train_set), cfg.seed)
        save_split(split_path, part_a, part_b, seed=cfg.seed, dataset=data.name)
    augment = search_transform(
        data.crop_size, scale=(data.scale_min, data.scale_max), flip=data.flip
    )
    split_a = SeededSubset(train_set, part_a, augment, seed=cfg.seed)
    split_b = SeededSubset(train_set, part_b, augment, seed=cfg.seed)
    val = SeededSubset(val_set, range(len(val_set)), eval_transform(), seed=cfg.seed)

    def loader(dataset, batch_size, *, shuffle, seed, epoch, drop_last=True):
        return epoch_loader(
            dataset,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            epoch=epoch,
            num_workers=data.num_workers,
            drop_last=drop_last,
            pin_memory=device.type == "cuda",
        )

    model_args = dict(num_classes=data.num_classes, **dataclasses.asdict(cfg.space))
    net: Supernet = build_supernet(**model_args).to(device)
    weight_opt = torch.optim.SGD(
        list(net.weight_parameters()),
        lr=optim.lr,
        momentum=optim.momentum,
        weight_decay=optim.weight_decay,
    )
    arch_opt = torch.optim.Adam(
        net.arch_parameters(),
        lr=optim.arch_lr,
        betas=tuple(optim.arch_betas),
        weight_decay=optim.arch_weight_decay,
    )
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        weight_opt, T_max=loop.epochs, eta_min=optim.lr_min
    )
    history: dict[str, list[Any]] = {"epoch": [], "alpha": [], "beta": []}
    records: list[dict[str, Any]] = []
    start = 0
    if cfg.resume:
        state = load_checkpoint(checkpoint_path, required=("model", "epoch", "history"))
        net.load_state_dict(state["model"])
        weight_opt.load_state_dict(state["weight_optimizer"])
        arch_opt.load_state_dict(state["arch_optimizer"])
        schedule.load_state_dict(state["schedule"])
        set_rng_state(state["rng"])
        history, records, start = state["history"], state["records"], state["epoch"]
        if start > 0:  # bring the derived files back in line with the checkpoint
            write_arch_history(
                run_dir / "arch_history.npz",
                history["epoch"],
                history["alpha"],
                history["beta"],
                cfg.space.blocks,
            )
            write_metrics(run_dir / "metrics.jsonl", records)
        log.info("resumed %s after epoch %d", run_dir, start)

    board = TensorBoardLog(run_dir, cfg.tensorboard, purge_step=start + 1 if start else None)
    genotype = None
    for epoch in range(start + 1, loop.epochs + 1):
        began = time.perf_counter()
        with_arch = epoch > loop.arch_start_epoch
        loader_a = loader(split_a, loop.batch_size, shuffle=True, seed=cfg.seed, epoch=epoch)
        batches_b = _batches(
            lambda e: loader(split_b, loop.batch_size, shuffle=True, seed=cfg.seed + 1, epoch=e),
            epoch,
        )
        steps = len(loader_a) if loop.max_steps is None else min(len(loader_a), loop.max_steps)
        net.train()
        weight_losses, arch_losses = [], []
        bar = tqdm(
            total=steps,
            desc=f"epoch {epoch}/{loop.epochs}",
            disable=not cfg.progress,
            leave=False,
            dynamic_ncols=True,
            file=sys.stderr,
        )
        for step, (images, target) in enumerate(loader_a):
            if step >= steps:
                break
            weight_losses.append(
                weight_step(
                    net,
                    weight_opt,
                    images.to(device),
                    target.to(device),
                    ignore_index=data.ignore_index,
                    grad_clip=optim.grad_clip,
                )
            )
            if with_arch:
                images_b, target_b = next(batches_b)
                arch_losses.append(
                    arch_step(
                        net,
                        arch_opt,
                        images_b.to(device),
                        target_b.to(device),
                        ignore_index=data.ignore_index,
                    )
                )
            bar.set_postfix(loss=f"{weight_losses[-1]:.3f}", refresh=False)
            bar.update()
        bar.close()
        lr = schedule.get_last_lr()[0]
        schedule.step()
        scores = evaluate(
            net,
            loader(
                val, loop.eval_batch_size, shuffle=False, seed=cfg.seed, epoch=0, drop_last=False
            ),
            data.num_classes,
            data.ignore_index,
            device,
        )
        alpha, beta = (p.detach().cpu().clone() for p in net.arch_parameters())
        genotype = decode(alpha, beta, meta={"epoch": epoch})
        history["epoch"].append(epoch)
        history["alpha"].append(alpha.numpy())
        history["beta"].append(beta.numpy())
        record = {
            "epoch": epoch,
            "train_loss": float(np.mean(weight_losses)),
            "arch_loss": float(np.mean(arch_losses)) if arch_losses else None,
            **scores,
            "lr": lr,
            "path": list(genotype.path),
            "path_probability": genotype.meta["path_probability"],
            "seconds": time.perf_counter() - began,
            "peak_memory_mib": peak_memory_mib(device),
        }
        records.append(record)
        # The checkpoint first: every file below can be rebuilt from it on resume.
        save_checkpoint(
            {
                "stage": "search",
                "epoch": epoch,
                "config": dataclasses.asdict(cfg),
                "model_args": model_args,
                "model": net.state_dict(),
                "weight_optimizer": weight_opt.state_dict(),
                "arch_optimizer": arch_opt.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": rng_state(),
                "split": {"A": part_a, "B": part_b},
                "history": history,
                "records": records,
                "genotype": genotype.to_dict(),
            },
            checkpoint_path,
        )
        genotype.to_json(run_dir / "genotypes" / f"epoch_{epoch:03d}.json")
        write_arch_history(
            run_dir / "arch_history.npz",
            history["epoch"],
            history["alpha"],
            history["beta"],
            cfg.space.blocks,
        )
        write_metrics(run_dir / "metrics.jsonl", records)
        scalars = {
            f"loss/{k}": record[k]
            for k in ("train_loss", "arch_loss", "val_loss")
            if record[k] is not None
        }
        scalars.update(
            {
                "val/miou": record["miou"],
                "val/pixel_acc": record["pixel_acc"],
                "lr": lr,
                "arch/path_probability": record["path_probability"],
                "time/epoch_seconds": record["seconds"],
            }
        )
        board.epoch(epoch, scalars, torch.softmax(alpha, -1), net.beta_weights().detach(), genotype)
        arch_note = f" arch_loss {record['arch_loss']:.3f}" if arch_losses else ""
        log.info(
            "epoch %d/%d: train_loss %.3f%s val mIoU %.3f (%.0f s) path %s",
            epoch,
            loop.epochs,
            record["train_loss"],
            arch_note,
            record["miou"],
            record["seconds"],
            " ".join(map(str, genotype.path)),
        )
    board.close()
    if genotype is None:  # resumed a finished run: its last genotype is the result
        genotype = Genotype.from_dict(state["genotype"], levels=cfg.space.levels)
    genotype.to_json(run_dir / "genotype.json")
    log.info("genotype written to %s\n%s", run_dir / "genotype.json", genotype.describe())
    return genotype
