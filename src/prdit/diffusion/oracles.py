"""Exact denoisers of known data sets for any process, to check samplers against: one volume, and
a mixture of two Gaussians (whose posterior mean is closed-form). Each is called like a network,
``(x [B, C, D, H, W], network time [B])``, and answers in the process's own output format."""

from __future__ import annotations

import torch

from prdit.diffusion.process import Prediction, Process


def network_output(process: Process, x: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """What a perfect network outputs on ``x`` at times ``t`` ``[B]`` if its clean estimate is ``x0``."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    a = process.signal(t).reshape(shape).to(x.dtype)
    s = process.noise_scale(t).reshape(shape).to(x.dtype)
    return process.network_output(Prediction(x0=x0, noise=(x - a * x0) / s))


class OneVolume(torch.nn.Module):
    """The data set is the one volume ``x0`` ``[1, C, D, H, W]``."""

    def __init__(self, process: Process, x0: torch.Tensor) -> None:
        super().__init__()
        self.process, self.x0, self.times = process, x0, []

    def forward(self, x: torch.Tensor, model_time: torch.Tensor) -> torch.Tensor:
        t = self.process.process_time(model_time)
        self.times.append(float(t[0]))
        return network_output(self.process, x, t, self.x0.expand_as(x))


class TwoGaussians(torch.nn.Module):
    """x₀ is ``means[0]`` or ``means[1]`` (equally likely) plus N(0, ``variance``·I) noise, per volume."""

    def __init__(self, process: Process, means: torch.Tensor, variance: float) -> None:
        super().__init__()
        self.process, self.means, self.variance = process, means, variance

    def posterior_mean(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``E[x₀ | x_t = x]`` for ``x`` ``[B, ...]`` at times ``t`` ``[B]``, in float64."""
        x = x.double().flatten(1)
        a = self.process.signal(t.double().cpu()).reshape(-1, 1)
        n = self.process.sigma * self.process.noise_scale(t.double().cpu()).reshape(-1, 1)
        total = a**2 * self.variance + n**2  # variance of x_t within one component
        means = self.means.double().flatten(1)  # [2, d]
        distance = ((x[:, None] - a[:, None] * means[None]) ** 2).sum(-1)  # [B, 2]
        weights = torch.softmax(-distance / (2 * total), dim=1)
        within = means[None] + (a * self.variance / total)[:, None] * (x[:, None] - a[:, None] * means[None])
        return (weights[..., None] * within).sum(1)

    def forward(self, x: torch.Tensor, model_time: torch.Tensor) -> torch.Tensor:
        t = self.process.process_time(model_time)
        x0 = self.posterior_mean(x, t).reshape(x.shape).to(x.dtype)
        return network_output(self.process, x, t, x0)
