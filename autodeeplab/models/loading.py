"""Rebuild a decoded model from a self-describing checkpoint (no config needed)."""

from __future__ import annotations

import os

from autodeeplab.engine.checkpoint import load_checkpoint
from autodeeplab.models.deeplab import AutoDeepLab, build_model


def load_model(path: str | os.PathLike, *, eval_mode: bool = True) -> AutoDeepLab:
    """The model stored in a retrain checkpoint (``model_args`` + ``model`` weights), on the
    CPU and, by default, in eval mode."""
    state = load_checkpoint(path, required=("model_args", "model"))
    if state.get("stage") not in (None, "retrain"):
        raise ValueError(
            f"checkpoint {path} is from the {state['stage']!r} stage; load_model reads retrain "
            "checkpoints (a search checkpoint holds a supernet: decode its genotype instead)"
        )
    model = build_model(**state["model_args"])
    model.load_state_dict(state["model"])
    return model.eval() if eval_mode else model
