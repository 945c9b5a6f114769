"""The learning rate over a run (``optim.schedule``): a function of the step alone, so a resumed run
continues the same curve without saving any state."""

from __future__ import annotations

import math

SCHEDULES = ("constant", "cosine", "linear")


def learning_rate(step: int, total_steps: int, lr: float, schedule: str = "constant", warmup_steps: int = 0,
                  final_lr: float = 0.0) -> float:
    """The learning rate of step ``step`` (0-based) of ``total_steps``: a linear rise over the first
    ``warmup_steps`` (step k at ``lr·(k+1)/warmup_steps``), then ``lr`` throughout (constant) or a decay
    that reaches ``final_lr`` at ``total_steps`` (cosine: half a period; linear)."""
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown learning-rate schedule '{schedule}' (one of {', '.join(SCHEDULES)})")
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if schedule == "cosine" else 1.0 - progress
    return final_lr + (lr - final_lr) * shape
