"""Shared test settings: one torch thread (the machine's other core is often busy)."""

import os

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
