"""Measurement guidance asks the process how far a step's time lies towards noise: its cutoff and
decay follow the noise level, so a process that runs from noise at t = 0 is guided as IaN is."""

import pytest
import torch

from prdit.diffusion import FlowMatching, IaNDiffusion, Prediction
from prdit.diffusion.samplers import SamplerStep
from prdit.inverse.guidance import MeasurementGuidance, guidance_weight, task_settings
from prdit.inverse.operators import Downsample


def moved_by(process, t: float) -> float:
    """How far one guided step at time ``t`` moves the state, relative to the undecayed move."""
    x0 = torch.randn(1, 1, 8, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    settings = task_settings("sr", decay=True)  # cutoff 100 of the reference's 1000 timesteps
    hook = MeasurementGuidance(Downsample(2), torch.zeros(1, 1, 4, 4, 4, dtype=torch.float64), settings, process)
    x = torch.zeros_like(x0)
    guided = hook(SamplerStep(0, 10, t, t, x, Prediction(x0, torch.zeros_like(x0))))
    full = settings.scale * hook.gradient(x0)
    return float((x - guided.x).norm() / full.norm())


@pytest.mark.parametrize("process,time_at", [(IaNDiffusion(), lambda level: 1000 * level),
                                             (FlowMatching(), lambda level: 1 - level)])
def test_guidance_decays_and_stops_by_the_noise_level(process, time_at):
    for level in (1.0, 0.7, 0.3, 0.15):
        assert moved_by(process, time_at(level)) == pytest.approx(guidance_weight(level), abs=1e-9), level
    assert moved_by(process, time_at(0.05)) == 0.0  # below the cutoff (100 of 1000)
