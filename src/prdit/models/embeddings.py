"""Timestep embedding with a shared layer and two heads (docs/method.md §3), and the fixed 3D
positional encoding of the global refiner (docs/method.md §5)."""

from __future__ import annotations

import math

import torch
from torch import nn

FREQUENCY_DIM = 256


def timestep_sinusoid(t: torch.Tensor, dim: int = FREQUENCY_DIM, max_period: float = 10000.0) -> torch.Tensor:
    """``[B]`` timesteps (integer or fractional) -> ``[B, dim]`` as ``[cos(t·ω_k), sin(t·ω_k)]``."""
    half = dim // 2
    dtype = torch.float64 if t.dtype == torch.float64 else torch.float32  # float64 for finite differences
    omega = torch.exp(-math.log(max_period) * torch.arange(half, dtype=dtype, device=t.device) / half)
    angles = t.to(dtype)[:, None] * omega[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


class TimestepEmbedder(nn.Module):
    """Shared Linear(256→D)+SiLU, a coarse head (→ C·P³) and, for stage 2, a fine head (→ D)."""

    def __init__(self, hidden_size: int, coarse_size: int, with_fine_head: bool) -> None:
        super().__init__()
        self.shared = nn.Sequential(nn.Linear(FREQUENCY_DIM, hidden_size), nn.SiLU())
        self.coarse_head = nn.Linear(hidden_size, coarse_size)
        self.fine_head = nn.Linear(hidden_size, hidden_size) if with_fine_head else None

    def forward(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B]`` -> coarse condition ``[B, C·P³]`` and fine condition ``[B, D]`` (or None)."""
        h = self.shared(timestep_sinusoid(t))
        fine = self.fine_head(h) if self.fine_head is not None else None
        return self.coarse_head(h), fine


def positional_encoding_3d(grid: tuple[int, int, int], dim: int) -> torch.Tensor:
    """Fixed sin/cos encoding of token centres, ``[gd·gh·gw, dim]`` in token (depth-major) order.

    Per axis ``F = ⌊dim/6⌋`` bands ``f_m = 2π·(0.95·g/2)^(m/(F−1))`` at coordinates ``(k+0.5)/g``;
    blocks ``[sin x, cos x, sin y, cos y, sin z, cos z]`` (x = width, z = depth); zero-padded
    to ``dim`` when ``dim`` is not a multiple of 6.
    """
    bands = dim // 6
    if bands < 1:
        raise ValueError(f"positional encoding needs a width of at least 6, got {dim}")
    gd, gh, gw = grid

    def axis_features(g: int) -> torch.Tensor:
        coords = (torch.arange(g, dtype=torch.float64) + 0.5) / g
        exponents = torch.arange(bands, dtype=torch.float64) / max(bands - 1, 1)
        freqs = 2 * math.pi * (0.95 * g / 2) ** exponents
        angles = coords[:, None] * freqs[None]
        return torch.sin(angles), torch.cos(angles)

    sin_z, cos_z = axis_features(gd)
    sin_y, cos_y = axis_features(gh)
    sin_x, cos_x = axis_features(gw)

    def broadcast(values: torch.Tensor, axis: int) -> torch.Tensor:
        shape = [1, 1, 1, bands]
        shape[axis] = values.shape[0]
        return values.reshape(shape).expand(gd, gh, gw, bands)

    pe = torch.cat(
        [broadcast(sin_x, 2), broadcast(cos_x, 2), broadcast(sin_y, 1), broadcast(cos_y, 1),
         broadcast(sin_z, 0), broadcast(cos_z, 0)],
        dim=-1,
    ).reshape(gd * gh * gw, 6 * bands)
    if pe.shape[1] < dim:
        pe = torch.cat([pe, pe.new_zeros(pe.shape[0], dim - pe.shape[1])], dim=1)
    return pe.float()
