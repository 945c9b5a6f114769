"""Exponential moving average of the trainable weights (decay every step, docs/method.md §9)."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """``ema ← decay·ema + (1−decay)·weights`` for every trainable parameter; frozen ones are copies."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        names = {name for name, p in model.named_parameters() if p.requires_grad}
        self._pairs = [(p_ema, p) for (name, p_ema), (_, p) in zip(self.model.named_parameters(),
                                                                  model.named_parameters()) if name in names]

    @torch.no_grad()
    def update(self, decay: float | None = None) -> None:
        """One EMA step after an optimiser step, with ``decay`` (the constant one where None)."""
        if self._pairs:
            ema, live = zip(*self._pairs)
            torch._foreach_lerp_(list(ema), list(live), 1.0 - (self.decay if decay is None else decay))

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged model's state dict."""
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore the averaged weights (strict)."""
        self.model.load_state_dict(state, strict=True)


def warmed_up_decay(decay: float, step: int) -> float:
    """The decay of the EMA step after optimiser step ``step`` (0-based) with warm-up: ``min(decay,
    (1 + step)/(10 + step))``, so the average forgets the weights it started from within a few steps (their
    share after n steps is 9!·n!/(n + 9)!), averages about the last ninth of the steps so far, and is ``decay``
    from step ``(10·decay − 1)/(1 − decay)`` on (89,990 for 0.9999)."""
    return min(decay, (1 + step) / (10 + step))
