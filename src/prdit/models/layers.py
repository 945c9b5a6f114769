"""Small building blocks shared by the local denoiser and the global refiner."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN modulation ``x·(1+scale)+shift``; ``x`` ``[B, N, W]``, shift/scale ``[B, W]`` (or ``[B, N, W]``)."""
    if shift.ndim == x.ndim - 1:
        shift, scale = shift.unsqueeze(1), scale.unsqueeze(1)
    return x * (1 + scale) + shift


class SwiGLU(nn.Module):
    """``out(LN_affine(SiLU(gate(x)) ⊙ value(x)))`` with hidden ratio 1.0 (docs/method.md §4)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.gate = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.norm = nn.LayerNorm(width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., W]`` -> ``[..., W]``."""
        return self.out(self.norm(F.silu(self.gate(x)) * self.value(x)))


class Mlp(nn.Module):
    """``fc2(GELU_tanh(fc1(x)))``."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.fc2 = nn.Linear(hidden_features, out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., in]`` -> ``[..., out]``."""
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))
