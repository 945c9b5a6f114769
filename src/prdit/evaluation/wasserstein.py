"""Wasserstein-1 distance between real and generated volumes, estimated by a WGAN-GP critic.

By Kantorovich–Rubinstein duality, W1(P, Q) = sup over 1-Lipschitz f of E_P[f] - E_Q[f].
A 3D convolutional critic is trained to maximise that difference on a training part of both
sets, with the gradient penalty of Gulrajani et al. (2017) (weight 10, on random
interpolates between real and generated volumes) keeping it close to 1-Lipschitz. The
estimate is E[f(real)] - E[f(generated)] on the held-out part: on the training part the
critic can separate even samples of one distribution by memorising them. The critic has no
normalisation layers, as the gradient penalty requires. Runs are deterministic for a given
seed on a given device (CPU is bit-exact; CUDA convolution kernels may differ in the last
bits). The report gives the held-out estimate with its standard error, and the estimate on
the training part, whose excess over the held-out one shows how much the critic memorised.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from prdit.errors import DataError
from prdit.evaluation.config import CriticConfig
from prdit.evaluation.volumes import VolumeSet

# The critic halves the volume until no side exceeds this, then averages over space.
SMALLEST_SIDE = 4


class Critic(nn.Module):
    """Strided 3D convolutions with LeakyReLU, global average pooling and a linear score."""

    def __init__(self, shape: tuple[int, int, int], base_channels: int = 16, max_channels: int = 128) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels_in, channels, side = 1, base_channels, min(shape)
        while True:
            layers += [nn.Conv3d(channels_in, channels, kernel_size=4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            side //= 2
            channels_in, channels = channels, min(2 * channels, max_channels)
            if side <= SMALLEST_SIDE:
                break
        self.body = nn.Sequential(*layers)
        self.score = nn.Linear(channels_in, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, 1, D, H, W]`` -> scores ``[B]``."""
        return self.score(self.body(x).mean(dim=(2, 3, 4)))[:, 0]


def split(n: int, train_fraction: float, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A seeded shuffle of ``range(n)`` cut into training and held-out indices (both non-empty)."""
    if n < 2:
        raise DataError(f"the Wasserstein estimate needs at least 2 volumes per set (train and held out), got {n}")
    order = torch.randperm(n, generator=generator).numpy()
    n_train = min(max(int(round(train_fraction * n)), 1), n - 1)
    return np.sort(order[:n_train]), np.sort(order[n_train:])


def gradient_penalty(critic: Critic, real: torch.Tensor, fake: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Mean of (|grad f(x_hat)| - 1)^2 over interpolates x_hat = alpha real + (1 - alpha) fake."""
    mixed = (alpha * real + (1.0 - alpha) * fake).requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1.0) ** 2).mean()


def wasserstein_estimate(real: VolumeSet, fake: VolumeSet, config: CriticConfig = CriticConfig(),
                         device: str | torch.device = "cpu", progress: bool = True) -> dict:
    """Train a critic on the training parts, report E[f(real)] - E[f(fake)] on the held-out parts."""
    if real.shape != fake.shape:
        raise DataError(f"real volumes {real.shape} and generated volumes {fake.shape} differ in size")
    device = torch.device(device)
    generator = torch.Generator().manual_seed(config.seed)
    real_train, real_held = split(len(real), config.train_fraction, generator)
    fake_train, fake_held = split(len(fake), config.train_fraction, generator)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        critic = Critic(real.shape, config.base_channels, config.max_channels).to(device)
    optimizer = torch.optim.Adam(critic.parameters(), lr=config.lr, betas=config.betas)

    critic.train()
    bar = tqdm(range(config.steps), desc="Wasserstein critic", unit="step", disable=not progress)
    for _ in bar:
        pick_real = real_train[torch.randint(len(real_train), (config.batch_size,), generator=generator).numpy()]
        pick_fake = fake_train[torch.randint(len(fake_train), (config.batch_size,), generator=generator).numpy()]
        alpha = torch.rand(config.batch_size, 1, 1, 1, 1, generator=generator).to(device)
        x_real = torch.from_numpy(real.batch(pick_real)).to(device)
        x_fake = torch.from_numpy(fake.batch(pick_fake)).to(device)
        gap = critic(x_real).mean() - critic(x_fake).mean()
        loss = -gap + config.gp_weight * gradient_penalty(critic, x_real, x_fake, alpha)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        bar.set_postfix(gap=f"{gap.item():.3g}", refresh=False)
    bar.close()

    critic.eval()
    real_scores = _scores(critic, real, real_held, device, config.batch_size)
    fake_scores = _scores(critic, fake, fake_held, device, config.batch_size)
    held_out = float(real_scores.mean() - fake_scores.mean())
    train = float(_scores(critic, real, real_train, device, config.batch_size).mean()
                  - _scores(critic, fake, fake_train, device, config.batch_size).mean())
    # Sampling error of the held-out difference of means (0 where a held-out part has one volume).
    variance = sum(s.var(ddof=1) / len(s) for s in (real_scores, fake_scores) if len(s) > 1)
    return {"value": held_out, "standard_error": float(np.sqrt(variance)), "train_value": train,
            "split": {"train_fraction": config.train_fraction,
                      "real": {"train": len(real_train), "held_out": len(real_held)},
                      "fake": {"train": len(fake_train), "held_out": len(fake_held)}},
            "steps": config.steps, "batch_size": config.batch_size, "seed": config.seed, "lr": config.lr,
            "betas": list(config.betas), "gp_weight": config.gp_weight,
            "critic_parameters": sum(p.numel() for p in critic.parameters())}


@torch.no_grad()
def _scores(critic: Critic, volumes: VolumeSet, indices: np.ndarray, device: torch.device,
            batch_size: int) -> np.ndarray:
    scores = [critic(torch.from_numpy(volumes.batch(indices[s:s + batch_size])).to(device)).double().cpu()
              for s in range(0, len(indices), batch_size)]
    return torch.cat(scores).numpy()
