"""Every sampler of each process against exact denoisers: it returns the one volume of a one-volume
data set, draws a two-Gaussian data set correctly, and the deterministic ones converge to a
1,000-step solution at the order they claim."""

import math
from functools import cache

import numpy as np
import pytest
import torch

from prdit.diffusion import FlowMatching, IaNDiffusion, SamplerSettings, sample
from prdit.diffusion.oracles import OneVolume, TwoGaussians, network_output
from prdit.diffusion.samplers import OUTPUTS, dpm_solver_step, time_grid
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
    if sampler.startswith("dpm++"):  # exact on this path at any step count: the state ends at x̂₀ too
        torch.testing.assert_close(result.state, result.x0, atol=1e-5, rtol=0)


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
# and 1.6 (3M). The lambda schedule makes the λ-steps shrink and gives order 2. 3M does not reach 3 on
# the result: its first two steps, with no or one earlier x̂₀, and its last, which returns x̂₀, are of lower
# order (mid-path it does: test_multistep_solvers_reach_their_order_on_a_path_with_a_closed_form_solution);
# on flow matching its last steps, where the λ-steps grow again, leave it at 1.75 (2M: 2.0).
ORDERS = [("ian", "euler", "uniform", 1.0, 0.35), ("ian", "dpm++1", "uniform", 1.0, 0.35),
          ("ian", "heun", "uniform", 2.0, 0.35), ("ian", "dpm++2m", "uniform", 1.5, 0.2),
          ("ian", "dpm++3m", "uniform", 1.6, 0.2), ("ian", "dpm++2m", "lambda", 2.0, 0.25),
          ("ian", "dpm++3m", "lambda", 2.0, 0.25),
          ("flow", "euler", "uniform", 1.0, 0.35), ("flow", "heun", "uniform", 2.0, 0.35),
          ("flow", "dpm++2m", "uniform", 2.0, 0.35), ("flow", "dpm++3m", "uniform", 1.75, 0.25),
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
    # measured: 2M 0.56-0.73 of the uniform grid's error, 3M 0.45-0.85
    assert all(b < 0.9 * a for n, a, b in zip(STEPS, uniform, spaced) if n >= 10), (uniform, spaced)


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


@pytest.mark.parametrize("kind", PROCESSES)
def test_one_third_order_multistep_update_is_exact_when_the_data_prediction_is_quadratic_in_lambda(kind):
    process = PROCESSES[kind]
    times = [0.5, 0.55, 0.6, 0.66] if kind == "flow" else [500.0, 450.0, 400.0, 340.0]  # t_2, t_1, t_i, t_j
    lam = [process.log_snr(t) for t in times]

    def data(lam: float) -> torch.Tensor:  # D(λ) = 1 + 2λ + 3λ²
        return torch.tensor([1 + 2 * lam + 3 * lam**2], dtype=torch.float64)

    def integral(low: float, high: float) -> float:  # ∫ e^{μ−high}·D(μ) dμ over [low, high]
        antiderivative = lambda m: math.exp(m - high) * (1 + 2 * (m - 1) + 3 * (m * m - 2 * m + 2))  # noqa: E731
        return antiderivative(high) - antiderivative(low)

    x = torch.tensor([0.7], dtype=torch.float64)
    s_ratio = float(process.noise_scale(times[3])) / float(process.noise_scale(times[2]))
    exact = s_ratio * 0.7 + float(process.signal(times[3])) * integral(lam[2], lam[3])
    history = [(lam[2], data(lam[2])), (lam[1], data(lam[1])), (lam[0], data(lam[0]))]
    assert dpm_solver_step(process, x, times[2], times[3], history).item() == pytest.approx(exact, abs=1e-12)
    assert abs(dpm_solver_step(process, x, times[2], times[3], history[:2]).item() - exact) > 1e-3


class SmoothDataPrediction(torch.nn.Module):
    """A denoiser whose data prediction is ``D(λ) = target·ρ³``, ``ρ = e^{2λ}/(1 + e^{2λ})``, whatever x is: the
    sampling ODE then has a closed-form solution (:meth:`solution`), and D is flat at both ends."""

    def __init__(self, process, target: torch.Tensor) -> None:
        super().__init__()
        self.process, self.target = process, target

    def forward(self, x: torch.Tensor, model_time: torch.Tensor) -> torch.Tensor:
        t = self.process.process_time(model_time)
        a = self.process.signal(t).reshape(-1, 1, 1, 1, 1)
        n = self.process.sigma * self.process.noise_scale(t).reshape(-1, 1, 1, 1, 1)
        return network_output(self.process, x, t, (self.target * (a**2 / (a**2 + n**2)) ** 3).to(x.dtype))

    def solution(self, noise: torch.Tensor, t: float) -> torch.Tensor:
        """Where the ODE takes ``noise`` (at pure noise) by time ``t``:
        ``s·noise + σs·∫₀^U ρ³ du`` with ``U = e^λ = a/(σs)``, ``ρ = u²/(1 + u²)``."""
        a, s = float(self.process.signal(t)), float(self.process.noise_scale(t))
        n = self.process.sigma * s
        q = n**2 / (n**2 + a**2)  # 1/(1 + U²)
        return s * noise + self.target * (a - 15 / 8 * n * math.atan2(a, n) + 9 / 8 * a * q - a * q**2 / 4)


# The error at mid-path (t = T/2 or 0.5, grid index steps/2), away from the last step (which returns x̂₀).
MID_PATH_STEPS = [16, 24, 32, 48, 64]


@pytest.mark.parametrize("kind", PROCESSES)
@pytest.mark.parametrize("sampler,order", [("dpm++3m", 3.0), ("dpm++2m", 2.0), ("heun", 2.0)])
def test_multistep_solvers_reach_their_order_on_a_path_with_a_closed_form_solution(kind, sampler, order):
    process = PROCESSES[kind]
    oracle = SmoothDataPrediction(process, torch.linspace(-1, 1, 8).reshape(1, 1, 2, 2, 2))
    noise = process.sample_noise((4, 1, 2, 2, 2), generator=torch.Generator().manual_seed(0))
    errors = []
    for steps in MID_PATH_STEPS:
        seen = []
        sample(oracle, process, noise.shape, SamplerSettings(sampler, steps), noise=noise,
               hooks=[lambda step: seen.append((step.t, step.x.clone())) if step.index == steps // 2 else None])
        t, x = seen[0]
        errors.append((x - oracle.solution(noise, t)).abs().max().item())
    slope = -np.polyfit(np.log(MID_PATH_STEPS), np.log(errors), 1)[0]
    # measured: 3M 3.0 (IaN) and 2.9 (flow); with the reference code's h²·D″/2 for h²·D″ 2.3, with d2's sign
    # flipped 2.0-2.1, 2M 2.0 and 1.85
    assert slope == pytest.approx(order, abs=0.3), f"errors {errors}"


@pytest.mark.parametrize("sampler", ["dpm++1", "dpm++2m", "dpm++3m"])
def test_dpm_solver_final_state_converges_to_heuns_when_the_heads_disagree(sampler):
    """The state a multistep solver ends in is its solution of the ODE at t = 0 (the data prediction of
    its last step), converging to Heun's as steps grow; its last x̂₀ is the x̂₀ head."""
    process = IaNDiffusion()
    model = DisagreeingHeads(process, 0.2)
    noise = process.sample_noise((64, 1, 2, 2, 2), generator=torch.Generator().manual_seed(0))
    reference = sample(model, process, noise.shape, SamplerSettings("heun", 1000), noise=noise).state
    errors = []
    for steps in (20, 40, 80):
        result = sample(model, process, noise.shape, SamplerSettings(sampler, steps), noise=noise)
        errors.append((result.state - reference).abs().mean().item())
        assert (result.x0 - result.state).abs().mean().item() > 0.1  # the x̂₀ head, 0.2 off the ODE's data end
    # Ending in the x̂₀ head instead, the error stays near the head's offset (0.2) at every step count.
    assert errors[2] < errors[1] < errors[0] and errors[2] < 0.01, errors


@pytest.mark.parametrize("sampler", ["euler", "heun", "dpm++1", "dpm++2m", "dpm++3m"])
def test_the_volume_a_deterministic_sampler_returns_converges_with_its_steps(sampler):
    """What a user gets from an ODE sampler with its default settings is its solution of the ODE: its distance to
    a many-step solution shrinks as steps grow, also where a trained network's two heads disagree."""
    process = IaNDiffusion()
    model = DisagreeingHeads(process, 0.2)
    noise = process.sample_noise((64, 1, 2, 2, 2), generator=torch.Generator().manual_seed(0))
    reference = sample(model, process, noise.shape, SamplerSettings("heun", 1000, output="state"), noise=noise).state
    errors = []
    for steps in (10, 20, 40):
        settings = SamplerSettings(sampler, steps).resolved(process)
        result = sample(model, process, noise.shape, settings, noise=noise)
        errors.append((result.volumes - reference).abs().mean().item())
    # Returning the last x̂₀, every error stays near the x̂₀ head's offset (0.2), at any step count.
    assert errors[2] < errors[1] < errors[0] and errors[2] < 0.02, errors


@pytest.mark.parametrize("output", ["state", "x0"])
def test_the_output_setting_picks_the_returned_volume(output):
    process = IaNDiffusion()
    model = DisagreeingHeads(process, 0.2)
    noise = process.sample_noise((4, 1, 2, 2, 2), generator=torch.Generator().manual_seed(0))
    for sampler in process.samplers:
        settings = SamplerSettings(sampler, 5, output=output).resolved(process)
        result = sample(model, process, noise.shape, settings, noise=noise,
                        generator=torch.Generator().manual_seed(1))
        assert torch.equal(result.volumes, result.state if output == "state" else result.x0)
    with pytest.raises(ConfigError, match="unknown output 'last'"):
        SamplerSettings("euler", 5, output="last").resolved(process)


def test_every_sampler_of_every_process_has_a_default_output():
    for process in PROCESSES.values():
        for sampler in process.samplers:
            assert SamplerSettings(sampler, 4).resolved(process).output in OUTPUTS
