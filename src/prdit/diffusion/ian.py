"""IaN ("image and noise") diffusion (spec §8, §12.1): a quarter-circle path between the clean
volume and Gaussian noise, and the two-term loss. Kept apart from the network; the trainer and
the samplers use this object."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch

from prdit.errors import ConfigError


@dataclass(frozen=True)
class IaNDiffusion:
    """``x_t = cos β(t)·x₀ + sin β(t)·ε``, ``β(t) = (π/2)·t/T``, ``ε ~ N(0, σ²I)``; t ∈ [0, T]."""

    num_timesteps: int = 1000
    noise_std: float = 0.5

    def __post_init__(self) -> None:
        if self.num_timesteps < 1:
            raise ConfigError(f"num_timesteps must be >= 1, got {self.num_timesteps}")
        if not self.noise_std > 0:
            raise ConfigError(f"noise_std must be > 0, got {self.noise_std}")

    def beta(self, t: torch.Tensor | float) -> torch.Tensor:
        """Angle of timestep ``t`` (tensor or number): ``(π/2)·t/T``."""
        return torch.as_tensor(t, dtype=torch.float64) * (math.pi / 2 / self.num_timesteps)

    def sample_timesteps(self, batch: int, device: torch.device | str = "cpu",
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """Training timesteps, integers uniform over ``0..T`` inclusive (so ``t = T`` is learnt)."""
        return torch.randint(0, self.num_timesteps + 1, (batch,), generator=generator,
                             device=generator.device if generator is not None else device).to(device)

    def sample_noise(self, shape: tuple[int, ...] | torch.Size, device: torch.device | str = "cpu",
                     generator: torch.Generator | Sequence[torch.Generator] | None = None,
                     dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """``ε ~ N(0, σ²I)``. A sequence of generators, one per volume, draws row b of ``[B, ...]``
        from generator b alone, so a volume's noise does not depend on the batch it is in."""
        if generator is not None and not isinstance(generator, torch.Generator):
            if len(generator) != shape[0]:
                raise ConfigError(f"noise for {shape[0]} volumes requested with {len(generator)} generators")
            return torch.cat([self.sample_noise((1, *shape[1:]), device, g, dtype) for g in generator])
        gen_device = generator.device if generator is not None else device
        return (torch.randn(shape, generator=generator, device=gen_device, dtype=dtype) * self.noise_std).to(device)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Forward process: ``[B, C, D, H, W]`` clean volumes at per-sample timesteps ``t`` ``[B]``."""
        cos, sin = self._cos_sin(t, x0)
        return cos * x0 + sin * noise

    def split_prediction(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Model output -> (ε̂, x̂₀). ``2C`` channels are ``[ε̂, x̂₀]``; ``C`` channels are x̂₀ alone,
        and ε̂ is then implied by ``x_t`` (undefined at t = 0, where it is not needed)."""
        c = x_t.shape[1]
        if output.shape[1] == 2 * c:
            return output[:, :c], output[:, c:]
        if output.shape[1] == c:
            cos, sin = self._cos_sin(t, x_t)
            return (x_t - cos * output) / sin.clamp_min(1e-4), output
        raise ConfigError(f"model returns {output.shape[1]} channels for {c}-channel volumes; expected {2 * c} or {c}")

    def training_losses(self, model: torch.nn.Module, x0: torch.Tensor, t: torch.Tensor | None = None,
                        noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``loss = mean((x̂₀−x₀)²) + mean((ε̂−ε)²)``; returns ``loss``, ``loss_x0``, ``loss_eps`` (scalars)."""
        if t is None:
            t = self.sample_timesteps(x0.shape[0], x0.device, generator)
        if noise is None:
            noise = self.sample_noise(x0.shape, x0.device, generator, x0.dtype)
        x_t = self.q_sample(x0, t, noise)
        output = model(x_t, t).float()
        if output.shape[1] == x0.shape[1]:
            loss_x0 = ((output - x0) ** 2).mean()
            loss_eps = torch.zeros_like(loss_x0)
        else:
            eps_hat, x0_hat = self.split_prediction(output, x_t, t)
            loss_x0 = ((x0_hat - x0) ** 2).mean()
            loss_eps = ((eps_hat - noise) ** 2).mean()
        return {"loss": loss_x0 + loss_eps, "loss_x0": loss_x0, "loss_eps": loss_eps}

    def timestep_grid(self, steps: int) -> list[float]:
        """Sampling grid ``t_i = T·(1 − i/steps)``, i = 0..steps: from exactly T down to 0."""
        if steps < 1:
            raise ConfigError(f"steps must be >= 1, got {steps}")
        return [self.num_timesteps * (steps - i) / steps for i in range(steps + 1)]

    def to_dict(self) -> dict:
        """JSON-ready settings."""
        return asdict(self)

    def _cos_sin(self, t: torch.Tensor | float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # On t's own device: no host round trip (and no CUDA sync) per training step.
        beta = torch.as_tensor(t, device=like.device).to(torch.float64) * (math.pi / 2 / self.num_timesteps)
        shape = (-1,) + (1,) * (like.ndim - 1)
        return torch.cos(beta).reshape(shape).to(like.dtype), torch.sin(beta).reshape(shape).to(like.dtype)
