"""Shared test settings: one torch thread (the machine's other core is often busy)."""

import importlib.util
import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no GPU"),
        ),
    ]
)
def device(request, monkeypatch):
    """The devices a test asking for it runs on: the CPU, and CUDA where a GPU is present (CI
    has none). On CUDA, float32 stays float32: cuDNN's convolutions would take TF32 by
    default (about 1e-3 relative), which the float32 tolerances are not meant for."""
    if request.param == "cuda":
        monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
        monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    return torch.device(request.param)


@pytest.fixture(scope="session")
def experiment_script():
    """``experiment_script(name)``: the module of ``experiments/<name>.py``, loaded from its
    file (the scripts are not a package)."""

    def load(name: str):
        path = Path(__file__).parents[1] / "experiments" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load
