"""Stage 1 — the local denoiser (docs/method.md §4): an adaLN-modulated SwiGLU MLP that sees one
patch token at a time and predicts its core for every output channel."""

from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from prdit.models.layers import SwiGLU, modulate


class LocalDenoiser(nn.Module):
    """Per-token MLP: ``[B, N, C·P³]`` tokens + ``[B, C·P³]`` condition -> ``[B, N, S³·C_out]``."""

    def __init__(self, token_size: int, core_out_size: int) -> None:
        super().__init__()
        self.modulation = nn.Sequential(nn.SiLU(), nn.Linear(token_size, 6 * token_size))
        self.swiglu1 = SwiGLU(token_size)
        self.swiglu2 = SwiGLU(token_size)
        self.output = nn.Linear(token_size, core_out_size)

    def forward(self, tokens: torch.Tensor, condition: torch.Tensor,
                label_modulation: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise each token independently of the others; ``label_modulation`` ``[B, N, 6W]`` adds each
        token's label-map term to its shifts and scales."""
        modulation = self.modulation(condition)
        if label_modulation is not None:
            # Added after the condition's own modulation, so a zero label term leaves it bit for bit.
            modulation = modulation.unsqueeze(1) + label_modulation
        shift1, scale1, shift2, scale2, shift3, scale3 = modulation.chunk(6, dim=-1)
        width = tokens.shape[-1]
        h = self.swiglu1(modulate(F.layer_norm(tokens, (width,), eps=1e-6), shift1, scale1))
        h = self.swiglu2(modulate(F.layer_norm(h, (width,), eps=1e-6), shift2, scale2))
        h = modulate(h + tokens, shift3, scale3)
        return self.output(h)
