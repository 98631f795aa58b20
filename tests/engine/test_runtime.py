"""Runtime settings shared by the stages."""

import pytest
import torch

from autodeeplab.engine.runtime import deterministic_algorithms


def _setting():
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
    )


@pytest.mark.parametrize("before", [(False, False), (True, False)])
def test_deterministic_algorithms_are_on_within_and_restored_after(before):
    saved = _setting()
    try:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        with deterministic_algorithms():
            assert _setting() == (True, True)  # a kernel without one warns, not fails
        assert _setting() == before
        with pytest.raises(KeyError), deterministic_algorithms():
            raise KeyError("a failing run")
        assert _setting() == before
        with deterministic_algorithms(enabled=False):
            assert _setting() == before
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
