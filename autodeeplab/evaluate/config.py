"""Typed configuration of the evaluate stage (``conf/evaluate/``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import MISSING

from autodeeplab.data.config import DataConfig

#: The data keys evaluate does not read (training settings), with what to set instead.
UNREAD_DATA_KEYS = {
    "data.crop_size": "the training crop; sliding-window inference takes crop_size=<size>",
    "data.flip": "training augmentation; flip=true averages in mirrored passes",
    "data.scale_min": "training augmentation; scales=[...] sets the inference scales",
    "data.scale_max": "training augmentation; scales=[...] sets the inference scales",
    "data.train_samples": "evaluate scores the whole split; data.val_samples limits split=val",
}


def unread_overrides(overrides: list[str], split: str) -> list[str]:
    """Why each of the command line's ``overrides`` (``key=value``) that evaluate does not read
    has no effect: :data:`UNREAD_DATA_KEYS`, and ``data.val_samples`` on another split."""
    notes = []
    for override in overrides:
        key = override.split("=", 1)[0].lstrip("+~")
        if key in UNREAD_DATA_KEYS:
            notes.append(f"{key} is not read by evaluate: {UNREAD_DATA_KEYS[key]}")
        elif key == "data.val_samples" and split != "val":
            notes.append(f"data.val_samples limits split=val only; split={split} is scored whole")
    return notes


@dataclass
class EvaluateConfig:
    """``conf/evaluate/evaluate.yaml``."""

    checkpoint: str = MISSING  # a retrain checkpoint (e.g. runs/retrain/<run>/checkpoints/best.pt)
    # The dataset: data.name, data.root, data.num_classes, data.ignore_index, data.options,
    # data.num_workers, and data.val_samples (split=val only). Its training keys
    # (data.crop_size, data.scale_min/max, data.flip, data.train_samples) are not read here,
    # and the command line warns where one is given (UNREAD_DATA_KEYS): crop_size and flip
    # below are evaluation's.
    data: DataConfig = field(default_factory=DataConfig)
    split: str = "val"  # train, val or test
    scales: list[float] = field(
        default_factory=lambda: [1.0]
    )  # e.g. [0.5, 0.75, 1, 1.25, 1.5, 1.75]
    flip: bool = False  # also average in the mirrored image
    # How the passes of several scales or flip combine: "probabilities" (DeepLab's protocol: the
    # mean of their softmax) or "logits" (the mean of their logits). One pass: no effect.
    average: str = "probabilities"
    crop_size: int | None = None  # sliding-window inference with this window (None: whole image)
    # Results JSON (None: eval_<checkpoint>_<split>[_first<n>][_ms<scales>][_flip][_logits]
    # [_crop<size>].json beside the run: see autodeeplab.evaluate.run.results_path)
    out: str | None = None
    overwrite: bool = False  # replace an existing results file
    device: str = "auto"  # "auto" (CUDA when available), "cpu", "cuda", "cuda:1", ...
    threads: int | None = None  # torch CPU threads (None: torch's default)
    progress: bool = True  # progress bars
