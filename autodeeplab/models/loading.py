"""Rebuild a decoded model from a self-describing checkpoint (no config needed)."""

from __future__ import annotations

import os
from typing import Any

from autodeeplab.engine.checkpoint import load_checkpoint
from autodeeplab.models.deeplab import AutoDeepLab, build_model

#: The entries of a retrain checkpoint that describe its model.
MODEL_KEYS = ("model_args", "model")


def load_model(path: str | os.PathLike, *, eval_mode: bool = True) -> AutoDeepLab:
    """The model stored in a retrain checkpoint (``model_args`` + ``model`` weights), on the
    CPU and, by default, in eval mode."""
    return model_from_checkpoint(
        load_checkpoint(path, required=MODEL_KEYS), path, eval_mode=eval_mode
    )


def model_from_checkpoint(
    state: dict[str, Any], path: str | os.PathLike, *, eval_mode: bool = True
) -> AutoDeepLab:
    """:func:`load_model` of a checkpoint already read from ``path`` (named in errors) with
    :data:`MODEL_KEYS` required, for callers that also read its other entries."""
    if state.get("stage") not in (None, "retrain"):
        raise ValueError(
            f"checkpoint {path} is from the {state['stage']!r} stage; load_model reads retrain "
            "checkpoints (a search checkpoint holds a supernet: decode its genotype instead)"
        )
    try:
        model = build_model(**state["model_args"])
    except (TypeError, ValueError) as err:
        raise ValueError(f"checkpoint {path}: its model_args do not build a model: {err}") from None
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as err:
        problems = " ".join(str(err).split())
        raise ValueError(
            f"checkpoint {path}: its weights do not fit the model its model_args describe: "
            f"{problems}"
        ) from None
    return model.eval() if eval_mode else model
