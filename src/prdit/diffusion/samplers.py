"""Samplers of the IaN process (spec §8): Euler ("DDIM-style") and the one-call-per-step
predictor–corrector ("hot") sampler. Both start from pure noise ``σ·z`` at exactly ``t = T``."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from prdit.diffusion.ian import IaNDiffusion
from prdit.errors import ConfigError

SAMPLERS = ("pc", "euler")

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class SampleResult:
    """The last x̂₀ (the generated volumes) and the last state of the chain, both ``[B, C, D, H, W]``."""

    x0: torch.Tensor
    state: torch.Tensor


def euler_step(diffusion: IaNDiffusion, x: torch.Tensor, t_from: float, t_to: float,
               eps_hat: torch.Tensor, x0_hat: torch.Tensor) -> torch.Tensor:
    """``x_j = x_i + (β_i − β_j)·(sin β_i·x̂₀ − cos β_i·ε̂)``."""
    beta_from = float(diffusion.beta(t_from))
    delta = beta_from - float(diffusion.beta(t_to))
    return x + delta * (math.sin(beta_from) * x0_hat - math.cos(beta_from) * eps_hat)


@torch.no_grad()
def sample(model: Denoiser, diffusion: IaNDiffusion, shape: tuple[int, ...], steps: int = 1000,
           sampler: str = "pc", device: torch.device | str = "cpu",
           generator: torch.Generator | Sequence[torch.Generator] | None = None,
           noise: torch.Tensor | None = None, progress: Callable[[int, int], None] | None = None) -> SampleResult:
    """Generate ``shape`` = ``[B, C, D, H, W]`` volumes in the model range with ``steps`` network calls.

    ``generator`` (on any device; or one per volume) makes the run reproducible; ``noise`` fixes the start ``x_T``
    (it must already be scaled by σ). ``progress(i, steps)`` is called after each step.
    """
    if sampler not in SAMPLERS:
        raise ConfigError(f"unknown sampler '{sampler}'; choose one of {', '.join(SAMPLERS)}")
    grid = diffusion.timestep_grid(steps)
    x = noise.to(device) if noise is not None else diffusion.sample_noise(shape, device, generator)
    x0_hat = x
    for i in range(steps):
        t_i, t_j = grid[i], grid[i + 1]
        t = torch.full((x.shape[0],), t_i, device=device, dtype=torch.float32)
        output = model(x, t).float()
        eps_hat, x0_hat = diffusion.split_prediction(output, x, t)
        # The jump of two steps reaches t = 0 at the last two grid points: plain Euler there,
        # decided by index (a float comparison of t_i − 2Δ with 0 misjudges it for half the step counts).
        if sampler == "euler" or i + 2 >= steps:
            x = euler_step(diffusion, x, t_i, t_j, eps_hat, x0_hat)
        else:
            # Predictor: an Euler jump of two steps; corrector: re-noise exactly to t_j.
            t_jump = grid[i + 2]
            x_jump = euler_step(diffusion, x, t_i, t_jump, eps_hat, x0_hat)
            alpha = math.cos(float(diffusion.beta(t_j))) / math.cos(float(diffusion.beta(t_jump)))
            z = diffusion.sample_noise(x.shape, device, generator, x.dtype) / diffusion.noise_std
            x = alpha * x_jump + math.sqrt(max(1.0 - alpha**2, 0.0)) * diffusion.noise_std * z
        if progress is not None:
            progress(i + 1, steps)
    return SampleResult(x0=x0_hat, state=x)
