"""Int8 post-training static quantization of an exported ONNX model for CPU deployment (ONNX
Runtime), calibrated on training images of the checkpoint's dataset and scored by mIoU."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from autodeeplab.data import dataset_from_config, eval_transform
from autodeeplab.data.config import DataConfig
from autodeeplab.engine.metrics import ConfusionMatrix
from autodeeplab.export.benchmark import runner_latency
from autodeeplab.export.formats import INPUT_NAME, Runner, onnx_runner

#: How the int8 model is built, stated in ``export.json``.
SCHEME = {
    "tool": "onnxruntime.quantization.quantize_static",
    "preprocess": "quant_pre_process (ONNX shape inference, graph optimisation)",
    "format": "QDQ",
    "weights": "int8, per channel",
    "activations": "uint8, per tensor",
    "calibration": "MinMax",
}

Sample = tuple[np.ndarray, np.ndarray]  # image (1, 3, H, W) float32, mask (H, W) int64

log = logging.getLogger(__name__)

#: ONNX Runtime's warning, on its root logger, for each weight of fewer dimensions than the
#: per-channel axis (the BatchNorm scales that the pre-processing leaves unfolded, after pools
#: and skip connections): it quantizes those per tensor instead.
_PER_TENSOR_FALLBACK = re.compile(r"Axis \d+ is out-of-range for weight '(.+)' with rank \d+")


@contextlib.contextmanager
def _per_tensor_fallbacks() -> Iterator[list[str]]:
    """Within the block, ONNX Runtime's per-weight warnings of :data:`_PER_TENSOR_FALLBACK`
    are held back and the weights' names collected in the yielded list, to be reported once."""
    names: list[str] = []

    def keep(record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: logging's own error handling reports it
            return True
        match = _PER_TENSOR_FALLBACK.fullmatch(message)
        if match:
            names.append(match[1])
        return match is None

    root = logging.getLogger()
    root.addFilter(keep)
    try:
        yield names
    finally:
        root.removeFilter(keep)


def fit_to_size(
    image: torch.Tensor, mask: torch.Tensor, size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Resize ``image`` (3, h, w) (bilinear) and ``mask`` (h, w) (nearest) by one factor so
    that they cover ``size``, then crop the centre ``size``: the scale and aspect of the scene
    are kept, as the exported model will see them."""
    height, width = size
    scale = max(height / image.shape[-2], width / image.shape[-1])
    scaled = (
        max(height, round(image.shape[-2] * scale)),
        max(width, round(image.shape[-1] * scale)),
    )
    image = F.interpolate(image[None], size=scaled, mode="bilinear", align_corners=False)[0]
    mask = F.interpolate(mask[None, None].float(), size=scaled, mode="nearest")[0, 0].long()
    top, left = (scaled[0] - height) // 2, (scaled[1] - width) // 2
    return (
        image[:, top : top + height, left : left + width],
        mask[top : top + height, left : left + width],
    )


def load_samples(
    data: DataConfig, split: str, limit: int, size: tuple[int, int], key: str
) -> list[Sample]:
    """The first ``limit`` samples of ``data``'s ``split`` after the evaluation transform
    (ImageNet normalisation), fitted to ``size`` with :func:`fit_to_size`; ``key`` is the
    setting ``limit`` comes from, as messages name it."""
    if limit < 1:
        raise ValueError(f"{key}={limit}; expected at least 1")
    dataset = dataset_from_config(data, split, limit, limit_key=key)
    transform = eval_transform()
    samples = []
    for index in range(len(dataset)):
        image, mask = transform(*dataset[index])
        image, mask = fit_to_size(image, mask, size)
        samples.append((image[None].contiguous().numpy(), mask.numpy()))
    return samples


def quantize_onnx(
    source: str | os.PathLike, target: str | os.PathLike, images: Sequence[np.ndarray]
) -> list[str]:
    """Write the int8 form of the ONNX model ``source`` to ``target`` (:data:`SCHEME`),
    calibrating activation ranges on ``images`` (each ``(1, 3, H, W)`` float32). The model is
    pre-processed first (shape inference, BN folded into convs), as ONNX Runtime recommends;
    its symbolic shape inference is skipped (slow, and meant for transformer graphs). Returns
    the weights quantized per tensor instead of per channel, having no channel axis."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._feeds = iter([{INPUT_NAME: image} for image in images])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._feeds, None)

    with tempfile.TemporaryDirectory() as scratch:
        prepared = os.path.join(scratch, "prepared.onnx")
        quant_pre_process(os.fspath(source), prepared, skip_symbolic_shape=True)
        with _per_tensor_fallbacks() as per_tensor:
            quantize_static(
                prepared,
                os.fspath(target),
                Reader(),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
                calibrate_method=CalibrationMethod.MinMax,
            )
    if per_tensor:
        log.info(
            "int8: %d one-dimensional weight(s) quantized per tensor, having no channel axis "
            "(BatchNorm scales not folded into a conv), e.g. %s",
            len(per_tensor),
            per_tensor[0],
        )
    return per_tensor


def runner_miou(
    runner: Runner, samples: Sequence[Sample], *, num_classes: int, ignore_index: int
) -> float:
    """mIoU of ``runner``'s predictions over ``samples`` (one confusion matrix)."""
    matrix = ConfusionMatrix(num_classes, ignore_index)
    for image, mask in samples:
        logits = torch.from_numpy(runner(image))
        matrix.update(logits.argmax(dim=1), torch.from_numpy(mask)[None])
    return matrix.compute()["miou"]


def quantization_report(
    source: str | os.PathLike,
    target: str | os.PathLike,
    data: DataConfig,
    *,
    size: tuple[int, int],
    calibration_samples: int,
    val_samples: int,
    threads: int,
    latency: dict[str, Any],
) -> dict[str, Any]:
    """Quantize ``source`` into ``target`` on ``calibration_samples`` training images and
    compare the two on ``val_samples`` validation images (mIoU) and in latency at
    ``latency["size"]`` (same warm-up, runs and threads as the float ``latency`` report)."""
    calibration = load_samples(data, "train", calibration_samples, size, "calibration_samples")
    validation = load_samples(data, "val", val_samples, size, "quant_val_samples")
    per_tensor = quantize_onnx(source, target, [image for image, _ in calibration])
    float_runner = onnx_runner(source, threads=threads)
    int8_runner = onnx_runner(target, threads=threads)
    scores = {
        name: runner_miou(
            runner, validation, num_classes=data.num_classes, ignore_index=data.ignore_index
        )
        for name, runner in (("float32", float_runner), ("int8", int8_runner))
    }
    int8_latency = runner_latency(
        int8_runner, tuple(latency["size"]), warmup=latency["warmup"], runs=latency["runs"]
    )
    float_median = latency["onnxruntime_cpu"]["median_ms"]
    return {
        "file": os.path.basename(target),
        **SCHEME,
        # Weights without a channel axis (BatchNorm scales left unfolded): per tensor.
        "per_tensor_weights": per_tensor,
        "calibration_samples": len(calibration),
        "val_samples": len(validation),
        # Where the images came from, and the size they were fitted to (fit_to_size) for both
        # the calibration and the mIoU, which therefore compare the two models with each
        # other, not with the evaluate stage's whole-image mIoU.
        "data": {"name": data.name, "root": data.root},
        "size": list(size),
        "miou_float32": scores["float32"],
        "miou_int8": scores["int8"],
        "onnxruntime_cpu_int8": int8_latency,
        "speedup_median": float_median / int8_latency["median_ms"],
    }
