"""Measurement guidance of the predictor–corrector sampler (TF-PRDiT, docs/method.md §15).

A measurement ``y = A(x)`` steers sampling through one sampler hook: at grid times noisier than
the cutoff the predictor's state moves against ``g = ∂‖A(x̂₀) − y‖₂/∂x̂₀`` (the norm, not its
square; the gradient is taken with respect to x̂₀ only, never through the network), weighted by
``ρ·c`` with ``c = ½(1 + cos((1 − ℓ)π))`` where the task decays it; ℓ is the process's noise
level of the time (``t/T`` on IaN, the reference's ``i/T``). Because the Euler
step is additive in the state, ``x − ρ·c·g`` followed by the sampler's own step is the guided
predictor ``x̃ = x_i − p·h·f − ρ·c·g``; the jump p and the corrector's noise scale w are
sampler settings (:class:`~prdit.diffusion.samplers.SamplerSettings`). Infill also replaces
x̂₀ by the measurement where it is known, after the gradient is taken on the network's own x̂₀.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch

from prdit.diffusion.process import Prediction, Process
from prdit.diffusion.samplers import SamplerStep
from prdit.errors import ConfigError
from prdit.inverse.operators import Mask, Operator

TASKS = ("xray", "sr", "infill", "deblur")
REFERENCE_TIMESTEPS = 1000  # the reference's T: a cutoff counts its timesteps, the noise level cutoff/T


@dataclass(frozen=True)
class GuidanceSettings:
    """ρ (``scale``), whether c decays, the predictor's jump p, the corrector noise scale w, the
    cutoff (guidance while the noise level is above cutoff/1000: timesteps of the reference's T = 1000)
    and hard data consistency."""

    scale: float
    decay: bool
    jump: int
    corrector_noise: float
    cutoff: float
    hard_consistency: bool

    def checked(self) -> "GuidanceSettings":
        """``self``, or a ``ConfigError`` naming the bad setting."""
        if not self.scale >= 0:
            raise ConfigError(f"guidance scale must be >= 0, got {self.scale}")
        if int(self.jump) != self.jump or self.jump < 1:
            raise ConfigError(f"the predictor's jump must be an integer >= 1, got {self.jump}")
        if not self.corrector_noise >= 0:
            raise ConfigError(f"corrector noise scale must be >= 0, got {self.corrector_noise}")
        if not self.cutoff >= 0:
            raise ConfigError(f"guidance cutoff must be >= 0, got {self.cutoff}")
        return self

    def to_dict(self) -> dict:
        """Every setting, for a manifest."""
        return asdict(self)


# The settings the reference runs (docs/method.md §15), the one place they live.
TASK_DEFAULTS: dict[str, GuidanceSettings] = {
    "xray": GuidanceSettings(scale=0.70, decay=True, jump=4, corrector_noise=0.95, cutoff=20, hard_consistency=False),
    "sr": GuidanceSettings(scale=20.0, decay=False, jump=2, corrector_noise=0.9, cutoff=100, hard_consistency=False),
    "infill": GuidanceSettings(scale=3.0, decay=True, jump=2, corrector_noise=1.0, cutoff=100, hard_consistency=True),
    "deblur": GuidanceSettings(scale=10.0, decay=False, jump=2, corrector_noise=1.0, cutoff=100,
                               hard_consistency=False),
}


def task_settings(task: str, **changes) -> GuidanceSettings:
    """The task's defaults with ``changes`` (fields of :class:`GuidanceSettings`; None keeps the default)."""
    if task not in TASK_DEFAULTS:
        raise ConfigError(f"unknown task '{task}'; choose one of {', '.join(TASKS)}")
    unknown = set(changes) - set(GuidanceSettings.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown guidance setting(s) {sorted(unknown)}; "
                          f"choose from {', '.join(GuidanceSettings.__dataclass_fields__)}")
    return replace(TASK_DEFAULTS[task], **{k: v for k, v in changes.items() if v is not None}).checked()


def guidance_weight(level: float) -> float:
    """``c = ½(1 + cos((1 − ℓ)π))`` at noise level ℓ: 1 at pure noise (ℓ = 1), 0 at data (ℓ = 0)."""
    return 0.5 * (1.0 + math.cos((1.0 - level) * math.pi))


class MeasurementGuidance:
    """A sampler hook that steers every volume of the batch towards ``measurement`` ``[B, ...]``
    (or ``[1, ...]`` for all) under ``operator``; ``process`` gives each step's noise level."""

    requires_grad = True

    def __init__(self, operator: Operator, measurement: torch.Tensor, settings: GuidanceSettings,
                 process: Process) -> None:
        if settings.hard_consistency and not isinstance(operator, Mask):
            raise ConfigError(f"hard data consistency needs a mask operator, not '{operator.name}'")
        self.operator = operator
        self.measurement = operator.measured(measurement.detach())
        self.settings = settings.checked()
        self.process = process

    def __call__(self, step: SamplerStep) -> SamplerStep:
        """The state moved against the guidance gradient of the network's x̂₀, then x̂₀ made consistent (infill)."""
        x0, noise = step.prediction
        x = step.x
        level = self.process.noise_level(step.t)
        if level > self.settings.cutoff / REFERENCE_TIMESTEPS and self.settings.scale > 0:
            weight = guidance_weight(level) if self.settings.decay else 1.0
            x = x - self.settings.scale * weight * self.gradient(x0)
        if self.settings.hard_consistency:
            # After the gradient, as the reference: on the replaced x̂₀ the residual m·(x̂₀ − y) is zero.
            known = self.operator.weights(x0)
            x0 = (1 - known) * x0 + known * self.measurement.to(device=x0.device, dtype=x0.dtype)
        return replace(step, x=x, prediction=Prediction(x0.detach(), noise))

    def gradient(self, x0: torch.Tensor) -> torch.Tensor:
        """``∂‖A(x̂₀) − y‖₂/∂x̂₀`` ``[B, 1, D, H, W]``, each volume by its own residual's norm."""
        leaf = x0.detach().requires_grad_(True)
        with torch.enable_grad():
            residual = self.operator(leaf) - self.measurement.to(device=leaf.device, dtype=leaf.dtype)
            norms = torch.linalg.vector_norm(residual.flatten(1), dim=1)
            (grad,) = torch.autograd.grad(norms.sum(), leaf)
        return grad
