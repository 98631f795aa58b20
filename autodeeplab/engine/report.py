"""Human- and machine-readable forms of ``ConfusionMatrix.compute()`` scores."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

SUMMARY_KEYS = ("pixel_acc", "mean_acc", "miou", "fwiou")


def _check(scores: Mapping, class_names: Sequence[str]) -> None:
    missing = [k for k in (*SUMMARY_KEYS, "iou", "acc") if k not in scores]
    if missing:
        raise ValueError(f"scores lack {missing}; expected ConfusionMatrix.compute() output")
    for key in ("iou", "acc"):
        if len(scores[key]) != len(class_names):
            raise ValueError(
                f"{len(class_names)} class names for {len(scores[key])} per-class {key!r} scores"
            )
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"class names are not unique: {list(class_names)}")


def _is_nan(value: float | None) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _percent(value: float | None) -> str:
    return "-" if _is_nan(value) else f"{100.0 * value:.2f}"


def format_table(scores: Mapping, class_names: Sequence[str]) -> str:
    """A per-class table of IoU and accuracy (in %) followed by the summary scores.

    Classes absent from the evaluated set (NaN scores) show ``-``.
    """
    _check(scores, class_names)
    width = max([len("class"), *(len(name) for name in class_names), *map(len, SUMMARY_KEYS)])
    lines = [f"{'class':<{width}}  {'IoU %':>7}  {'Acc %':>7}", "-" * (width + 18)]
    for name, iou, acc in zip(class_names, scores["iou"], scores["acc"]):
        lines.append(f"{name:<{width}}  {_percent(iou):>7}  {_percent(acc):>7}")
    lines.append("-" * (width + 18))
    for key in SUMMARY_KEYS:
        lines.append(f"{key:<{width}}  {_percent(scores[key]):>7}")
    return "\n".join(lines)


def scores_to_json(scores: Mapping, class_names: Sequence[str]) -> dict:
    """JSON-able scores: the summary floats and ``per_class`` name -> ``{"iou", "acc"}``.

    Values stay fractions in [0, 1]; NaN (no pixels for the class, or an empty set) becomes None.
    """
    _check(scores, class_names)

    def clean(value: float | None) -> float | None:
        return None if _is_nan(value) else float(value)

    out: dict = {key: clean(scores[key]) for key in SUMMARY_KEYS}
    out["per_class"] = {
        name: {"iou": clean(iou), "acc": clean(acc)}
        for name, iou, acc in zip(class_names, scores["iou"], scores["acc"])
    }
    return out
