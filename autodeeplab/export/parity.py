"""The parity check: an exported file against the eager model it came from, at several sizes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from autodeeplab.export.formats import Runner

#: How ``passed`` is decided, stated in ``export.json``.
RULE = "max_abs_diff <= tolerance * max(1, reference_max_abs)"


class ParityError(ValueError):
    """The exported model's logits differ from the eager model's by more than the tolerance."""


def check_parity(
    model: nn.Module,
    runner: Runner,
    cases: Sequence[tuple[int, tuple[int, int]]],
    *,
    tolerance: float,
    seed: int = 0,
) -> dict[str, Any]:
    """Run the eager ``model`` (CPU, float32) and ``runner`` on the same seeded normal inputs,
    one ``(batch, (H, W))`` case at a time.

    Returns ``{"tolerance", "rule", "passed", "sizes": [...]}``, one entry per case with
    ``max_abs_diff`` and ``reference_max_abs``. A case fails when the runner raises (a size the
    exported graph cannot take) or the difference is non-finite or above the tolerance.
    """
    generator = torch.Generator().manual_seed(seed)
    entries = []
    for batch, size in cases:
        images = torch.randn(batch, 3, *size, generator=generator)
        with torch.inference_mode():
            reference = model(images)["out"].numpy()
        entry: dict[str, Any] = {"batch": batch, "size": list(size)}
        try:
            exported = runner(images.numpy())
        except Exception as err:  # any runtime's failure on this size is the finding
            entry.update(passed=False, error=f"{type(err).__name__}: {str(err).strip()[:300]}")
            entries.append(entry)
            continue
        if exported.shape != reference.shape:
            entry.update(
                passed=False,
                error=f"output shape {list(exported.shape)}, eager {list(reference.shape)}",
            )
            entries.append(entry)
            continue
        diff = float(np.abs(exported.astype(np.float64) - reference).max())
        scale = float(np.abs(reference).max())
        allowed = tolerance * max(1.0, scale)
        entry.update(
            max_abs_diff=diff,
            reference_max_abs=scale,
            allowed=allowed,
            passed=bool(np.isfinite(diff) and diff <= allowed),
        )
        entries.append(entry)
    return {
        "tolerance": tolerance,
        "rule": RULE,
        "passed": all(e["passed"] for e in entries),
        "sizes": entries,
    }


def describe_failures(parity: dict[str, Any]) -> str:
    """One line naming each failed case of a :func:`check_parity` result."""
    parts = []
    for entry in parity["sizes"]:
        if entry["passed"]:
            continue
        where = f"batch {entry['batch']} at {entry['size'][0]}x{entry['size'][1]}"
        if "error" in entry:
            parts.append(f"{where}: {entry['error']}")
        else:
            parts.append(
                f"{where}: max |diff| {entry['max_abs_diff']:.3g} > allowed {entry['allowed']:.3g}"
            )
    return "; ".join(parts)
