"""Sampling: one loop over a process's time grid, the samplers as small step rules, and a
per-step hook for guidance and previews.

:func:`sample` calls the network once per grid point, runs the hooks and hands the state to the
sampler's :class:`StepRule`, which moves it to the next grid point. Each rule is a small class
holding what it carries between steps (DPM-Solver++ its earlier data predictions, the
predictor–corrector its noise generator); ``STEP_RULES`` names them, and a fresh rule is built
from the :class:`SamplerSettings` for each call of :func:`sample`.

* ``euler``: one deterministic Euler step of the sampling ODE per network call.
* ``pc`` (predictor–corrector, "hot"; IaN): an Euler jump of ``jump`` grid steps (2 unless
  set), then re-noising back to the next grid point with noise scaled by ``corrector_noise``
  (1 unless set); plain Euler where the jump would pass the data end (decided by index).
* ``heun``: Euler, then the average of the velocities at both ends (two calls a step; the last
  step into the data end stays Euler).
* ``dpm++1``, ``dpm++2m``, ``dpm++3m``: DPM-Solver++ in data prediction (docs/method.md §16), an
  exponential integrator in ``λ = log(a/(σ·s))`` that reuses the data prediction of up to two
  earlier steps (first order is DDIM). The data prediction D is the process's
  (:meth:`Process.data_prediction`): the clean volume the velocity of Euler and Heun points to
  (on IaN ``cos β·x − sin β·v̂``, not the x̂₀ head alone, which a trained network's ε̂ head
  contradicts), so every deterministic sampler integrates one ODE. The first step leaves pure
  noise (a = 0, λ = −∞), where no earlier D exists: ``x = (s_j/s_0)·x + a_j·D``; the second step
  is first order, the third at most second; the last step, into s = 0 (λ = +∞), ends the state
  at D (the ODE's solution at t = 0).
* ``consistency`` (consistency models, docs/method.md §18): the model's clean-volume prediction
  re-noised to the next grid point with fresh noise; at the data end the prediction itself.

The grid is the process's own (uniform in its time: β for IaN, t for flow matching) or, with the
``lambda`` schedule, keeps its two end steps and spaces the points between uniformly in λ, which
puts more steps near both ends: on the two-Gaussian oracle it lowers the error of 2M/3M on IaN at
10–40 steps (tests/diffusion/test_solvers.py).

Every sampler starts from pure noise at the grid's first point and ends in a final state and a last
x̂₀; which of them is the generated volume is the settings' ``output`` (``state``: the final state, for
the ODE samplers their solution of the sampling ODE at t = 0; ``x0``: the network's last x̂₀, taken one
grid step before the data end, which moves with the step count). ``DEFAULT_OUTPUT`` holds each sampler's.
Hooks see each step's state and predictions and may return a changed state (guidance, data
consistency); the network is called without gradients, and a hook with ``requires_grad = True``
runs with gradients enabled (it may differentiate, e.g., a measurement loss through x̂₀).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch

from prdit.diffusion.process import Generators, Prediction, Process
from prdit.errors import ConfigError

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

MULTISTEP_ORDER = {"dpm++1": 1, "dpm++2m": 2, "dpm++3m": 3}
SCHEDULES = ("uniform", "lambda")
OUTPUTS = ("state", "x0")
# The volume each sampler returns when no output is given. The ODE samplers return their solution, the final
# state: the last x̂₀ sits one grid step before the data end, so a solver's order never reached the volume
# (docs/method.md §16), and on the PRDiT-XS/6/4 reference model (256 volumes a row, docs/sampling.md "The ODE
# samplers return their solution") the state scored better: DPM-Solver++ 2M@25 KID 81 against 132 and precision
# 0.39 against 0.04, Euler@25 precision 0.34 against 0.11, no metric for the x̂₀ (Heun, DDIM and 3M end alike, not
# measured). The stochastic ones return the last x̂₀, as the reference's predictor–corrector does (§8); a
# consistency model's final state is its last x̂₀. On flow matching both are one tensor for every ODE sampler.
DEFAULT_OUTPUT = {"pc": "x0", "euler": "state", "heun": "state", "dpm++1": "state", "dpm++2m": "state",
                  "dpm++3m": "state", "consistency": "x0"}


@dataclass(frozen=True)
class SamplerSettings:
    """Which sampler, how many grid steps (``None``: the process's defaults) and how they are spaced;
    for ``pc`` also the predictor's jump in grid steps and the scale w of the corrector's noise; and which
    tensor is the generated volume, ``output`` (``state`` or ``x0``; ``None``: the sampler's ``DEFAULT_OUTPUT``).

    :meth:`resolved` is the one place omitted settings are filled in, for plain sampling and for
    guided reconstruction alike (``prdit sample``, ``prdit reconstruct``, ``PRDiTPipeline``)."""

    sampler: str | None = None
    steps: int | None = None
    schedule: str = "uniform"
    jump: int = 2
    corrector_noise: float = 1.0
    output: str | None = None

    def resolved(self, process: Process, guided: bool = False) -> "SamplerSettings":
        """A copy with the process's defaults filled in (its ``sample_steps``, or its ``guided_steps`` for
        guided reconstruction), checked against what the process offers."""
        if guided and not process.supports_guidance:
            raise ConfigError(f"the {process.kind} process has no guided reconstruction; use a model of a process "
                              f"with guided sampling (ian)")
        default_steps = process.guided_steps if guided else process.sample_steps
        settings = replace(self, sampler=self.sampler or process.default_sampler,
                           steps=self.steps if self.steps is not None else default_steps)
        if settings.sampler not in process.samplers:
            raise ConfigError(f"sampler '{settings.sampler}' does not apply to the {process.kind} process; "
                              f"choose one of {', '.join(process.samplers)}")
        settings = replace(settings, output=settings.output or DEFAULT_OUTPUT[settings.sampler])
        if settings.output not in OUTPUTS:
            raise ConfigError(f"unknown output '{settings.output}'; choose one of {', '.join(OUTPUTS)} (the final "
                              f"state, or the network's last x̂₀)")
        if settings.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {settings.steps}")
        if settings.schedule not in SCHEDULES:
            raise ConfigError(f"unknown schedule '{settings.schedule}'; choose one of {', '.join(SCHEDULES)}")
        if settings.schedule == "lambda" and not process.lambda_schedule:
            raise ConfigError(f"the {process.kind} process samples at its own grid, which the lambda schedule would "
                              "replace; use --schedule uniform (the default)")
        if settings.jump < 1:
            raise ConfigError(f"the predictor's jump must be >= 1 grid step, got {settings.jump}")
        if not settings.corrector_noise >= 0:
            raise ConfigError(f"corrector noise scale must be >= 0, got {settings.corrector_noise}")
        return settings

    def network_calls(self) -> int:
        """Network calls per volume."""
        return 2 * self.steps - 1 if self.sampler == "heun" else self.steps


@dataclass
class SamplerStep:
    """The state a hook sees: grid index ``index`` of ``steps``, times ``t`` → ``t_next``, the state
    ``x`` at ``t`` and the network's ``prediction`` there (``[B, C, D, H, W]`` tensors)."""

    index: int
    steps: int
    t: float
    t_next: float
    x: torch.Tensor
    prediction: Prediction


Hook = Callable[[SamplerStep], SamplerStep | None]


@dataclass
class SampleResult:
    """The generated ``volumes`` (the settings' ``output``: one of the two others), the last x̂₀ and the final
    state of the chain, all ``[B, C, D, H, W]``."""

    volumes: torch.Tensor
    x0: torch.Tensor
    state: torch.Tensor


Predictor = Callable[[torch.Tensor, float], Prediction]


class StepRule:
    """One sampler's update of the state from grid point ``i`` to ``i + 1``; a rule lives for one sampling run
    and may keep state between its steps."""

    def __init__(self, process: Process) -> None:
        self.process = process

    def step(self, x: torch.Tensor, i: int, grid: Sequence[float], prediction: Prediction,
             predict: Predictor) -> torch.Tensor:
        """The state ``[B, C, D, H, W]`` at ``grid[i + 1]`` from ``x`` at ``grid[i]`` and the network's
        ``prediction`` there; ``predict(x, t)`` calls the network again where a rule needs it (Heun)."""
        raise NotImplementedError


class Euler(StepRule):
    """One deterministic Euler step of the sampling ODE."""

    def step(self, x: torch.Tensor, i: int, grid: Sequence[float], prediction: Prediction,
             predict: Predictor) -> torch.Tensor:
        """The Euler step from ``grid[i]`` to ``grid[i + 1]``."""
        return self.process.step(x, grid[i], grid[i + 1], prediction)


class PredictorCorrector(StepRule):
    """Predictor: an Euler jump of ``jump`` grid steps; corrector: re-noising back to the next grid point with
    noise scaled by ``corrector_noise``, drawn from ``generator``. Plain Euler where the jump would pass the
    data end."""

    def __init__(self, process: Process, jump: int, corrector_noise: float, device: torch.device | str,
                 generator: Generators) -> None:
        super().__init__(process)
        self.jump, self.corrector_noise, self.device, self.generator = jump, corrector_noise, device, generator

    def step(self, x: torch.Tensor, i: int, grid: Sequence[float], prediction: Prediction,
             predict: Predictor) -> torch.Tensor:
        """The jump and re-noising, or the Euler step near the data end."""
        process = self.process
        if i + self.jump >= len(grid) - 1:
            return process.step(x, grid[i], grid[i + 1], prediction)
        t_jump = grid[i + self.jump]
        jumped = process.step(x, grid[i], t_jump, prediction)
        z = process.sample_noise(x.shape, self.device, self.generator, x.dtype) / process.sigma * self.corrector_noise
        return process.renoise(jumped, t_jump, grid[i + 1], z)


class Heun(StepRule):
    """Euler, then the average of the velocities at both ends (a second network call); the last step, into the
    data end, stays Euler."""

    def step(self, x: torch.Tensor, i: int, grid: Sequence[float], prediction: Prediction,
             predict: Predictor) -> torch.Tensor:
        """The Heun step from ``grid[i]`` to ``grid[i + 1]``."""
        process, t_i, t_j = self.process, grid[i], grid[i + 1]
        ending = process.step(x, t_i, t_j, prediction)
        if i + 2 == len(grid):
            return ending
        slope = process.velocity(x, t_i, prediction)
        end_slope = process.velocity(ending, t_j, predict(ending, t_j))
        return x + (process.ode_time(t_j) - process.ode_time(t_i)) * 0.5 * (slope + end_slope)


class DPMSolverMultistep(StepRule):
    """DPM-Solver++ of ``order`` 1–3 in data prediction, keeping (λ, D) of its earlier steps at finite λ."""

    def __init__(self, process: Process, order: int) -> None:
        super().__init__(process)
        self.order = order
        self.history: list[tuple[float, torch.Tensor]] = []  # newest first

    def step(self, x: torch.Tensor, i: int, grid: Sequence[float], prediction: Prediction,
             predict: Predictor) -> torch.Tensor:
        """The multistep update from ``grid[i]`` to ``grid[i + 1]``."""
        process, t_i, t_j = self.process, grid[i], grid[i + 1]
        data = process.data_prediction(x, t_i, prediction)
        if i + 2 == len(grid):
            # Into λ = +∞ the update is the data prediction itself: the state ends at the ODE's solution at t = 0.
            return data
        if i == 0:  # from λ = −∞ no earlier D exists
            return (float(process.noise_scale(t_j)) / float(process.noise_scale(t_i))) * x \
                + float(process.signal(t_j)) * data
        self.history.insert(0, (process.log_snr(t_i), data))
        del self.history[self.order:]
        return dpm_solver_step(process, x, t_i, t_j, self.history)


class Renoise(StepRule):
    """A consistency model's step: its clean-volume prediction, re-noised to the next grid point with fresh
    noise from ``generator`` (the prediction itself at the data end)."""

    def __init__(self, process: Process, device: torch.device | str, generator: Generators) -> None:
        super().__init__(process)
        self.device, self.generator = device, generator

    def step(self, x: torch.Tensor, i: int, grid: Sequence[float], prediction: Prediction,
             predict: Predictor) -> torch.Tensor:
        """``x₀`` at the data end, else ``q_sample(x₀, grid[i + 1], z)``."""
        if i + 2 == len(grid):
            return prediction.x0
        t = torch.full((x.shape[0],), grid[i + 1], device=x.device)
        noise = self.process.sample_noise(x.shape, self.device, self.generator, x.dtype)
        return self.process.q_sample(prediction.x0, t, noise)


RuleBuilder = Callable[[Process, SamplerSettings, torch.device | str, Generators], StepRule]


def _multistep(order: int) -> RuleBuilder:
    """The builder of DPM-Solver++ of ``order``."""
    return lambda process, settings, device, generator: DPMSolverMultistep(process, order)


STEP_RULES: dict[str, RuleBuilder] = {
    "euler": lambda process, settings, device, generator: Euler(process),
    "pc": lambda process, settings, device, generator: PredictorCorrector(
        process, settings.jump, settings.corrector_noise, device, generator),
    "heun": lambda process, settings, device, generator: Heun(process),
    **{name: _multistep(order) for name, order in MULTISTEP_ORDER.items()},
    "consistency": lambda process, settings, device, generator: Renoise(process, device, generator),
}


def sample(model: Denoiser, process: Process, shape: tuple[int, ...], settings: SamplerSettings,
           device: torch.device | str = "cpu", generator: Generators = None, noise: torch.Tensor | None = None,
           hooks: Sequence[Hook] = ()) -> SampleResult:
    """Generate ``shape`` = ``[B, C, D, H, W]`` volumes in the model range.

    ``settings`` must be resolved against ``process`` (:meth:`SamplerSettings.resolved`); unresolved, the
    volumes are the sampler's ``DEFAULT_OUTPUT``.
    ``generator`` (on any device; or one per volume) makes the run reproducible; ``noise``
    fixes the start (already of the process's noise scale). ``hooks`` run in order at each step.
    """
    if settings.sampler not in process.samplers or settings.steps is None:
        raise ConfigError(f"sampler settings {settings} are not resolved for the {process.kind} process")
    grid = time_grid(process, settings.steps, settings.schedule)

    def predict(x: torch.Tensor, t_value: float) -> Prediction:
        t = torch.full((x.shape[0],), t_value, device=device, dtype=torch.float32)
        with torch.no_grad():
            return process.predict(model(x, process.model_time(t)).float(), x, t)

    x = noise.to(device) if noise is not None else process.start(shape, device, generator)
    rule = STEP_RULES[settings.sampler](process, settings, device, generator)
    x0_hat = x
    for i in range(settings.steps):
        state = SamplerStep(i, settings.steps, grid[i], grid[i + 1], x, predict(x, grid[i]))
        for hook in hooks:
            with torch.set_grad_enabled(getattr(hook, "requires_grad", False)):
                state = hook(state) or state
        x, prediction = state.x.detach(), Prediction(*(p.detach() for p in state.prediction))
        x0_hat = prediction.x0
        with torch.no_grad():
            x = rule.step(x, i, grid, prediction, predict)
    output = settings.output or DEFAULT_OUTPUT[settings.sampler]
    return SampleResult(volumes=x if output == "state" else x0_hat, x0=x0_hat, state=x)


def time_grid(process: Process, steps: int, schedule: str) -> list[float]:
    """``steps + 1`` times from pure noise to data: the process's grid, or (``lambda``) its first and last
    step kept and the points between uniform in λ."""
    grid = process.grid(steps)
    if schedule == "uniform" or steps < 3:
        return grid
    low, high = process.log_snr(grid[1]), process.log_snr(grid[-2])
    inner = [process.time_at_log_snr(low + (high - low) * k / (steps - 2)) for k in range(steps - 1)]
    return [grid[0], *inner, grid[-1]]


def dpm_solver_step(process: Process, x: torch.Tensor, t_i: float, t_j: float,
                    history: Sequence[tuple[float, torch.Tensor]]) -> torch.Tensor:
    """One DPM-Solver++ multistep update of ``x`` ``[B, C, D, H, W]`` from ``t_i`` to ``t_j`` (both at finite λ)
    with ``history`` = (λ, data prediction) at ``t_i`` and at up to two earlier grid points, newest first; its
    order is the number of entries.

    With ``h = λ_j − λ_i`` and D expanded in λ around ``t_i``, the exact solution is
    ``x_j = (s_j/s_i)·x − a_j·φ₁·D + a_j·φ₂·h·D′ − a_j·φ₃·h²·D″`` with ``φ₁ = e^{−h} − 1``,
    ``φ₂ = φ₁/h + 1``, ``φ₃ = φ₂/h − ½`` (``∫₀ʰ e^{u−h}·uᵏ/k! du`` is −φ₁, h·φ₂, −h²·φ₃ for k = 0, 1, 2);
    the earlier data predictions estimate ``h·D′`` and ``h²·D″`` by divided differences.
    """
    lam_j = process.log_snr(t_j)
    (lam_0, m0), earlier = history[0], history[1:]
    h = lam_j - lam_0
    phi_1 = math.expm1(-h)  # e^{−h} − 1
    x = (float(process.noise_scale(t_j)) / float(process.noise_scale(t_i))) * x
    a_j = float(process.signal(t_j))
    if not earlier:
        return x - a_j * phi_1 * m0
    lam_1, m1 = earlier[0]
    r0 = (lam_0 - lam_1) / h
    d1_0 = (m0 - m1) / r0  # h·D′ half a step back
    if len(earlier) == 1:  # 2M: φ₂ ≈ −φ₁/2 (DPM-Solver++(2M))
        return x - a_j * phi_1 * (m0 + 0.5 * d1_0)
    lam_2, m2 = earlier[1]
    r1 = (lam_1 - lam_2) / h
    d1_1 = (m1 - m2) / r1
    d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)  # h·D′ at t_i
    # (d1_0 − d1_1)/(r0 + r1) is h²·D″/2: the two first differences sit (r0 + r1)·h/2 apart.
    d2 = 2.0 * (d1_0 - d1_1) / (r0 + r1)  # h²·D″
    phi_2 = phi_1 / h + 1.0
    phi_3 = phi_2 / h - 0.5
    return x - a_j * phi_1 * m0 + a_j * phi_2 * d1 - a_j * phi_3 * d2


def progress_hook(callback: Callable[[int, int], None]) -> Hook:
    """A hook that reports ``callback(done, steps)`` at each step."""

    def report(step: SamplerStep) -> None:
        callback(step.index + 1, step.steps)

    return report
