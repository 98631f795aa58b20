"""Learning-rate schedules, stepped once per iteration."""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def poly_lr(
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    power: float = 0.9,
    min_lr: float = 0.0,
    *,
    warmup_steps: int = 0,
) -> LambdaLR:
    """The "poly" schedule of DeepLab [P §5.2]: ``lr = base * (1 - step / total) ** power``.

    The factor is floored at ``min_lr / base`` for each parameter group (and stays there past
    ``total_steps``). With ``warmup_steps > 0`` it is also multiplied by ``(step + 1) /
    warmup_steps`` during the first ``warmup_steps`` steps, so it reaches the poly curve at
    step ``warmup_steps - 1``. Call ``scheduler.step()`` after each ``optimizer.step()``.
    """
    if total_steps < 1:
        raise ValueError(f"total_steps={total_steps}; expected at least 1")
    if power < 0 or min_lr < 0:
        raise ValueError(f"poly_lr needs power >= 0 and min_lr >= 0; got {power}, {min_lr}")
    if not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps={warmup_steps}; expected 0 <= warmup_steps < total_steps")

    def factor_for(base_lr: float):
        floor = min(min_lr / base_lr, 1.0) if base_lr > 0 else 0.0

        def factor(step: int) -> float:
            poly = max((1.0 - min(step, total_steps) / total_steps) ** power, floor)
            if step < warmup_steps:
                return poly * (step + 1) / warmup_steps
            return poly

        return factor

    bases = [group.get("initial_lr", group["lr"]) for group in optimizer.param_groups]
    return LambdaLR(optimizer, [factor_for(base) for base in bases])
