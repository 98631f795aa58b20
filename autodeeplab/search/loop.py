"""The search loop [P §4.2, §5.1]: alternating weight and architecture steps, per-epoch
evaluation, decoding, records and an exactly resumable checkpoint (README: The run directory)."""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from autodeeplab.data import (
    SeededSubset,
    dataset_from_config,
    epoch_loader,
    eval_transform,
    load_split,
    save_split,
    search_split,
    search_transform,
)
from autodeeplab.decode import decode
from autodeeplab.engine import distributed
from autodeeplab.engine.checkpoint import rng_state, save_checkpoint, set_rng_state
from autodeeplab.engine.metrics import ConfusionMatrix
from autodeeplab.engine.rundir import CHECKPOINT, open_run_dir
from autodeeplab.engine.runtime import deterministic_algorithms, peak_memory_mib, resolve_device
from autodeeplab.genotype import Genotype
from autodeeplab.models.backbone import LEVELS
from autodeeplab.ops import check_coarsest_map
from autodeeplab.search.bilevel import Gradients, arch_step, optimised_parameters, weight_step
from autodeeplab.search.config import SearchConfig, check_search_config
from autodeeplab.search.graphs import graphed_steps
from autodeeplab.search.records import TensorBoardLog, write_history
from autodeeplab.space.lattice import normalise_beta
from autodeeplab.space.supernet import Supernet, build_supernet

log = logging.getLogger(__name__)


def resumed_split(
    run_dir: Path, train_size: int, state: dict[str, Any] | None = None
) -> tuple[list[int], list[int]]:
    """The split A/B a resumed search in ``run_dir`` reads from its ``split.json``, checked
    against the training data's ``train_size`` samples and (given) the checkpoint ``state``."""
    split_path = run_dir / "split.json"
    if not split_path.is_file():
        raise FileNotFoundError(
            f"{split_path} is missing: a resumed search reads its split A/B from it"
        )
    part_a, part_b = load_split(split_path)
    beyond = [i for i in part_a + part_b if not 0 <= i < train_size]
    if beyond:
        raise ValueError(
            f"{split_path} assigns training samples {sorted(beyond)[:5]}, but the training data "
            f"has {train_size} samples now (does data.root hold other data than when the run "
            "began?)"
        )
    if state is not None and state["split"] != {"A": part_a, "B": part_b}:
        raise ValueError(f"{split_path} does not match the checkpoint's split")
    return part_a, part_b


def _check_split(cfg: SearchConfig, part_a: list[int], part_b: list[int]) -> None:
    """Raises ``ValueError`` unless each half of the split fills a batch on every process."""
    world = distributed.world_size()
    for name, part in (("A", part_a), ("B", part_b)):
        if len(part) // world < cfg.search.batch_size:
            ranks = f" ({len(part) // world} per process of {world})" if world > 1 else ""
            raise ValueError(
                f"split {name} has {len(part)} samples{ranks}, fewer than "
                f"search.batch_size={cfg.search.batch_size}; use more training samples "
                "or a smaller batch"
            )


@dataclass
class SearchData:
    """Split A (weights), split B (alpha, beta) and held-out data, with seeded loaders. Under
    ``torchrun`` each loader yields this rank's shard (``rank`` of ``world_size``)."""

    split_a: SeededSubset
    split_b: SeededSubset
    val: SeededSubset
    seed: int
    num_workers: int
    pin_memory: bool
    ignore_index: int
    rank: int = 0
    world_size: int = 1

    @staticmethod
    def datasets(cfg: SearchConfig) -> tuple[Dataset, Dataset]:
        """The training and held-out datasets of ``cfg.data``; for a new run also checks that
        both halves of the split fill a batch. Raises on bad data settings, so a search calls
        it before it makes its run directory."""
        data = cfg.data
        train_set = dataset_from_config(data, "train", data.train_samples)
        val_set = dataset_from_config(data, "val", data.val_samples)
        if len(train_set) < 2:
            limit = f" (data.train_samples={data.train_samples})" if data.train_samples else ""
            raise ValueError(
                f"the training split has {len(train_set)} sample{limit}; the search needs at "
                "least 2, for its halves A (weights) and B (alpha, beta)"
            )
        if not cfg.resume:  # a resumed run's split is read from its directory
            _check_split(cfg, *search_split(len(train_set), cfg.seed))
        return train_set, val_set

    @classmethod
    def prepare(
        cls,
        cfg: SearchConfig,
        run_dir: Path,
        device: torch.device,
        train_set: Dataset,
        val_set: Dataset,
    ) -> SearchData:
        """The split of ``train_set`` (written to ``run_dir/split.json``, or read from it on
        resume) and the loaders' settings."""
        data = cfg.data
        split_path = run_dir / "split.json"
        world = distributed.world_size()

        def split() -> tuple[list[int], list[int]]:
            if cfg.resume:
                part_a, part_b = resumed_split(run_dir, len(train_set))
            else:
                part_a, part_b = search_split(len(train_set), cfg.seed)
            _check_split(cfg, part_a, part_b)
            if not cfg.resume:
                save_split(split_path, part_a, part_b, seed=cfg.seed, dataset=data.name)
            return part_a, part_b

        # Rank 0 reads or writes split.json; every rank uses its split.
        part_a, part_b = distributed.run_on_main(split)
        augment = search_transform(
            data.crop_size,
            scale=(data.scale_min, data.scale_max),
            flip=data.flip,
            ignore_index=data.ignore_index,
        )
        return cls(
            split_a=SeededSubset(train_set, part_a, augment, seed=cfg.seed),
            split_b=SeededSubset(train_set, part_b, augment, seed=cfg.seed),
            val=SeededSubset(val_set, range(len(val_set)), eval_transform(), seed=cfg.seed),
            seed=cfg.seed,
            num_workers=data.num_workers,
            pin_memory=device.type == "cuda",
            ignore_index=data.ignore_index,
            rank=distributed.rank(),
            world_size=world,
        )

    def loader(
        self, dataset: Dataset, batch_size: int, *, seed: int, epoch: int, train: bool = True
    ) -> DataLoader:
        return epoch_loader(
            dataset,
            batch_size,
            shuffle=train,
            seed=seed,
            epoch=epoch,
            num_workers=self.num_workers,
            drop_last=train,
            pin_memory=self.pin_memory,
            ignore_index=self.ignore_index,
            rank=self.rank,
            world_size=self.world_size,
        )

    def batches_b(self, batch_size: int, epoch: int) -> Iterator:
        """Endless batches of split B for one epoch: a fresh pass whenever one is used up."""
        cycle = 0
        while True:
            yield from self.loader(
                self.split_b, batch_size, seed=self.seed + 1, epoch=epoch * 1000 + cycle
            )
            cycle += 1


@torch.no_grad()
def evaluate(
    net: nn.Module,
    loader: DataLoader,
    num_classes: int,
    ignore_index: int,
    device: torch.device,
) -> dict[str, float]:
    """Supernet loss (the mean cross-entropy over every labelled pixel) and mIoU on held-out
    data (BatchNorm in eval mode). Under ``torchrun`` ``loader`` holds this rank's shard and the
    scores are those of all shards together."""
    was_training = net.training
    net.eval()
    matrix = ConfusionMatrix(num_classes, ignore_index)
    total, count = 0.0, 0
    for images, target in loader:
        images, target = images.to(device), target.to(device)
        logits = net(images)
        loss = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
        total += loss.item()
        count += int((target != ignore_index).sum())
        matrix.update(logits, target)
    net.train(was_training)
    total, count = distributed.total([total, count])
    scores = distributed.all_reduce_confusion_(matrix).compute()
    return {
        "val_loss": total / max(count, 1),
        "miou": scores["miou"],
        "pixel_acc": scores["pixel_acc"],
    }


@dataclass
class Optimisers:
    weights: torch.optim.SGD
    arch: torch.optim.Adam
    schedule: torch.optim.lr_scheduler.CosineAnnealingLR

    @classmethod
    def build(cls, net: Supernet, cfg: SearchConfig) -> Optimisers:
        optim = cfg.optim
        weights = torch.optim.SGD(
            list(net.weight_parameters()),
            lr=optim.lr,
            momentum=optim.momentum,
            weight_decay=optim.weight_decay,
        )
        arch = torch.optim.Adam(
            net.arch_parameters(),
            lr=optim.arch_lr,
            betas=tuple(optim.arch_betas),
            weight_decay=optim.arch_weight_decay,
        )
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
            weights, T_max=cfg.search.epochs, eta_min=optim.lr_min
        )
        return cls(weights, arch, schedule)

    def state_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name).state_dict() for name in ("weights", "arch", "schedule")}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in ("weights", "arch", "schedule"):
            getattr(self, name).load_state_dict(state[name])


def train_epoch(
    net: Supernet,
    opt: Optimisers,
    data: SearchData,
    cfg: SearchConfig,
    epoch: int,
    device: torch.device,
    gradients: tuple[Gradients | None, Gradients | None] = (None, None),
) -> tuple[list[float], list[float]]:
    """One epoch of alternating steps: a weight step on a batch of A, then (after the warm-up
    epochs) an architecture step on a batch of B. Returns both loss lists. ``gradients``: how
    each step computes its loss and gradients (:func:`step_graphs`; default: eagerly)."""
    loop, ignore = cfg.search, cfg.data.ignore_index
    loader_a = data.loader(data.split_a, loop.batch_size, seed=cfg.seed, epoch=epoch)
    batches_b = data.batches_b(loop.batch_size, epoch)
    with_arch = epoch > loop.arch_start_epoch
    steps = len(loader_a) if loop.max_steps is None else min(len(loader_a), loop.max_steps)
    weight_losses: list[float] = []
    arch_losses: list[float] = []
    net.train()
    with tqdm(
        total=steps,
        desc=f"epoch {epoch}/{loop.epochs}",
        disable=not cfg.progress or not distributed.is_main(),
        leave=False,
        dynamic_ncols=True,
        file=sys.stderr,
    ) as bar:
        for images, target in loader_a:
            if len(weight_losses) == steps:
                break
            weight_losses.append(
                weight_step(
                    net,
                    opt.weights,
                    images.to(device),
                    target.to(device),
                    ignore_index=ignore,
                    grad_clip=cfg.optim.grad_clip,
                    gradients=gradients[0],
                )
            )
            if with_arch:
                images_b, target_b = next(batches_b)
                arch_losses.append(
                    arch_step(
                        net,
                        opt.arch,
                        images_b.to(device),
                        target_b.to(device),
                        ignore_index=ignore,
                        gradients=gradients[1],
                    )
                )
            bar.set_postfix(loss=f"{weight_losses[-1]:.3f}", refresh=False)
            bar.update()
    return weight_losses, arch_losses


def write_epoch_outputs(
    run_dir: Path,
    board: TensorBoardLog,
    net: Supernet,
    history: dict[str, list[Any]],
    records: list[dict[str, Any]],
    genotype: Genotype,
    blocks: int,
) -> None:
    """Everything an epoch leaves besides the checkpoint; rebuilt from it on resume."""
    epoch = records[-1]["epoch"]
    genotype.to_json(run_dir / "genotypes" / f"epoch_{epoch:03d}.json")
    write_history(run_dir, history, records, blocks)
    alpha, beta = history["alpha"][-1], history["beta"][-1]
    beta_weights = normalise_beta(beta, net.lattice.beta_mask())
    board.epoch(epoch, records[-1], torch.softmax(alpha, -1), beta_weights, genotype)


def run_search(
    cfg: SearchConfig, run_dir: str | Path, *, on_start: Callable[[], None] | None = None
) -> Genotype:
    """Run (or, with ``cfg.resume``, continue) a search into ``run_dir``; returns the final
    genotype, also written to ``run_dir/genotype.json``. ``on_start`` runs once the run
    directory is locked and checked (the CLI records its config there).

    Under ``torchrun`` (an initialised process group) every rank calls this: each trains on its
    shard of A and B with gradients averaged over the ranks, so the weights, alpha, beta and
    the genotype stay identical on all ranks; only rank 0 touches ``run_dir``."""
    run_dir = Path(run_dir)
    # Refuse bad values before the run directory is made.
    check_search_config(cfg)
    check_coarsest_map(
        cfg.data.crop_size,
        cfg.search.batch_size,
        min(cfg.space.levels - 1, cfg.space.layers),  # level s exists from layer s on
        "search.batch_size",
    )
    autocast_dtype(cfg.search.precision)
    if cfg.search.cuda_graphs and resolve_device(cfg.device).type != "cuda":
        raise ValueError(
            f"search.cuda_graphs=true needs a CUDA device; device={cfg.device!r} is "
            f"{resolve_device(cfg.device)}"
        )
    if cfg.space.levels > LEVELS:
        log.warning(
            "space.levels=%d: a path that reaches level %d or beyond (output stride %d) cannot "
            "be retrained; the retrain's DeepLab model builds levels 0..%d",
            cfg.space.levels,
            LEVELS,
            4 * 2**LEVELS,
            LEVELS - 1,
        )
    if cfg.search.arch_start_epoch >= cfg.search.epochs:
        log.warning(
            "search.arch_start_epoch=%d with search.epochs=%d: no architecture steps, so the "
            "genotype decodes alpha and beta as initialised",
            cfg.search.arch_start_epoch,
            cfg.search.epochs,
        )
    # The device and data settings too: a refusal after the run directory is made would leave
    # it unusable.
    resolve_device(cfg.device)
    datasets = SearchData.datasets(cfg)
    with open_run_dir(
        run_dir,
        stage="search",
        resume=cfg.resume,
        config=dataclasses.asdict(cfg),
        # (A retrain's log: this is another stage's run, stopped before its first checkpoint.)
        outputs=(
            "genotype.json",
            "split.json",
            "metrics.jsonl",
            "events.out.tfevents.*",
            "retrain.log",
        ),
        required=(
            "config",
            "model",
            "optimisers",
            "epoch",
            "rng",
            "split",
            "history",
            "records",
            "genotype",
        ),
        # Refusals of the resume come before on_start, which records the command.
        check_state=lambda state: resumed_split(run_dir, len(datasets[0]), state),
        # Every epoch done and the final genotype written: nothing to continue or repair.
        complete=lambda state: (
            state["epoch"] >= cfg.search.epochs and (run_dir / "genotype.json").is_file()
        ),
        on_start=on_start,
    ) as state:
        if state is not None and state["complete"]:
            log.info(
                "%s holds a complete search (epoch %d of %d): nothing to do; its genotype is in %s",
                run_dir,
                state["epoch"],
                cfg.search.epochs,
                run_dir / "genotype.json",
            )
            return Genotype.from_dict(state["genotype"], levels=cfg.space.levels)
        with deterministic_algorithms(cfg.search.deterministic):
            return _search(cfg, run_dir, state, datasets)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}


def autocast_dtype(precision: str) -> torch.dtype | None:
    """``search.precision`` -> the supernet's autocast dtype (``None``: plain float32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"search.precision={precision!r}: expected one of {sorted(PRECISIONS)}")
    return PRECISIONS[precision]


def step_graphs(
    net: Supernet, opt: Optimisers, cfg: SearchConfig
) -> tuple[Gradients | None, Gradients | None]:
    """The weight and architecture steps' CUDA graphs where ``search.cuda_graphs`` is on
    (:func:`~autodeeplab.search.graphs.graphed_steps`), else ``(None, None)``: eager steps."""
    if not cfg.search.cuda_graphs:
        return None, None
    params = [optimised_parameters(o) for o in (opt.weights, opt.arch)]
    weights, arch = graphed_steps(net, params, cfg.data.ignore_index)
    return weights, arch


def _search(
    cfg: SearchConfig,
    run_dir: Path,
    state: dict[str, Any] | None,
    datasets: tuple[Dataset, Dataset],
) -> Genotype:
    loop = cfg.search
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = distributed.local_device(resolve_device(cfg.device))
    main = distributed.is_main()
    torch.manual_seed(cfg.seed)
    model_args = dict(num_classes=cfg.data.num_classes, **dataclasses.asdict(cfg.space))
    net = build_supernet(**model_args).to(device)
    net.checkpoint_nodes = loop.checkpoint
    net.autocast_dtype = autocast_dtype(loop.precision)
    opt = Optimisers.build(net, cfg)
    gradients = step_graphs(net, opt, cfg)
    # After everything that can refuse the settings: this writes split.json, the first output.
    data = SearchData.prepare(cfg, run_dir, device, *datasets)
    if main:  # where the run goes and on what, before the first epoch's wait
        log.info(
            "search in %s on %s: %s data, split A %d and B %d images, %d held out; "
            "search.epochs=%d, architecture steps after epoch %d",
            run_dir,
            device,
            cfg.data.name,
            len(data.split_a),
            len(data.split_b),
            len(data.val),
            loop.epochs,
            loop.arch_start_epoch,
        )

    history: dict[str, list[Any]] = {"epoch": [], "alpha": [], "beta": []}
    records: list[dict[str, Any]] = []
    start, genotype = 0, None
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimisers"])
        set_rng_state(state["rng"])
        history, records, start = state["history"], state["records"], state["epoch"]
        genotype = Genotype.from_dict(state["genotype"], levels=cfg.space.levels)
        log.info("resumed %s after epoch %d", run_dir, start)
    # Every rank starts from the same seed, so from the same weights, alpha and beta; rank 0's
    # are given to all anyway, as DistributedDataParallel does.
    distributed.broadcast_module_(net)
    # On resume, TensorBoard entries from the checkpoint's epoch on are purged and rewritten.
    board = TensorBoardLog(run_dir, cfg.tensorboard and main, purge_step=start or None)
    if state is not None and main:
        # A kill may have fallen between the checkpoint and the files derived from it.
        write_epoch_outputs(run_dir, board, net, history, records, genotype, cfg.space.blocks)

    for epoch in range(start + 1, loop.epochs + 1):
        began = time.perf_counter()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        weight_losses, arch_losses = train_epoch(net, opt, data, cfg, epoch, device, gradients)
        lr = opt.schedule.get_last_lr()[0]
        opt.schedule.step()
        # The ranks' weights, alpha and beta agree, but each rank's BatchNorm running statistics
        # follow its own batches: all ranks take rank 0's before they evaluate their shards of
        # the held-out data and rank 0 saves them, so that a resumed run continues every rank
        # from the state the uninterrupted run had (training uses batch statistics only).
        distributed.broadcast_module_(net, buffers_only=True)
        scores = evaluate(
            net,
            data.loader(data.val, loop.eval_batch_size, seed=cfg.seed, epoch=0, train=False),
            cfg.data.num_classes,
            cfg.data.ignore_index,
            device,
        )
        # Every rank ran the same number of steps: the mean of the ranks' means is the mean loss.
        train_loss, arch_loss = distributed.average(
            [float(np.mean(weight_losses)), float(np.mean(arch_losses)) if arch_losses else 0.0]
        )
        if not (math.isfinite(train_loss) and math.isfinite(arch_loss)):
            kept = (
                f"the last checkpoint, {run_dir / CHECKPOINT}, holds epoch {epoch - 1}"
                if epoch > 1
                else "no checkpoint was written"
            )
            if arch_losses:
                arch, rates = f"architecture loss {arch_loss}", "optim.lr or optim.arch_lr"
            else:
                arch, rates = "no architecture steps", "optim.lr"
            raise ValueError(
                f"epoch {epoch}: mean weight loss {train_loss}, {arch}: "
                f"the search diverged (lower {rates}, or set optim.grad_clip); " + kept
            )
        alpha, beta = (p.detach().cpu().clone() for p in net.arch_parameters())
        genotype = decode(alpha, beta, meta={"epoch": epoch})
        history["epoch"].append(epoch)
        history["alpha"].append(alpha)
        history["beta"].append(beta)
        records.append(
            {
                "epoch": epoch,
                "train_loss": train_loss,
                "arch_loss": arch_loss if arch_losses else None,
                **scores,
                "lr": lr,
                "path": list(genotype.path),
                "path_probability": genotype.meta["path_probability"],
                "seconds": time.perf_counter() - began,
                "peak_memory_mib": peak_memory_mib(device),
            }
        )
        if not main:
            continue
        # The checkpoint first: every file below can be rebuilt from it on resume.
        save_checkpoint(
            {
                "stage": "search",
                "epoch": epoch,
                "world_size": distributed.world_size(),
                "config": dataclasses.asdict(cfg),
                "model_args": model_args,
                "model": net.state_dict(),
                "optimisers": opt.state_dict(),
                "rng": rng_state(),
                "split": {"A": data.split_a.indices, "B": data.split_b.indices},
                "history": history,
                "records": records,
                "genotype": genotype.to_dict(),
            },
            run_dir / CHECKPOINT,
        )
        write_epoch_outputs(run_dir, board, net, history, records, genotype, cfg.space.blocks)
        record = records[-1]
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
    if main:
        genotype.to_json(run_dir / "genotype.json")
        log.info("genotype written to %s\n%s", run_dir / "genotype.json", genotype.describe())
    return genotype
