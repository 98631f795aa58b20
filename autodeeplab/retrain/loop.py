"""The retrain loop [P §5.2]: a decoded genotype trained from scratch with SGD and a poly
learning rate, validated every N iterations, with best and last checkpoints that describe the
model (``autodeeplab.load_model`` rebuilds it) and resume exactly.

Under ``torchrun`` the model is wrapped in DistributedDataParallel (with SyncBatchNorm on CUDA:
BatchNorm statistics over the global batch), each rank trains on its shard of every epoch
(``train.batch_size`` is per process), each validates a shard and the confusion matrices are
summed; rank 0 alone writes the run directory."""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from autodeeplab.data import SeededSubset, dataset_from_config, eval_transform, search_transform
from autodeeplab.data.config import DataConfig
from autodeeplab.data.split import derive_seed, pad_collate
from autodeeplab.data.transforms import ColorJitter, Compose
from autodeeplab.engine import distributed
from autodeeplab.engine.checkpoint import (
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from autodeeplab.engine.evaluation import evaluate_model
from autodeeplab.engine.losses import build_loss
from autodeeplab.engine.rundir import CHECKPOINT, open_run_dir
from autodeeplab.engine.runtime import deterministic_algorithms, peak_memory_mib, resolve_device
from autodeeplab.engine.schedules import poly_lr
from autodeeplab.files import atomic_write_text
from autodeeplab.genotype import Genotype, load_genotype
from autodeeplab.models import build_model
from autodeeplab.ops import check_coarsest_map
from autodeeplab.retrain.config import RetrainConfig, check_retrain_config

log = logging.getLogger(__name__)

BEST = Path("checkpoints") / "best.pt"


def train_transform(data: DataConfig, color_jitter: float) -> Callable:
    """Random scale, crop with ignore padding, flip (+ optional colour jitter), normalise."""
    steps = search_transform(
        data.crop_size,
        scale=(data.scale_min, data.scale_max),
        flip=data.flip,
        ignore_index=data.ignore_index,
    )
    if color_jitter > 0:
        jitter = ColorJitter(color_jitter, color_jitter, color_jitter)
        # Jitter the [0, 1] image, before normalisation (the last step).
        return Compose([*steps.transforms[:-1], jitter, steps.transforms[-1]])
    return steps


def epoch_batches(
    dataset: SeededSubset,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    skip: int,
    num_workers: int,
    ignore_index: int,
    pin_memory: bool,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """This epoch's batches in an order that depends only on (seed, epoch), from batch ``skip``
    on (a resumed run continues mid-epoch with exactly the batches it would have seen). With
    ``world_size > 1``, process ``rank``'s shard: every ``world_size``-th sample of that order."""
    dataset.set_epoch(epoch)
    generator = torch.Generator().manual_seed(derive_seed(seed, epoch))
    order = torch.randperm(len(dataset), generator=generator).tolist()
    if world_size > 1:
        # As DistributedSampler: equal shards (the tail is left out), disjoint, strided.
        order = order[: len(order) - len(order) % world_size][rank::world_size]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=order[skip * batch_size :],
        # Its own generator: a loader iterator draws a seed from the generator it is given (else
        # from the global one, which Drop Path uses), so a resumed run draws the same masks.
        generator=torch.Generator().manual_seed(derive_seed(seed, epoch, 1)),
        drop_last=True,
        num_workers=num_workers,
        pin_memory=pin_memory,
        collate_fn=functools.partial(pad_collate, ignore_index=ignore_index),
    )


def check_same_genotype(
    spec: str, genotype: Genotype, run_dir: Path, state: dict[str, Any]
) -> None:
    """Refuses to resume the retrain of ``run_dir`` (checkpoint ``state``) with ``genotype``
    (read from ``genotype=spec``) where it is another architecture than the one trained: the
    config holds the genotype's file name only, and the file itself may have changed."""
    trained = Genotype.from_dict(state["model_args"]["genotype"])
    if trained != genotype:
        changed = [
            f"block{b}"
            for b in range(1, max(len(trained.cell), len(genotype.cell)) + 1)
            if trained.cell[b - 1 : b] != genotype.cell[b - 1 : b]
        ] + (["path"] if trained.path != genotype.path else [])
        raise ValueError(
            f"genotype={spec} now describes another architecture than the one "
            f"{run_dir} trained ({', '.join(changed)} changed); restore the file to resume, "
            "or start a new run"
        )


def run_retrain(
    cfg: RetrainConfig, run_dir: str | Path, *, on_start: Callable[[], None] | None = None
) -> dict[str, Any]:
    """Train (or, with ``cfg.resume``, continue) into ``run_dir``; returns the best validation
    record. ``on_start`` runs once the directory is locked and checked. Under ``torchrun``
    every rank calls this; only rank 0 touches ``run_dir``."""
    run_dir = Path(run_dir)
    check_retrain_config(cfg)
    # Everything else that can refuse the settings, before the run directory is made (a
    # refusal after would leave it unusable).
    resolve_device(cfg.device)
    inputs = RetrainInputs.load(cfg)
    with open_run_dir(
        run_dir,
        stage="retrain",
        resume=cfg.resume,
        config=dataclasses.asdict(cfg),
        # TensorBoard's file marks a run that stopped before its first checkpoint.
        # (A search's log: this is another stage's run, stopped before its first checkpoint.)
        outputs=(str(BEST), "metrics.jsonl", "events.out.tfevents.*", "search.log"),
        required=(
            "config",
            "model_args",
            "model",
            "optimizer",
            "schedule",
            "rng",
            "step",
            "records",
            "best",
        ),
        # Refusals of the resume come before on_start, which records the command.
        check_state=lambda state: check_same_genotype(
            cfg.genotype, inputs.genotype, run_dir, state
        ),
        # Every iteration trained and the last validation's outputs written (metrics.jsonl
        # last, after TensorBoard's entries): nothing to continue or repair.
        complete=lambda state: (
            state["step"] >= cfg.train.iterations and _metrics_current(run_dir, state["records"])
        ),
        on_start=on_start,
    ) as state:
        if state is not None and state["complete"]:
            return _complete(cfg, run_dir, state)
        with deterministic_algorithms(cfg.train.deterministic):
            return _retrain(cfg, run_dir, state, inputs)


@dataclasses.dataclass
class RetrainInputs:
    """What a retrain reads besides its checkpoint: the genotype, the datasets and the loss."""

    genotype: Genotype
    train_set: Dataset
    val_set: Dataset
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

    @classmethod
    def load(cls, cfg: RetrainConfig) -> RetrainInputs:
        """Raises on a bad genotype, data setting or loss term, naming it."""
        data, world = cfg.data, distributed.world_size()
        genotype = load_genotype(cfg.genotype)
        check_coarsest_map(
            data.crop_size, cfg.train.batch_size, max(genotype.path), "train.batch_size"
        )
        train_set = dataset_from_config(data, "train", data.train_samples)
        val_set = dataset_from_config(data, "val", data.val_samples)
        if len(train_set) // world < cfg.train.batch_size:
            ranks = f" ({len(train_set) // world} per process of {world})" if world > 1 else ""
            raise ValueError(
                f"the training split has {len(train_set)} samples{ranks}, fewer than "
                f"train.batch_size={cfg.train.batch_size}"
            )
        try:
            loss_fn = build_loss(
                dict(cfg.loss.terms),
                ignore_index=data.ignore_index,
                thresh=cfg.loss.ohem_thresh,
                min_kept=cfg.loss.ohem_min_kept,
                gamma=cfg.loss.focal_gamma,
            )
        except ValueError as err:
            raise ValueError(f"loss.terms={dict(cfg.loss.terms)}: {err}") from None
        return cls(genotype, train_set, val_set, loss_fn)


def restore_rng(state: dict[str, Any], seed: int) -> None:
    """The random generators of a checkpoint: this rank's own (``rank_rng``, written by a run
    of several processes, whose Drop Path draws differ per rank), else the saved ones."""
    states = state.get("rank_rng") or [state["rng"]]
    if len(states) == distributed.world_size():
        set_rng_state(states[distributed.rank()])
    else:
        set_rng_state(state["rng"])
        if distributed.world_size() > 1:
            torch.manual_seed(derive_seed(seed, state["step"], distributed.rank()))


def _metrics_text(records: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in records)


def write_metrics(run_dir: Path, records: list[dict[str, Any]]) -> None:
    """``metrics.jsonl``: one JSON line per validation record."""
    atomic_write_text(run_dir / "metrics.jsonl", _metrics_text(records))


def log_validation(writer: Any, record: dict[str, Any]) -> None:
    """A validation record's scalars in TensorBoard, at its step."""
    for tag, key in (("val/miou", "miou"), ("val/pixel_acc", "pixel_acc"), ("lr", "lr")):
        writer.add_scalar(tag, record[key], record["step"])
    writer.flush()


def _metrics_current(run_dir: Path, records: list[dict[str, Any]]) -> bool:
    """Whether ``metrics.jsonl`` holds ``records`` (a checkpoint's) as :func:`write_metrics`
    writes them."""
    path = run_dir / "metrics.jsonl"
    return path.is_file() and path.read_text() == _metrics_text(records)


def _complete(cfg: RetrainConfig, run_dir: Path, state: dict[str, Any]) -> dict[str, Any]:
    """A resumed run that has trained every iteration and written every output: nothing to
    do but say so; returns the best record, as the finished run did."""
    best = distributed.run_on_main(functools.partial(_best_on_disk, run_dir, state["best"]))
    log.info(
        "%s holds a complete retrain (iteration %d of %d): nothing to do; best val mIoU %.3f "
        "at iteration %d",
        run_dir,
        state["step"],
        cfg.train.iterations,
        best["miou"],
        best["step"],
    )
    return best


def _best_on_disk(run_dir: Path, best: dict[str, Any] | None) -> dict[str, Any] | None:
    """The best record of a resumed run: the one ``best.pt`` holds where it differs from the
    checkpoint's. ``best.pt`` is written before ``last.pt``, so a run killed between the two
    writes resumes from an earlier ``last.pt``; where the repeated steps then score otherwise
    (nondeterministic kernels), ``best.pt`` keeps the model of the lost run, and later
    validations must beat that model's score to replace it."""
    path = run_dir / BEST
    if not path.is_file():
        return best
    on_disk = load_checkpoint(path, required=("best",), mmap=True)["best"]
    if on_disk is not None and on_disk["step"] != (best or {}).get("step"):
        log.warning(
            "%s holds iteration %d (val mIoU %.3f), which the resumed checkpoint does not "
            "record as the best; later iterations must beat it to replace it",
            path,
            on_disk["step"],
            on_disk["miou"],
        )
        return on_disk
    return best


def _diverged(step: int, loss: float, records: list[dict[str, Any]], run_dir: Path) -> str:
    """The message that stops a retrain whose mean training loss since the last validation is
    ``loss`` (not finite) at iteration ``step``."""
    since = records[-1]["step"] if records else 0
    kept = (
        f"the last checkpoint, {run_dir / CHECKPOINT}, holds iteration {since}"
        if records
        else "no checkpoint was written"
    )
    return (
        f"iteration {step}: mean training loss {loss} over iterations {since + 1}-{step}: the "
        f"retrain diverged (lower train.lr, or set train.grad_clip); {kept}"
    )


def _retrain(
    cfg: RetrainConfig, run_dir: Path, state: dict[str, Any] | None, inputs: RetrainInputs
) -> dict[str, Any]:
    train, data = cfg.train, cfg.data
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = distributed.local_device(resolve_device(cfg.device))
    rank, world, main = distributed.rank(), distributed.world_size(), distributed.is_main()
    torch.manual_seed(cfg.seed)
    genotype, train_set, val_set = inputs.genotype, inputs.train_set, inputs.val_set
    train_data = SeededSubset(
        train_set, range(len(train_set)), train_transform(data, train.color_jitter), seed=cfg.seed
    )
    val_data = SeededSubset(val_set, range(len(val_set)), eval_transform(), seed=cfg.seed)
    model_args = {
        "genotype": genotype.to_dict(),
        "num_classes": data.num_classes,
        **dataclasses.asdict(cfg.model),
    }
    model_args["stem_channels"] = list(model_args["stem_channels"])
    model = build_model(**model_args).to(device)
    if world > 1 and device.type == "cuda":
        # BatchNorm statistics over the global batch. SyncBatchNorm is CUDA only: on the CPU
        # (gloo) each rank normalises with its own batch's statistics.
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=train.lr, momentum=train.momentum, weight_decay=train.weight_decay
    )
    schedule = poly_lr(optimizer, train.iterations, train.power)
    loss_fn = inputs.loss_fn
    step, records, best = 0, [], None
    if main:  # where the run goes and on what, before the first validation's wait
        log.info(
            "retrain in %s on %s: %s data, %d training and %d validation images; "
            "train.iterations=%d of batch %d; a model of %.2fM parameters",
            run_dir,
            device,
            data.name,
            len(train_set),
            len(val_set),
            train.iterations,
            train.batch_size,
            sum(p.numel() for p in model.parameters()) / 1e6,
        )
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        restore_rng(state, cfg.seed)
        step, records, best = state["step"], state["records"], state["best"]
        best = distributed.run_on_main(functools.partial(_best_on_disk, run_dir, best))
        log.info("resumed %s at iteration %d", run_dir, step)
    elif world > 1:
        # Same weights on every rank (same seed above), but each rank its own Drop Path draws.
        torch.manual_seed(derive_seed(cfg.seed, rank))
    # DDP gives every rank rank 0's weights and buffers, then averages the gradients in
    # backward(); ``model`` stays the plain network (checkpoints, evaluation, Drop Path).
    net = model
    if world > 1:
        net = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    def checkpoint(*paths: Path) -> None:
        # Every rank's generators (a collective), so that a resumed run continues each rank.
        rngs = distributed.all_gather_object(rng_state())
        if not main:
            return
        saved = {
            "stage": "retrain",
            "step": step,
            "world_size": world,
            "config": dataclasses.asdict(cfg),
            "model_args": model_args,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "schedule": schedule.state_dict(),
            "rng": rngs[0],
            "records": records,
            "best": best,
            "step_loss": step_loss,  # for TensorBoard on resume
        }
        if world > 1:
            saved["rank_rng"] = rngs
        for path in paths:
            save_checkpoint(saved, path)

    writer = None
    if cfg.tensorboard and main:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run_dir), purge_step=step or None)
    steps_per_epoch = len(train_data) // world // train.batch_size
    losses: list[float] = []
    step_loss: float | None = None  # the loss of the step taken last
    # ``seconds`` in the records counts the training time of every run of this directory.
    began = time.perf_counter() - (records[-1]["seconds"] if records else 0.0)
    if state is not None and main:
        # A kill may have fallen between the checkpoint and the files derived from it, and
        # TensorBoard hides the entries from the checkpoint's step on: both are written again.
        write_metrics(run_dir, records)
        if writer is not None and records and records[-1]["step"] == step:
            if state.get("step_loss") is not None:
                writer.add_scalar("loss/train", state["step_loss"], step)
            log_validation(writer, records[-1])
    bar = tqdm(
        total=train.iterations,
        initial=step,
        desc="retrain",
        disable=not cfg.progress or not main,
        dynamic_ncols=True,
        file=sys.stderr,
    )
    while step < train.iterations:
        epoch, skip = divmod(step, steps_per_epoch)
        for images, target in epoch_batches(
            train_data,
            train.batch_size,
            seed=cfg.seed,
            epoch=epoch,
            skip=skip,
            num_workers=data.num_workers,
            ignore_index=data.ignore_index,
            pin_memory=device.type == "cuda",
            rank=rank,
            world_size=world,
        ):
            model.train()
            model.set_drop_path_progress(step / train.iterations)
            images, target = images.to(device), target.to(device)
            loss = loss_fn(net(images)["out"], target)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if train.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
            optimizer.step()
            step_lr = schedule.get_last_lr()[0]  # the rate of the step just taken
            schedule.step()
            step += 1
            step_loss = loss.item()
            losses.append(step_loss)
            bar.update()
            bar.set_postfix(loss=f"{step_loss:.3f}", refresh=False)
            if writer is not None:
                writer.add_scalar("loss/train", step_loss, step)  # rank 0's batch
            if step % train.val_every == 0 or step == train.iterations:
                (train_loss,) = distributed.average([sum(losses) / len(losses)])
                if not math.isfinite(train_loss):
                    raise ValueError(_diverged(step, train_loss, records, run_dir))
                # Each rank's BatchNorm running statistics follow its own batches (unless
                # synchronised): evaluate and save rank 0's on every rank, so that the ranks
                # agree and a resumed run continues from the state each rank had.
                distributed.broadcast_module_(model, buffers_only=True)
                scores = evaluate_model(
                    model,
                    val_data,
                    num_classes=data.num_classes,
                    ignore_index=data.ignore_index,
                    device=device,
                    across_ranks=True,
                )
                if math.isnan(scores["pixel_acc"]):  # no labelled pixel in the split
                    raise ValueError(
                        f"the {data.name} val split has no labelled pixels (every mask is "
                        f"data.ignore_index={data.ignore_index}), so the retrain cannot score "
                        "its validations nor keep a best checkpoint; give it a labelled val split"
                    )
                record = {
                    "step": step,
                    "train_loss": train_loss,
                    "miou": scores["miou"],
                    "pixel_acc": scores["pixel_acc"],
                    "lr": step_lr,
                    "seconds": time.perf_counter() - began,
                    "peak_memory_mib": peak_memory_mib(device),
                }
                records.append(record)
                losses = []
                improved = best is None or record["miou"] > best["miou"]
                if improved:
                    best = record
                # ``best.pt`` first: a run killed between the two writes resumes from the
                # previous ``last.pt`` and writes this best again, where the other order would
                # resume believing in a best that ``best.pt`` does not hold.
                checkpoint(*([run_dir / BEST] if improved else []), run_dir / CHECKPOINT)
                if writer is not None:
                    log_validation(writer, record)
                if main:  # last: a resume finds the run complete only once it is written
                    write_metrics(run_dir, records)
                log.info(
                    "iteration %d/%d: train_loss %.3f val mIoU %.3f%s",
                    step,
                    train.iterations,
                    record["train_loss"],
                    record["miou"],
                    " (best)" if improved else "",
                )
            if step >= train.iterations:
                break
    bar.close()
    if writer is not None:
        writer.close()
    log.info(
        "best val mIoU %.3f at iteration %d; checkpoints in %s",
        best["miou"],
        best["step"],
        run_dir / "checkpoints",
    )
    return best
