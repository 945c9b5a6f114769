"""IaN ("image and noise") diffusion (docs/method.md §8): a quarter-circle path between the clean
volume and Gaussian noise, ``x_t = cos β(t)·x₀ + sin β(t)·ε``, and the two-term loss."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from prdit.diffusion.process import Prediction, Process
from prdit.errors import ConfigError


@dataclass(frozen=True)
class IaNDiffusion(Process):
    """``β(t) = (π/2)·t/T``, ``ε ~ N(0, σ²I)``; integer-valued t ∈ [0, T], t = T pure noise.

    The network predicts ``[ε̂, x̂₀]`` (``2C`` channels), or x̂₀ alone (``C`` channels, ε̂ then
    implied by ``x_t``). Training draws t from ``0..T`` inclusive, so the level sampling starts
    from is learnt (docs/method.md §12).
    """

    num_timesteps: int = 1000
    noise_std: float = 0.5

    kind = "ian"
    samplers = ("pc", "euler", "heun", "dpm++1", "dpm++2m", "dpm++3m")
    default_sampler = "pc"
    loss_names = ("loss", "loss_x0", "loss_eps")
    # On the reference model (256 volumes a row, 95 % bootstrap intervals) 100 predictor-corrector steps
    # beat 50 on the HU histogram and on diversity and 250 on the HU histogram; no other step count
    # beats them on any metric, nor the ODE samplers on any but diversity (docs/sampling.md, "Quality against
    # network calls").
    sample_steps = 100
    guided_steps = 1000  # the reference's, which each task's guidance weights were tuned for (§15)

    def __post_init__(self) -> None:
        if self.num_timesteps < 1:
            raise ConfigError(f"num_timesteps must be >= 1, got {self.num_timesteps}")
        if not self.noise_std > 0:
            raise ConfigError(f"noise_std must be > 0, got {self.noise_std}")

    @property
    def sigma(self) -> float:
        """The noise standard deviation σ (0.5 in the reference)."""
        return self.noise_std

    def beta(self, t: torch.Tensor | float) -> torch.Tensor:
        """Angle of timestep ``t`` (tensor or number): ``(π/2)·t/T``."""
        return torch.as_tensor(t, dtype=torch.float64) * (math.pi / 2 / self.num_timesteps)

    def signal(self, t: torch.Tensor | float) -> torch.Tensor:
        """``cos β(t)``."""
        return torch.cos(self.beta(t))

    def noise_scale(self, t: torch.Tensor | float) -> torch.Tensor:
        """``sin β(t)`` (in units of σ)."""
        return torch.sin(self.beta(t))

    def output_channels(self, in_channels: int) -> int:
        """``[ε̂, x̂₀]``: twice the volume's channels."""
        return 2 * in_channels

    def sample_time(self, batch: int, device: torch.device | str = "cpu",
                    generator: torch.Generator | None = None) -> torch.Tensor:
        """Training timesteps, integers uniform over ``0..T`` inclusive (so ``t = T`` is learnt)."""
        return torch.randint(0, self.num_timesteps + 1, (batch,), generator=generator,
                             device=generator.device if generator is not None else device).to(device)

    def time_at_noise_level(self, level: float) -> float:
        """``level·T``."""
        return level * self.num_timesteps

    def noise_level(self, t: float) -> float:
        """``t/T``."""
        return float(t) / self.num_timesteps

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """The network sees the timestep itself."""
        return t

    def process_time(self, model_time: torch.Tensor) -> torch.Tensor:
        """The timestep itself."""
        return model_time

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process: ``[B, C, D, H, W]`` clean volumes at per-sample timesteps ``t`` ``[B]``."""
        cos, sin = self._cos_sin(t, x0)
        return cos * x0 + sin * noise

    def predict(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> Prediction:
        """``2C`` output channels are ``[ε̂, x̂₀]``; ``C`` channels are x̂₀ alone, and ε̂ is then implied
        by ``x_t`` (undefined at t = 0, where it is not needed)."""
        c = x_t.shape[1]
        if output.shape[1] == 2 * c:
            return Prediction(x0=output[:, c:], noise=output[:, :c])
        if output.shape[1] == c:
            cos, sin = self._cos_sin(t, x_t)
            return Prediction(x0=output, noise=(x_t - cos * output) / sin.clamp_min(1e-4))
        raise ConfigError(f"model returns {output.shape[1]} channels for {c}-channel volumes; expected {2 * c} or {c}")

    def network_output(self, prediction: Prediction) -> torch.Tensor:
        """``[ε̂, x̂₀]``."""
        return torch.cat([prediction.noise, prediction.x0], dim=1)

    def loss(self, output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor) -> dict[str, torch.Tensor]:
        """``loss = mean((x̂₀−x₀)²) + mean((ε̂−ε)²)``; also ``loss_x0`` and ``loss_eps``."""
        if output.shape[1] == x0.shape[1]:
            loss_x0 = ((output - x0) ** 2).mean()
            loss_eps = torch.zeros_like(loss_x0)
        else:
            prediction = self.predict(output, x_t, t)
            loss_x0 = ((prediction.x0 - x0) ** 2).mean()
            loss_eps = ((prediction.noise - noise) ** 2).mean()
        return {"loss": loss_x0 + loss_eps, "loss_x0": loss_x0, "loss_eps": loss_eps}

    def grid(self, steps: int) -> list[float]:
        """``t_i = T·(1 − i/steps)``, i = 0..steps: from exactly T down to 0."""
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        return [self.num_timesteps * (steps - i) / steps for i in range(steps + 1)]

    def ode_time(self, t: float) -> float:
        """The angle β(t)."""
        return float(self.beta(t))

    def time_at_log_snr(self, log_snr: float) -> float:
        """``β = atan(1/(σ·e^λ))``, as a timestep."""
        return math.atan2(1.0, self.noise_std * math.exp(log_snr)) * 2 * self.num_timesteps / math.pi

    def velocity(self, x: torch.Tensor, t: float, prediction: Prediction) -> torch.Tensor:
        """``dx/dβ = −sin β·x̂₀ + cos β·ε̂``."""
        beta = self.ode_time(t)
        return math.cos(beta) * prediction.noise - math.sin(beta) * prediction.x0

    def data_prediction(self, x: torch.Tensor, t: float, prediction: Prediction) -> torch.Tensor:
        """``D = cos β·x − sin β·v̂ = sin²β·x̂₀ + cos β·(x − sin β·ε̂)``: on the exact path ``cos β·x − sin β·v = x₀``;
        it is the x̂₀ head only where the heads agree (and at pure noise, β = π/2)."""
        beta = self.ode_time(t)
        return math.cos(beta) * x - math.sin(beta) * self.velocity(x, t, prediction)

    def step(self, x: torch.Tensor, t_from: float, t_to: float, prediction: Prediction) -> torch.Tensor:
        """``x_j = x_i + (β_i − β_j)·(sin β_i·x̂₀ − cos β_i·ε̂)`` (the Euler step in β, docs/method.md §8)."""
        beta_from = self.ode_time(t_from)
        delta = beta_from - self.ode_time(t_to)
        return x + delta * (math.sin(beta_from) * prediction.x0 - math.cos(beta_from) * prediction.noise)

    def renoise(self, x: torch.Tensor, t_from: float, t_to: float, z: torch.Tensor) -> torch.Tensor:
        """``α·x + sqrt(1 − α²)·σ·z``, ``α = cos β(t_to) / cos β(t_from)``."""
        alpha = math.cos(self.ode_time(t_to)) / math.cos(self.ode_time(t_from))
        return alpha * x + math.sqrt(max(1.0 - alpha**2, 0.0)) * self.noise_std * z

    def _cos_sin(self, t: torch.Tensor | float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # On t's own device: no host round trip (and no CUDA sync) per training step.
        beta = torch.as_tensor(t, device=like.device).to(torch.float64) * (math.pi / 2 / self.num_timesteps)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return torch.cos(beta).reshape(shape).to(like.dtype), torch.sin(beta).reshape(shape).to(like.dtype)
