"""The interface every generative process of the PRDiT family implements, and their registry.

A process is a Gaussian path ``x_t = a(t)·x₀ + s(t)·ε`` between clean volumes and noise,
with what training needs (draw t and noise, ``q_sample``, the loss on the network's output) and
what sampling needs (its time grid from noise to data, the split of the network's output into
the clean-volume and noise estimates and back, the ODE velocity and the data prediction it
implies, a deterministic step, the re-noising of the predictor–corrector sampler, its default
steps, whether guided reconstruction applies and the noise level of a time). Samplers
(``samplers.py``), oracles and guidance call only this interface and never test a process's
kind, so a new process is one file with one class and one entry in ``registry.PROCESSES``.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict
from typing import ClassVar, NamedTuple

import torch

from prdit.errors import ConfigError

Generators = torch.Generator | Sequence[torch.Generator] | None


class Prediction(NamedTuple):
    """What the network says about ``x_t``: the clean volume x̂₀ and the noise ε̂, both ``[B, C, D, H, W]``."""

    x0: torch.Tensor
    noise: torch.Tensor


class Process(ABC):
    """A path between data and noise; subclasses are frozen dataclasses of their settings."""

    kind: ClassVar[str]
    samplers: ClassVar[tuple[str, ...]]
    default_sampler: ClassVar[str]
    sample_steps: ClassVar[int]  # steps of plain sampling when none are given (`prdit sample`, PRDiTPipeline)
    guided_steps: ClassVar[int | None] = None  # steps of guided reconstruction when none are given; None: no guidance
    lambda_schedule: ClassVar[bool] = True  # whether the ``lambda`` schedule may respace the grid (samplers.py)
    loss_names: ClassVar[tuple[str, ...]]  # the keys of :meth:`loss`, "loss" (the optimised one) first

    # --- what training needs ------------------------------------------------------------

    @abstractmethod
    def output_channels(self, in_channels: int) -> int:
        """Channels of the network's output for ``in_channels``-channel volumes."""

    @abstractmethod
    def sample_time(self, batch: int, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Training times ``[batch]``."""

    @property
    @abstractmethod
    def sigma(self) -> float:
        """Standard deviation of the noise ε."""

    @abstractmethod
    def signal(self, t: torch.Tensor | float) -> torch.Tensor:
        """``a(t)``, the weight of x₀ in ``x_t`` (float64)."""

    @abstractmethod
    def noise_scale(self, t: torch.Tensor | float) -> torch.Tensor:
        """``s(t)``, the weight of ε in ``x_t`` (float64)."""

    @abstractmethod
    def time_at_noise_level(self, level: float) -> float:
        """The process time of a noise level from 0 (data) to 1 (pure noise), for validation."""

    @abstractmethod
    def noise_level(self, t: float) -> float:
        """How far time ``t`` lies towards pure noise, from 0 (data) to 1 (inverse of :meth:`time_at_noise_level`)."""

    @abstractmethod
    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The network's time input for process times ``t`` ``[B]``."""

    @abstractmethod
    def process_time(self, model_time: torch.Tensor) -> torch.Tensor:
        """The process times ``[B]`` of the network's time input (the inverse of :meth:`model_time`)."""

    @abstractmethod
    def loss(self, output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scalar losses from the network's ``output`` on ``x_t``; ``loss`` is the one optimised."""

    def sample_noise(self, shape: tuple[int, ...] | torch.Size, device: torch.device | str = "cpu",
                     generator: Generators = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``ε`` of the process's standard deviation. A sequence of generators, one per volume, draws
        row b of ``[B, ...]`` from generator b alone, so a volume's noise does not depend on its batch."""
        if generator is not None and not isinstance(generator, torch.Generator):
            if len(generator) != shape[0]:
                raise ConfigError(f"noise for {shape[0]} volumes requested with {len(generator)} generators")
            return torch.cat([self.sample_noise((1, *shape[1:]), device, g, dtype) for g in generator])
        gen_device = generator.device if generator is not None else device
        return (torch.randn(shape, generator=generator, device=gen_device, dtype=dtype) * self.sigma).to(device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process: ``[B, C, D, H, W]`` clean volumes at per-sample times ``t`` ``[B]``."""
        return _per_sample(self.signal(t), x0) * x0 + _per_sample(self.noise_scale(t), x0) * noise

    def training_losses(self, model: torch.nn.Module, x0: torch.Tensor, t: torch.Tensor | None = None,
                        noise: torch.Tensor | None = None,
                        generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Noise ``x0`` (drawing ``t`` then ``noise`` where not given), run ``model``, return the losses."""
        if t is None:
            t = self.sample_time(x0.shape[0], x0.device, generator)
        if noise is None:
            noise = self.sample_noise(x0.shape, x0.device, generator, x0.dtype)
        x_t = self.q_sample(x0, t, noise)
        return self.loss(model(x_t, self.model_time(t)).float(), x0, x_t, t, noise)

    # --- what sampling needs ------------------------------------------------------------

    @abstractmethod
    def grid(self, steps: int) -> list[float]:
        """``steps + 1`` times from pure noise (index 0) to data (index ``steps``)."""

    @abstractmethod
    def predict(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
        """The network's ``output`` on ``x_t`` as (x̂₀, ε̂)."""

    @abstractmethod
    def network_output(self, prediction: Prediction) -> torch.Tensor:
        """The network output ``[B, output_channels, D, H, W]`` that :meth:`predict` reads as ``prediction``."""

    @property
    def supports_guidance(self) -> bool:
        """Whether measurement-guided reconstruction (docs/method.md §15) applies: it declares ``guided_steps``."""
        return self.guided_steps is not None

    @abstractmethod
    def ode_time(self, t: float) -> float:
        """The variable the sampling ODE is integrated in (β for IaN, t for flow matching)."""

    @abstractmethod
    def velocity(self, x: torch.Tensor, t: float, prediction: Prediction) -> torch.Tensor:
        """``dx/d(ode_time)`` along the path through the predicted x̂₀ and ε̂."""

    @abstractmethod
    def data_prediction(self, x: torch.Tensor, t: float, prediction: Prediction) -> torch.Tensor:
        """The clean volume the sampling ODE at ``x`` points to: the x̂₀ whose path through ``x`` has the
        velocity :meth:`velocity` (DPM-Solver++ steps in it, so it integrates the ODE Euler and Heun do)."""

    def log_snr(self, t: float) -> float:
        """``λ(t) = log(a/(σ·s))``, the log signal-to-noise ratio DPM-Solver++ steps in (finite inside the grid)."""
        return math.log(float(self.signal(t))) - math.log(self.sigma * float(self.noise_scale(t)))

    @abstractmethod
    def time_at_log_snr(self, log_snr: float) -> float:
        """The time at which :meth:`log_snr` is ``log_snr``."""

    def start(self, shape: tuple[int, ...], device: torch.device | str = "cpu",
              generator: Generators = None) -> torch.Tensor:
        """Pure noise at ``grid[0]``, where sampling starts."""
        return self.sample_noise(shape, device, generator)

    def step(self, x: torch.Tensor, t_from: float, t_to: float, prediction: Prediction) -> torch.Tensor:
        """One Euler step of the sampling ODE from ``t_from`` to ``t_to``."""
        return x + (self.ode_time(t_to) - self.ode_time(t_from)) * self.velocity(x, t_from, prediction)

    def renoise(self, x: torch.Tensor, t_from: float, t_to: float, z: torch.Tensor) -> torch.Tensor:
        """Move ``x`` at ``t_from`` back to the noisier ``t_to`` exactly: ``α·x + sqrt(s_to² − α²s_from²)·σ·z``
        with ``α = a(t_to)/a(t_from)``, ``z ~ N(0, I)``."""
        alpha = float(self.signal(t_to) / self.signal(t_from))
        variance = float(self.noise_scale(t_to)) ** 2 - alpha**2 * float(self.noise_scale(t_from)) ** 2
        return alpha * x + math.sqrt(max(variance, 0.0)) * self.sigma * z

    def to_dict(self) -> dict:
        """``{"kind": ..., settings...}`` for configs and model folders."""
        return {"kind": self.kind, **asdict(self)}


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(like.device).reshape((-1,) + (1,) * (like.ndim - 1)).to(like.dtype)
