"""The export stage: a checkpoint (or a preset with random weights) as an ONNX or TorchScript
file, checked against the eager model at two sizes, timed, and optionally quantized to int8."""

from autodeeplab.export.config import ExportConfig
from autodeeplab.export.parity import ParityError
from autodeeplab.export.run import run_export

__all__ = ["ExportConfig", "ParityError", "run_export"]
