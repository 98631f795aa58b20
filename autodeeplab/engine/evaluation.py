"""Evaluation of a segmentation model over a dataset: one confusion matrix for the whole set."""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from autodeeplab.data.split import pad_collate
from autodeeplab.engine import distributed
from autodeeplab.engine.inference import predict
from autodeeplab.engine.metrics import ConfusionMatrix


def evaluate_model(
    model: nn.Module,
    dataset: Dataset,
    *,
    num_classes: int,
    ignore_index: int = 255,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crop_size: int | None = None,
    average: str = "probabilities",
    device: torch.device | str = "cpu",
    num_workers: int = 0,
    progress: bool = False,
    across_ranks: bool = False,
) -> dict[str, Any]:
    """Scores of ``model`` on ``dataset`` (items ``(image, mask)`` at full size, normalised):
    ``ConfusionMatrix.compute()`` over all pixels of all images. Images go one at a time, so
    sizes may differ; ``scales``/``flip`` average resized and mirrored passes (their softmax
    probabilities, or with ``average="logits"`` their logits: see
    :func:`~autodeeplab.engine.inference.predict`), ``crop_size`` switches to sliding-window
    inference for larger images.

    With ``across_ranks`` under ``torchrun`` (every rank calls this with the same model and
    dataset), each rank scores every ``world_size``-th image and the confusion matrices are
    summed: every rank returns the scores of the whole dataset, the same as one process's."""
    world = distributed.world_size() if across_ranks else 1
    if world > 1:
        dataset = Subset(dataset, range(distributed.rank(), len(dataset), world))
    loader = DataLoader(
        dataset,
        batch_size=1,
        shuffle=False,
        generator=torch.Generator(),  # leave the global generator (training state) untouched
        num_workers=num_workers,
        collate_fn=functools.partial(pad_collate, ignore_index=ignore_index),
    )
    matrix = ConfusionMatrix(num_classes, ignore_index)
    was_training = model.training
    model.eval()
    for image, target in tqdm(
        loader,
        desc="evaluate",
        disable=not progress or not distributed.is_main(),
        leave=False,
        file=sys.stderr,
        dynamic_ncols=True,
    ):
        logits = predict(
            model,
            image.to(device),
            scales=scales,
            flip=flip,
            crop_size=crop_size,
            num_classes=num_classes,
            average=average,
        )
        matrix.update(logits, target.to(device))
    model.train(was_training)
    if world > 1:
        distributed.all_reduce_confusion_(matrix)
    return matrix.compute()
