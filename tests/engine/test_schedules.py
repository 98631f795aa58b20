import pytest
import torch

from autodeeplab.engine.schedules import poly_lr


def _optimizer(*lrs):
    params = [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(params, lr=lrs[0])


def _trace(optimizer, scheduler, steps):
    lrs = []
    for _ in range(steps):
        lrs.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return lrs


def test_poly_formula_per_group():
    opt = _optimizer(0.1, 0.01)
    lrs = _trace(opt, poly_lr(opt, total_steps=10), 12)
    for step, (a, b) in enumerate(lrs):
        factor = (1 - min(step, 10) / 10) ** 0.9
        assert a == pytest.approx(0.1 * factor) and b == pytest.approx(0.01 * factor)
    assert lrs[10] == [0.0, 0.0] and lrs[11] == [0.0, 0.0]


def test_min_lr_floor():
    opt = _optimizer(0.1, 0.001)
    lrs = _trace(opt, poly_lr(opt, total_steps=10, power=1.0, min_lr=0.005), 12)
    assert lrs[0] == pytest.approx([0.1, 0.001])  # a base below min_lr stays at its base
    assert lrs[5][0] == pytest.approx(0.05)
    assert lrs[9][0] == pytest.approx(0.01)
    assert lrs[10][0] == pytest.approx(0.005) and lrs[11][0] == pytest.approx(0.005)


def test_warmup_is_linear_then_poly():
    opt = _optimizer(1.0)
    lrs = [lr[0] for lr in _trace(opt, poly_lr(opt, total_steps=10, power=1.0, warmup_steps=4), 6)]
    expected = [0.25 * 1.0, 0.5 * 0.9, 0.75 * 0.8, 1.0 * 0.7, 0.6, 0.5]
    assert lrs == pytest.approx(expected)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"total_steps": 0}, "total_steps=0; expected at least 1"),
        ({"total_steps": 5, "power": -1}, "power >= 0 and min_lr >= 0; got -1"),
        ({"total_steps": 5, "min_lr": -0.1}, "min_lr >= 0; got 0.9, -0.1"),
        (
            {"total_steps": 5, "warmup_steps": 5},
            "warmup_steps=5; expected 0 <= warmup_steps < total",
        ),
        ({"total_steps": 5, "warmup_steps": -1}, "warmup_steps=-1"),
    ],
)
def test_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        poly_lr(_optimizer(0.1), **kwargs)
