"""What a search leaves in its run directory (README: The run directory): architecture history,
per-epoch metrics and genotypes, TensorBoard scalars, heatmaps and text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from autodeeplab.files import atomic_write, atomic_write_text
from autodeeplab.genotype import Genotype
from autodeeplab.ops import PRIMITIVES
from autodeeplab.space.edges import cell_edges
from autodeeplab.space.lattice import DIRECTIONS


def write_arch_history(
    path: Path, epochs: list[int], alphas: list[np.ndarray], betas: list[np.ndarray], blocks: int
) -> None:
    """``arch_history.npz``: raw logits alpha ``(epochs, edges, ops)`` and beta
    ``(epochs, L, levels, 3)``, the epoch numbers and the axis names."""
    arrays = dict(
        alpha=np.stack(alphas).astype(np.float32),
        beta=np.stack(betas).astype(np.float32),
        epoch=np.asarray(epochs, dtype=np.int64),
        op_names=np.asarray(PRIMITIVES),
        edge_names=np.asarray(cell_edges(blocks)),
        direction_names=np.asarray(DIRECTIONS),
    )
    atomic_write(path, lambda handle: np.savez(handle, **arrays))


def write_metrics(path: Path, records: list[dict[str, Any]]) -> None:
    """``metrics.jsonl``: one JSON object per epoch (rewritten whole, so it always agrees with
    the checkpoint after a resume)."""
    atomic_write_text(path, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))


def write_history(
    run_dir: Path, history: dict[str, list], records: list[dict[str, Any]], blocks: int
) -> None:
    """Rewrite ``arch_history.npz`` and ``metrics.jsonl`` from the search's in-memory state."""
    write_arch_history(
        run_dir / "arch_history.npz", history["epoch"], history["alpha"], history["beta"], blocks
    )
    write_metrics(run_dir / "metrics.jsonl", records)


def heatmap_image(values: np.ndarray, cell: int = 12) -> np.ndarray:
    """A ``(rows, cols)`` array in [0, 1] as an RGB image ``(3, rows*cell, cols*cell)``, coloured
    from dark blue (0) through teal to yellow (1), for TensorBoard."""
    anchors = np.array([[0.27, 0.00, 0.33], [0.13, 0.57, 0.55], [0.99, 0.91, 0.14]])
    v = np.clip(np.nan_to_num(values), 0.0, 1.0)
    position = v * (len(anchors) - 1)
    low = np.floor(position).astype(int).clip(0, len(anchors) - 2)
    frac = (position - low)[..., None]
    rgb = anchors[low] * (1 - frac) + anchors[low + 1] * frac
    rgb = rgb.repeat(cell, axis=0).repeat(cell, axis=1)
    return rgb.transpose(2, 0, 1).astype(np.float32)


#: metrics.jsonl key -> TensorBoard tag
_SCALARS = {
    "train_loss": "loss/train",
    "arch_loss": "loss/arch",
    "val_loss": "loss/val",
    "miou": "val/miou",
    "pixel_acc": "val/pixel_acc",
    "lr": "lr",
    "path_probability": "arch/path_probability",
    "seconds": "time/epoch_seconds",
}


class TensorBoardLog:
    """Scalars, alpha/beta heatmaps and the decoded genotype as text; a no-op when disabled."""

    def __init__(self, run_dir: Path, enabled: bool, purge_step: int | None = None):
        self.writer = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir), purge_step=purge_step)

    def epoch(
        self,
        epoch: int,
        record: dict[str, Any],
        alpha_weights: torch.Tensor,
        beta_weights: torch.Tensor,
        genotype: Genotype,
    ) -> None:
        """Log one epoch's record (losses, mIoU, time) and architecture."""
        if self.writer is None:
            return
        for key, tag in _SCALARS.items():
            if record.get(key) is not None:
                self.writer.add_scalar(tag, record[key], epoch)
        # alpha: edges x ops; beta: one row per (layer, level), columns (finer, same, coarser).
        self.writer.add_image("arch/alpha", heatmap_image(alpha_weights.cpu().numpy()), epoch)
        beta = beta_weights.cpu().numpy()
        self.writer.add_image(
            "arch/beta", heatmap_image(beta.reshape(-1, beta.shape[-1]), cell=8), epoch
        )
        self.writer.add_text("arch/genotype", "```\n" + genotype.to_json() + "```", epoch)
        self.writer.add_text("arch/path", " ".join(map(str, genotype.path)), epoch)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
