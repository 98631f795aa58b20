"""Evaluate a retrain checkpoint on a dataset split and write the results."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any

import torch

from autodeeplab.data import SeededSubset, dataset_from_config, eval_transform
from autodeeplab.data.config import check_data_ranges
from autodeeplab.engine import distributed
from autodeeplab.engine.checkpoint import load_checkpoint
from autodeeplab.engine.config import RangeCheck
from autodeeplab.engine.evaluation import evaluate_model
from autodeeplab.engine.inference import AVERAGES, pass_count
from autodeeplab.engine.report import format_table, scores_to_json
from autodeeplab.engine.runtime import resolve_device
from autodeeplab.evaluate.config import EvaluateConfig
from autodeeplab.files import atomic_write_text
from autodeeplab.models.loading import MODEL_KEYS, model_from_checkpoint

log = logging.getLogger(__name__)


def results_path(cfg: EvaluateConfig) -> Path:
    """Where the results go: ``cfg.out``, else
    ``eval_<checkpoint>_<split>[_first<n>][_ms<scales>][_flip][_logits][_crop<size>].json`` in
    the run directory of the checkpoint (the folder above ``checkpoints/``), e.g.
    ``eval_best_val_ms0.5-1-2_flip.json``: evaluations with other inference settings, or of only
    the first ``data.val_samples`` validation images, get other files (``_logits``: several
    passes averaged with ``average=logits``)."""
    if cfg.out is not None:
        return Path(cfg.out)
    checkpoint = Path(cfg.checkpoint)
    folder = (
        checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    )
    tag = f"_first{cfg.data.val_samples}" if cfg.split == "val" and cfg.data.val_samples else ""
    tag += "_ms" + "-".join(f"{s:g}" for s in cfg.scales) if list(cfg.scales) != [1.0] else ""
    tag += "_flip" if cfg.flip else ""
    tag += "_logits" if cfg.average == "logits" and pass_count(cfg.scales, cfg.flip) > 1 else ""
    tag += f"_crop{cfg.crop_size}" if cfg.crop_size is not None else ""
    return folder / f"eval_{checkpoint.stem}_{cfg.split}{tag}.json"


#: What to do instead of scoring a split without labels.
_UNLABELLED_HINT = (
    "evaluate a labelled split (split=val), or predict its images with "
    "autodeeplab.engine.inference.predict"
)


def run_evaluate(cfg: EvaluateConfig) -> dict[str, Any]:
    """Scores of the checkpoint on ``cfg.data``'s ``cfg.split``; prints the per-class table and
    writes the JSON (never over an earlier result unless ``cfg.overwrite``). Under ``torchrun``
    each rank scores a shard, the confusion matrices are summed and rank 0 writes."""
    check = RangeCheck()
    scales = list(cfg.scales)
    check.need(bool(scales) and all(s > 0 for s in scales), "scales", scales, "positive factors")
    check.need(cfg.average in AVERAGES, "average", cfg.average, " or ".join(AVERAGES))
    check.positive("crop_size", cfg.crop_size, optional=True)
    check.positive("threads", cfg.threads, optional=True)
    check_data_ranges(check, cfg.data)
    check.raise_any()
    out = results_path(cfg)

    def check_out() -> None:  # before the work, which a failed write would throw away
        if out.is_dir():
            raise IsADirectoryError(f"out={out} is a folder; expected the path of a JSON file")
        if out.exists() and not cfg.overwrite:
            raise FileExistsError(f"{out} exists; pass overwrite=true or out=<another file>")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise type(err)(f"cannot make the folder of {out}: {err.strerror}") from None
        if not os.access(out.parent, os.W_OK):
            raise PermissionError(f"cannot write {out}: its folder is not writable")

    distributed.run_on_main(check_out)  # the file is rank 0's to write
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    device = distributed.local_device(resolve_device(cfg.device))
    state = load_checkpoint(cfg.checkpoint, required=MODEL_KEYS)
    model = model_from_checkpoint(state, cfg.checkpoint).to(device)
    trained_on = _trained_on(state)
    if model.num_classes != cfg.data.num_classes:
        raise ValueError(
            f"the checkpoint predicts {model.num_classes} classes but data.num_classes="
            f"{cfg.data.num_classes}"
            + (
                f" (it was trained on {trained_on} data.num_classes={model.num_classes}: pass "
                "those)"
                if trained_on
                else ""
            )
        )
    if trained_on and trained_on != _data_settings(cfg.data.name, cfg.data.root):
        log.warning(
            "evaluating on %s; the checkpoint was trained on %s",
            _data_settings(cfg.data.name, cfg.data.root),
            trained_on,
        )
    data = cfg.data
    dataset = dataset_from_config(data, cfg.split, data.val_samples if cfg.split == "val" else None)
    classes = list(getattr(dataset, "classes", None) or dataset.dataset.classes)
    unlabelled = f"{data.name} split {cfg.split!r} has no labels"
    pairs = getattr(dataset, "pairs", None)  # (image file, mask file or None) per sample
    if pairs is not None and all(mask is None for _, mask in pairs):
        raise ValueError(f"{unlabelled} (no mask files): nothing to score; {_UNLABELLED_HINT}")
    samples = SeededSubset(dataset, range(len(dataset)), eval_transform(), seed=0)
    scores = evaluate_model(
        model,
        samples,
        num_classes=data.num_classes,
        ignore_index=data.ignore_index,
        scales=cfg.scales,
        flip=cfg.flip,
        crop_size=cfg.crop_size,
        average=cfg.average,
        device=device,
        num_workers=data.num_workers,
        progress=cfg.progress,
        across_ranks=True,
    )
    if math.isnan(scores["pixel_acc"]):  # no pixel of the split is labelled
        raise ValueError(
            f"{unlabelled}: every mask pixel is data.ignore_index={data.ignore_index}, so "
            f"nothing was scored and no results were written; {_UNLABELLED_HINT}"
        )
    result = {
        "checkpoint": str(cfg.checkpoint),
        "dataset": data.name,
        "split": cfg.split,
        "samples": len(samples),
        "scales": list(cfg.scales),
        "flip": cfg.flip,
        "average": cfg.average,
        "crop_size": cfg.crop_size,
        **scores_to_json(scores, classes),
    }
    if distributed.is_main():
        print(format_table(scores, classes))
        atomic_write_text(out, json.dumps(result, indent=2) + "\n")
        log.info("results written to %s", out)
    return result


def _data_settings(name: str, root: str | None) -> str:
    """``data=<name> data.root=<root>``, the root resolved (so that spellings of one folder
    compare equal)."""
    return f"data={name}" + (f" data.root={Path(root).resolve()}" if root is not None else "")


def _trained_on(state: dict[str, Any]) -> str | None:
    """The dataset a checkpoint's retrain read (``data=<name> data.root=<root>``), where its
    stored config says."""
    config = state.get("config")
    data = config.get("data") if isinstance(config, dict) else None
    if not isinstance(data, dict) or "name" not in data:
        return None
    return _data_settings(data["name"], data.get("root"))
