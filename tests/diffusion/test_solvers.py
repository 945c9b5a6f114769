"""Every sampler of each process against exact denoisers: it returns the one volume of a one-volume
data set, draws a two-Gaussian data set correctly, and the deterministic ones converge to a
1,000-step solution at the order they claim."""

import math
from functools import cache

import numpy as np
import pytest
import torch

from prdit.diffusion import FlowMatching, IaNDiffusion, SamplerSettings, sample
from prdit.diffusion.oracles import OneVolume, TwoGaussians
from prdit.diffusion.samplers import time_grid
from prdit.errors import ConfigError

PROCESSES = {"ian": IaNDiffusion(), "flow": FlowMatching()}
ALL = [(kind, sampler) for kind, process in PROCESSES.items() for sampler in process.samplers]
SIGNS = torch.tensor([1, -1, 1, 1, -1, 1, 1, 1.0]).reshape(1, 1, 2, 2, 2)
MEANS = torch.cat([0.6 * SIGNS, -0.6 * SIGNS])  # two modes in 8 dimensions, [2, 1, 2, 2, 2]
VARIANCE = 0.05


def volume() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool3d(torch.randn(1, 1, 8, 8, 8, generator=gen), 3, 1, 1)
    return (x / x.abs().max()).clamp(-1, 1)


@pytest.mark.parametrize("kind,sampler", ALL)
@pytest.mark.parametrize("steps,schedule", [(1, "uniform"), (2, "uniform"), (3, "uniform"), (7, "uniform"),
                                            (7, "lambda")])
def test_every_sampler_returns_the_volume_of_a_one_volume_data_set(kind, sampler, steps, schedule):
    process, x0 = PROCESSES[kind], volume()
    oracle = OneVolume(process, x0)
    settings = SamplerSettings(sampler, steps, schedule).resolved(process)
    result = sample(oracle, process, (2, 1, 8, 8, 8), settings, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(result.x0, x0.expand(2, -1, -1, -1, -1), atol=1e-5, rtol=0)
    assert len(oracle.times) == settings.network_calls()
    if sampler.startswith("dpm++"):  # exact on this path at any step count, and the last step returns x̂₀
        assert torch.equal(result.state, result.x0)


@pytest.mark.parametrize("kind,sampler", ALL)
def test_every_sampler_draws_a_two_gaussian_data_set(kind, sampler):
    process = PROCESSES[kind]
    oracle = TwoGaussians(process, MEANS, VARIANCE)
    x = sample(oracle, process, (1000, 1, 2, 2, 2), SamplerSettings(sampler, 50),
               generator=torch.Generator().manual_seed(2)).x0.flatten(1)
    mode = (x @ SIGNS.flatten() > 0).float()
    assert mode.mean().item() == pytest.approx(0.5, abs=0.06)  # both modes, equally often
    nearest = torch.where(mode[:, None] > 0, MEANS[0].flatten(), MEANS[1].flatten())
    assert (x - nearest).mean().abs().item() < 0.02
    assert (x - nearest).var().item() == pytest.approx(VARIANCE, rel=0.15)


# (process, sampler, schedule, the order its error against a fine solution shrinks with, tolerance).
# DPM-Solver++ multistep on IaN's own grid (uniform in β) stays below order 2: near pure noise
# x̂₀ − E[x₀] grows like e^λ, and the λ-steps there (log 2, log 3/2, ...) do not shrink with the step
# count, so a polynomial in λ fits x̂₀ poorly exactly where few earlier x̂₀ exist; measured 1.5 (2M)
# and 1.65 (3M). The lambda schedule makes the λ-steps shrink and gives order 2. 3M does not reach 3:
# its first two steps, with no or one earlier x̂₀, and its last, which returns x̂₀, are of lower order.
ORDERS = [("ian", "euler", "uniform", 1.0, 0.35), ("ian", "dpm++1", "uniform", 1.0, 0.35),
          ("ian", "heun", "uniform", 2.0, 0.35), ("ian", "dpm++2m", "uniform", 1.5, 0.2),
          ("ian", "dpm++3m", "uniform", 1.65, 0.2), ("ian", "dpm++2m", "lambda", 2.0, 0.25),
          ("ian", "dpm++3m", "lambda", 2.0, 0.25),
          ("flow", "euler", "uniform", 1.0, 0.35), ("flow", "heun", "uniform", 2.0, 0.35),
          ("flow", "dpm++2m", "uniform", 2.0, 0.35), ("flow", "dpm++3m", "uniform", 2.0, 0.35),
          ("flow", "dpm++2m", "lambda", 2.0, 0.25)]
STEPS = [5, 8, 10, 20, 25, 40]


@cache
def reference_solution(kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed noise ``[64, 1, 2, 2, 2]`` and where 1,000 Heun steps take it under the two-Gaussian oracle."""
    process = PROCESSES[kind]
    noise = process.sample_noise((64, 1, 2, 2, 2), generator=torch.Generator().manual_seed(0))
    oracle = TwoGaussians(process, MEANS, VARIANCE)
    return noise, sample(oracle, process, noise.shape, SamplerSettings("heun", 1000), noise=noise).x0


def errors_against_reference(kind: str, sampler: str, schedule: str) -> list[float]:
    """Mean absolute error of the two-Gaussian samples at each of ``STEPS`` against the reference."""
    process = PROCESSES[kind]
    oracle = TwoGaussians(process, MEANS, VARIANCE)
    noise, reference = reference_solution(kind)
    return [(sample(oracle, process, noise.shape, SamplerSettings(sampler, n, schedule), noise=noise).x0 - reference)
            .abs().mean().item() for n in STEPS]


@pytest.mark.parametrize("kind,sampler,schedule,order,tolerance", ORDERS)
def test_deterministic_solvers_converge_at_their_order(kind, sampler, schedule, order, tolerance):
    errors = errors_against_reference(kind, sampler, schedule)
    slope = -np.polyfit(np.log(STEPS), np.log(errors), 1)[0]
    assert slope == pytest.approx(order, abs=tolerance), f"errors {errors}"
    assert errors[-1] < 0.02 and math.isfinite(errors[0])


@pytest.mark.parametrize("sampler", ["dpm++2m", "dpm++3m"])
def test_the_lambda_schedule_lowers_the_multistep_error_on_ian_from_10_steps(sampler):
    uniform, spaced = errors_against_reference("ian", sampler, "uniform"), errors_against_reference("ian", sampler,
                                                                                                     "lambda")
    assert all(b < 0.8 * a for n, a, b in zip(STEPS, uniform, spaced) if n >= 10), (uniform, spaced)


@pytest.mark.parametrize("kind", PROCESSES)
def test_the_lambda_schedule_keeps_the_end_steps_and_spaces_the_rest_uniformly_in_lambda(kind):
    process = PROCESSES[kind]
    grid, spaced = process.grid(12), time_grid(process, 12, "lambda")
    assert spaced[:2] == pytest.approx(grid[:2]) and spaced[-2:] == pytest.approx(grid[-2:])
    gaps = np.diff([process.log_snr(t) for t in spaced[1:-1]])
    assert gaps == pytest.approx(np.full(10, gaps[0]), rel=1e-9) and gaps[0] > 0
    for t in (grid[3], grid[9]):
        assert process.time_at_log_snr(process.log_snr(t)) == pytest.approx(t, rel=1e-9)
    assert time_grid(process, 12, "uniform") == grid
    with pytest.raises(ConfigError, match="unknown schedule"):
        SamplerSettings("euler", 10, "karras").resolved(process)


def test_the_first_multistep_update_leaves_pure_noise_as_the_spec_says():
    process = IaNDiffusion()
    x0 = volume()
    seen = []
    result = sample(OneVolume(process, x0), process, (1, 1, 8, 8, 8), SamplerSettings("dpm++2m", 4),
                    generator=torch.Generator().manual_seed(3), hooks=[lambda step: seen.append(step.x.clone())])
    s1, a1 = math.sin(math.pi / 2 * 0.75), math.cos(math.pi / 2 * 0.75)
    torch.testing.assert_close(seen[1], s1 * seen[0] + a1 * x0, atol=1e-6, rtol=0)  # s(T) = 1, x̂₀ exact
    torch.testing.assert_close(result.x0, x0, atol=1e-6, rtol=0)


class DisagreeingHeads(torch.nn.Module):
    """The two-Gaussian oracle on IaN with its x̂₀ head shifted by ``offset``: the two heads disagree, as
    a trained network's do, and the sampling ODE is the one of the velocity ``−sin β·x̂₀ + cos β·ε̂``."""

    def __init__(self, process: IaNDiffusion, offset: float) -> None:
        super().__init__()
        self.oracle, self.offset = TwoGaussians(process, MEANS, VARIANCE), offset

    def forward(self, x: torch.Tensor, model_time: torch.Tensor) -> torch.Tensor:
        noise, x0 = self.oracle(x, model_time).chunk(2, dim=1)
        return torch.cat([noise, x0 + self.offset], dim=1)


def half_time_state_and_result(model, process, sampler: str, steps: int,
                               noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sampler's state at t = T/2 (grid index ``steps/2`` of the uniform grid) and its result."""
    seen = []
    result = sample(model, process, noise.shape, SamplerSettings(sampler, steps), noise=noise,
                    hooks=[lambda step: seen.append(step.x.clone()) if step.index == steps // 2 else None])
    return seen[0], result.x0


@pytest.mark.parametrize("sampler", ["dpm++1", "dpm++2m", "dpm++3m"])
def test_dpm_solver_integrates_the_ode_of_euler_and_heun_when_the_heads_disagree(sampler):
    process = IaNDiffusion()
    model = DisagreeingHeads(process, 0.2)
    noise = process.sample_noise((64, 1, 2, 2, 2), generator=torch.Generator().manual_seed(0))
    reference = half_time_state_and_result(model, process, "heun", 1000, noise)
    errors = [[(a - b).abs().mean().item() for a, b in zip(half_time_state_and_result(model, process, sampler, n,
                                                                                        noise), reference)]
              for n in (20, 40, 80)]
    # With the x̂₀ head alone as its data prediction the state's error stalls near 0.033 (the solution of
    # another ODE) and the result's grows with the steps (0.37, 0.51, 0.65).
    (state_20, result_20), (state_40, result_40), (state_80, result_80) = errors
    assert state_80 < 0.6 * state_40 < 0.36 * state_20 and state_80 < 0.01, errors
    assert result_80 < result_40 < result_20 and result_80 < 0.005, errors
