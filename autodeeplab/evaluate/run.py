"""Evaluate a retrain checkpoint on a dataset split and write the results."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from autodeeplab.data import SeededSubset, dataset_from_config, eval_transform
from autodeeplab.data.config import check_data_ranges
from autodeeplab.engine import distributed
from autodeeplab.engine.config import RangeCheck
from autodeeplab.engine.evaluation import evaluate_model
from autodeeplab.engine.report import format_table, scores_to_json
from autodeeplab.engine.runtime import resolve_device
from autodeeplab.evaluate.config import EvaluateConfig
from autodeeplab.files import atomic_write_text
from autodeeplab.models import load_model

log = logging.getLogger(__name__)


def results_path(cfg: EvaluateConfig) -> Path:
    """Where the results go: ``cfg.out``, else
    ``eval_<checkpoint>_<split>[_ms<scales>][_flip][_crop<size>].json`` in the run directory of
    the checkpoint (the folder above ``checkpoints/``), e.g. ``eval_best_val_ms0.5-1-2_flip.json``:
    evaluations with other inference settings get other files."""
    if cfg.out is not None:
        return Path(cfg.out)
    checkpoint = Path(cfg.checkpoint)
    folder = (
        checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    )
    tag = "_ms" + "-".join(f"{s:g}" for s in cfg.scales) if list(cfg.scales) != [1.0] else ""
    tag += "_flip" if cfg.flip else ""
    tag += f"_crop{cfg.crop_size}" if cfg.crop_size is not None else ""
    return folder / f"eval_{checkpoint.stem}_{cfg.split}{tag}.json"


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Scores of the checkpoint on ``cfg.data``'s ``cfg.split``; prints the per-class table and
    writes the JSON (never over an earlier result unless ``cfg.overwrite``). Under ``torchrun``
    each rank scores a shard, the confusion matrices are summed and rank 0 writes."""
    check = RangeCheck()
    scales = list(cfg.scales)
    check.need(bool(scales) and all(s > 0 for s in scales), "scales", scales, "positive factors")
    check.positive("crop_size", cfg.crop_size, optional=True)
    check.positive("threads", cfg.threads, optional=True)
    check_data_ranges(check, cfg.data)
    check.raise_any()
    out = results_path(cfg)

    def check_out() -> None:
        if out.exists() and not cfg.overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=true or out=<another file>")

    distributed.run_on_main(check_out)  # the file is rank 0's to write
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = distributed.local_device(resolve_device(cfg.device))
    model = load_model(cfg.checkpoint).to(device)
    if model.num_classes != cfg.data.num_classes:
        raise ValueError(
            f"the checkpoint predicts {model.num_classes} classes but data.num_classes="
            f"{cfg.data.num_classes}"
        )
    data = cfg.data
    dataset = dataset_from_config(data, cfg.split, data.val_samples if cfg.split == "val" else None)
    classes = list(getattr(dataset, "classes", None) or dataset.dataset.classes)
    samples = SeededSubset(dataset, range(len(dataset)), eval_transform(), seed=0)
    scores = evaluate_model(
        model,
        samples,
        num_classes=data.num_classes,
        ignore_index=data.ignore_index,
        scales=cfg.scales,
        flip=cfg.flip,
        crop_size=cfg.crop_size,
        device=device,
        num_workers=data.num_workers,
        progress=cfg.progress,
        across_ranks=True,
    )
    result = {
        "checkpoint": str(cfg.checkpoint),
        "dataset": data.name,
        "split": cfg.split,
        "samples": len(samples),
        "scales": list(cfg.scales),
        "flip": cfg.flip,
        "crop_size": cfg.crop_size,
        **scores_to_json(scores, classes),
    }
    if distributed.is_main():
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        print(format_table(scores, classes))
        log.info("results written to %s", out)
    return result
