"""Flow matching, PRDiT-FM (docs/method.md §14): the straight path ``x_t = (1 − t)·ε + t·x₀``
from noise (t = 0) to data (t = 1), the network predicting the velocity ``v = x₀ − ε``."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prdit.diffusion.process import Prediction, Process
from prdit.errors import ConfigError


@dataclass(frozen=True)
class FlowMatching(Process):
    """Continuous t ~ U(0, 1), ε ~ N(0, I); the network's time input is ``time_scale·t`` (1000)
    and its one output channel per volume channel is the velocity."""

    time_scale: float = 1000.0

    kind = "flow"
    samplers = ("euler", "heun", "dpm++2m", "dpm++3m")
    default_sampler = "euler"
    loss_names = ("loss",)
    sample_steps = 100  # the reference's

    def __post_init__(self) -> None:
        if not self.time_scale > 0:
            raise ConfigError(f"time_scale must be > 0, got {self.time_scale}")

    @property
    def sigma(self) -> float:
        """Unit noise."""
        return 1.0

    def signal(self, t: torch.Tensor | float) -> torch.Tensor:
        """``a(t) = t``."""
        return torch.as_tensor(t, dtype=torch.float64)

    def noise_scale(self, t: torch.Tensor | float) -> torch.Tensor:
        """``s(t) = 1 − t``."""
        return 1.0 - torch.as_tensor(t, dtype=torch.float64)

    def output_channels(self, in_channels: int) -> int:
        """The velocity: as many channels as the volume."""
        return in_channels

    def sample_time(self, batch: int, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """``t ~ U(0, 1)`` per volume."""
        return torch.rand((batch,), generator=generator,
                          device=generator.device if generator is not None else device).to(device)

    def time_at_noise_level(self, level: float) -> float:
        """``1 − level``: t runs from noise (0) to data (1)."""
        return 1.0 - level

    def noise_level(self, t: float) -> float:
        """``1 − t``."""
        return 1.0 - float(t)

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """``1000·t``: the time embedding's frequencies were laid out for integer steps up to 1000."""
        return t * self.time_scale

    def process_time(self, model_time: torch.Tensor) -> torch.Tensor:
        """``model_time/1000``."""
        return model_time / self.time_scale

    def loss(self, output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss = mean((v̂ − (x₀ − ε))²)``."""
        if output.shape[1] != x0.shape[1]:
            raise ConfigError(f"a flow-matching model returns the velocity ({x0.shape[1]} channel(s)), "
                              f"this one returns {output.shape[1]}")
        loss = ((output - (x0 - noise)) ** 2).mean()
        return {"loss": loss}

    def grid(self, steps: int) -> list[float]:
        """``t_k = k/steps``, k = 0..steps: from noise to data."""
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        return [k / steps for k in range(steps + 1)]

    def predict(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
        """``x̂₀ = x_t + (1 − t)·v̂`` and ``ε̂ = x_t − t·v̂``."""
        if output.shape[1] != x_t.shape[1]:
            raise ConfigError(f"a flow-matching model returns {x_t.shape[1]} velocity channel(s), "
                              f"this one returns {output.shape[1]}")
        t = t.to(output.dtype).reshape((-1,) + (1,) * (output.ndim - 1))
        return Prediction(x0=x_t + (1.0 - t) * output, noise=x_t - t * output)

    def network_output(self, prediction: Prediction) -> torch.Tensor:
        """The velocity ``x̂₀ − ε̂``."""
        return prediction.x0 - prediction.noise

    def ode_time(self, t: float) -> float:
        """t itself."""
        return float(t)

    def time_at_log_snr(self, log_snr: float) -> float:
        """``t = 1/(1 + e^{−λ})``: ``t/(1 − t) = e^λ``."""
        return 1.0 / (1.0 + math.exp(-log_snr))

    def velocity(self, x: torch.Tensor, t: float, prediction: Prediction) -> torch.Tensor:
        """``v̂ = x̂₀ − ε̂``."""
        return prediction.x0 - prediction.noise

    def data_prediction(self, x: torch.Tensor, t: float, prediction: Prediction) -> torch.Tensor:
        """``D = x + (1 − t)·v̂`` (the x̂₀ of :meth:`predict`)."""
        return x + (1.0 - float(t)) * self.velocity(x, t, prediction)
