"""A consistency model distilled from an IaN teacher (docs/method.md §18): one to four network calls a volume.

IaN with noise std σ is TrigFlow with ``σ_d = σ`` and angle ``t = β``, so the student keeps the teacher's
network and parametrisation: its consistency function is the data prediction of its two heads,
``f_θ(x_t, t) = cos t·x_t − sin t·v̂ = D`` (docs/method.md §16), which a student initialised from the
teacher makes one DDIM step with D. :meth:`ConsistencyModel.predict` returns ``f_θ`` as the clean-volume
estimate (and the noise it implies), so the sampling loop, hooks and previews see what the model means.

Sampling (the ``consistency`` step rule of ``samplers.py``): ``x₀ = f_θ(σ·z, π/2)``; with k steps,
re-noise ``x_t = cos t·x₀ + sin t·σ·z'`` at decreasing angles and apply ``f_θ`` again. The angles: sCM's
1.1 for the second step, then evenly spaced towards 0 (``second_angle·(k−j)/(k−1)``, j = 1 … k−1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prdit.diffusion.ian import IaNDiffusion
from prdit.diffusion.process import Prediction
from prdit.errors import ConfigError


@dataclass(frozen=True)
class ConsistencyModel(IaNDiffusion):
    """The IaN path and network of the teacher, sampled as a consistency model in a few steps."""

    second_angle: float = 1.1  # TrigFlow angle (radians) of the second step, sCM's choice

    kind = "consistency"
    samplers = ("consistency",)
    default_sampler = "consistency"
    sample_steps = 2
    guided_steps = None
    lambda_schedule = False  # the grid is sCM's re-noising angles, not a discretisation to respace in λ
    loss_names = ("loss",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.second_angle < math.pi / 2:
            raise ConfigError(f"second_angle must lie in (0, π/2), got {self.second_angle}")

    def predict(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
        """``f_θ = cos t·x_t − sin t·v̂`` from the two heads as the clean volume, and the noise
        ``(x_t − cos t·f_θ)/sin t`` that puts ``x_t`` on its path (zero at t = 0)."""
        heads = super().predict(output, x_t, t)
        cos, sin = self._cos_sin(t, x_t)
        velocity = cos * heads.noise - sin * heads.x0
        clean = cos * x_t - sin * velocity
        noise = torch.where(sin > 0, (x_t - cos * clean) / sin.clamp_min(1e-12), torch.zeros_like(x_t))
        return Prediction(x0=clean, noise=noise)

    def network_output(self, prediction: Prediction) -> torch.Tensor:
        """Heads that :meth:`predict` reads as ``prediction`` (ε̂, x̂₀ = the prediction's own, which agree)."""
        return torch.cat([prediction.noise, prediction.x0], dim=1)

    def grid(self, steps: int) -> list[float]:
        """Timesteps of ``steps`` consistency steps: T, the second angle and evenly spaced below it, then 0."""
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        to_timestep = 2 * self.num_timesteps / math.pi
        angles = [self.second_angle * (steps - j) / (steps - 1) for j in range(1, steps)] if steps > 1 else []
        return [float(self.num_timesteps), *(a * to_timestep for a in angles), 0.0]

    def training_losses(self, model, x0, t=None, noise=None, generator=None):
        """A consistency model is not trained from data by ``prdit train``."""
        raise ConfigError("a consistency model is made from a trained IaN model by `prdit distill` "
                          "(docs/method.md §18), not trained by `prdit train`")
