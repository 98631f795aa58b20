"""Write a decoded model as an ONNX or TorchScript file with dynamic batch, height and width, and
load such a file back as a runner ``(N, 3, H, W) float32 -> (N, K, H, W)``."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

log = logging.getLogger(__name__)

FORMATS = ("onnx", "torchscript")
FILE_NAMES = {"onnx": "model.onnx", "torchscript": "model.pt"}
ONNX_EXPORTERS = ("dynamo", "torchscript")
#: The oldest opset the dynamo exporter writes; asked for an older one, its version converter
#: fails on this network and the file keeps opset 18.
DYNAMO_MIN_OPSET = 18
#: The oldest opset that has the model's resizing (bilinear with ``align_corners``: ONNX
#: ``Resize`` from opset 11 on).
MIN_OPSET = 11
INPUT_NAME, OUTPUT_NAME = "image", "logits"

#: ``images (N, 3, H, W) float32 -> logits (N, K, H, W) float32``, both numpy arrays.
Runner = Callable[[np.ndarray], np.ndarray]


class LogitsOnly(nn.Module):
    """``(N, 3, H, W)`` -> logits ``(N, K, H, W)``: the model's ``"out"`` as a bare tensor (the
    runtimes take tensors, not dicts)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image)["out"]


def min_input_size(model: nn.Module) -> int:
    """The smallest height/width the dynamo export allows: at ``4 * 2**max(path)`` pixels or
    fewer the coarsest feature map is 1x1, a size ``torch.export`` specialises."""
    return 4 * 2 ** max(model.backbone.path) + 1


def check_onnx_options(opset: int, exporter: str) -> None:
    """Raises ``ValueError`` for an exporter :func:`export_onnx` does not know, or an opset it
    cannot write with it."""
    if exporter not in ONNX_EXPORTERS:
        raise ValueError(f"onnx_exporter={exporter!r}; expected one of {ONNX_EXPORTERS}")
    try:
        from onnx.defs import onnx_opset_version
    except ImportError:  # the export stage says what to install
        onnx_opset_version = None
    if opset < MIN_OPSET:
        raise ValueError(
            f"opset={opset}: the model's bilinear resizing (align_corners) needs opset "
            f"{MIN_OPSET} or later"
        )
    if onnx_opset_version is not None and opset > onnx_opset_version():
        raise ValueError(
            f"opset={opset}: the installed onnx knows opsets up to {onnx_opset_version()}"
        )
    if exporter == "dynamo" and opset < DYNAMO_MIN_OPSET:
        raise ValueError(
            f"opset={opset}: onnx_exporter=dynamo writes opset {DYNAMO_MIN_OPSET} or later; "
            f"pass onnx_exporter=torchscript for opsets {MIN_OPSET} to {DYNAMO_MIN_OPSET - 1}"
        )


def export_onnx(
    model: nn.Module, path: str | os.PathLike, *, size: tuple[int, int], opset: int, exporter: str
) -> dict[str, Any]:
    """Write ``model`` (eval mode, CPU) to ``path`` as one ONNX file with input ``image``
    ``(batch, 3, height, width)`` and output ``logits`` ``(batch, K, height, width)``, traced
    at ``size``. ``exporter="dynamo"`` uses the ``torch.export``-based exporter and falls back
    to the TorchScript-based one if it fails. Returns the exporter used, the file's opset and,
    after a fallback, the reason."""
    check_onnx_options(opset, exporter)
    wrapped = LogitsOnly(model).eval()
    fallback = None
    least = min_input_size(model)
    if exporter == "dynamo" and min(size) < least:
        fallback = (
            f"export_size {list(size)} is below {least}, the smallest height and width "
            "torch.export takes for this model (its coarsest map would be 1x1); an export_size "
            f"of at least [{least}, {least}] uses the dynamo exporter"
        )
    elif exporter == "dynamo":
        try:
            _export_dynamo(wrapped, path, size, opset, least)
        except Exception as err:  # the newer exporter; the TorchScript-based one covers the model
            fallback = failure_reason(err)
    if fallback is not None:
        log.warning("using the TorchScript-based ONNX exporter, not the dynamo one: %s", fallback)
        exporter = "torchscript"
    if exporter == "torchscript":
        _export_legacy(wrapped, path, size, opset)
    import onnx

    proto = onnx.load(os.fspath(path))
    opset_used = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
    return {"exporter": exporter, "opset": opset_used, "fallback_reason": fallback}


_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")


def failure_reason(err: BaseException) -> str:
    """One line for ``err``: its type and first line and, where it wraps another error (the
    exporter re-raises what went wrong in a step of its own), that one's too; terminal colour
    codes removed."""

    def line(e: BaseException) -> str:
        text = _ANSI_ESCAPE.sub("", str(e)).strip()
        return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__

    cause, seen = err, {id(err)}
    while cause.__cause__ is not None and id(cause.__cause__) not in seen:
        cause = cause.__cause__
        seen.add(id(cause))
    return line(err) if cause is err else f"{line(err)} (caused by {line(cause)})"


@contextlib.contextmanager
def _quiet(level: int, *loggers: str) -> Iterator[None]:
    """Raise ``loggers`` to ``level`` within the block."""
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(level)
    try:
        yield
    finally:
        for name, previous in levels.items():
            logging.getLogger(name).setLevel(previous)


def _export_dynamo(
    wrapped: nn.Module, path: str | os.PathLike, size: tuple[int, int], opset: int, least: int
) -> None:
    from torch.export import Dim

    # Batch 2 as the example: torch.export specialises dimensions whose example value is 0 or 1.
    example = torch.randn(2, 3, *size)
    dims = {0: Dim("batch"), 2: Dim("height", min=least), 3: Dim("width", min=least)}
    with (
        torch.no_grad(),
        warnings.catch_warnings(),
        _quiet(logging.WARNING, "onnx_ir", "onnxscript"),  # they log every graph rewrite
        _quiet(logging.ERROR, "torch.onnx._internal.exporter._registration"),  # torchvision ops
    ):
        warnings.simplefilter("ignore", FutureWarning)  # deprecations inside torch.export
        torch.onnx.export(
            wrapped,
            (example,),
            os.fspath(path),
            dynamo=True,
            dynamic_shapes={"image": dims},
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            external_data=False,
            verbose=False,
        )


def _export_legacy(
    wrapped: nn.Module, path: str | os.PathLike, size: tuple[int, int], opset: int
) -> None:
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # chosen knowingly (or a fallback)
        torch.onnx.export(
            wrapped,
            (torch.randn(1, 3, *size),),
            os.fspath(path),
            dynamo=False,
            dynamic_axes={INPUT_NAME: axes, OUTPUT_NAME: axes},
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
        )


def export_torchscript(
    model: nn.Module, path: str | os.PathLike, *, size: tuple[int, int]
) -> dict[str, Any]:
    """Write ``model`` to ``path`` as a traced TorchScript module ``image (N, 3, H, W) ->
    logits (N, K, H, W)``; ``ops.resize`` never branches on sizes while tracing, so the trace
    holds no input size."""
    wrapped = LogitsOnly(model).eval()
    with torch.no_grad(), warnings.catch_warnings():
        # TorchScript is deprecated in favour of torch.export, yet it is what libtorch loads.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(wrapped, torch.randn(1, 3, *size), check_trace=False)
        torch.jit.save(traced, os.fspath(path))
    return {"method": "torch.jit.trace"}


def load_runner(fmt: str, path: str | os.PathLike, *, threads: int) -> Runner:
    """The exported file at ``path`` as a :data:`Runner` on the CPU: ONNX Runtime with
    ``threads`` intra-op threads, TorchScript on torch's own thread pool."""
    if fmt == "onnx":
        return onnx_runner(path, threads=threads)
    if fmt == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            module = torch.jit.load(os.fspath(path), map_location="cpu").eval()

        def run(images: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return module(torch.from_numpy(images)).numpy()

        return run
    raise ValueError(f"format={fmt!r}; expected one of {FORMATS}")


def onnx_runner(path: str | os.PathLike, *, threads: int) -> Runner:
    """An ONNX Runtime session (CPUExecutionProvider) on ``path`` as a :data:`Runner`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(os.fspath(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda images: session.run(None, {name: images})[0]
