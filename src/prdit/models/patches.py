"""Overlapping 3D patch tokens (docs/method.md §2): reflect-pad, cut ``P³`` patches with stride ``S``,
and put each token's predicted ``S³`` core back on the grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def patchify(x: torch.Tensor, patch_size: int, stride: int) -> torch.Tensor:
    """``[B, C, D, H, W]`` -> ``[B, N, C·P³]`` tokens, depth-major order, each laid out ``[C, P, P, P]``."""
    pad = (patch_size - stride) // 2
    b, c = x.shape[:2]
    if pad > 0:
        x = F.pad(x, (pad,) * 6, mode="reflect")
    # unfold adds the window dims last: [B, C, gd, gh, gw, P, P, P]
    x = x.unfold(2, patch_size, stride).unfold(3, patch_size, stride).unfold(4, patch_size, stride)
    gd, gh, gw = x.shape[2:5]
    x = x.permute(0, 2, 3, 4, 1, 5, 6, 7)
    return x.reshape(b, gd * gh * gw, c * patch_size**3)


def unpatchify(tokens: torch.Tensor, grid: tuple[int, int, int], stride: int) -> torch.Tensor:
    """``[B, N, S³·C]`` tokens laid out ``[S, S, S, C]`` -> ``[B, C, D, H, W]`` (no overlap)."""
    b, n, width = tokens.shape
    gd, gh, gw = grid
    if n != gd * gh * gw:
        raise ValueError(f"{n} tokens do not fill a {gd}x{gh}x{gw} grid")
    c = width // stride**3
    x = tokens.reshape(b, gd, gh, gw, stride, stride, stride, c)
    x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
    return x.reshape(b, c, gd * stride, gh * stride, gw * stride)
