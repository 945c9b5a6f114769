"""A third process, registered as any new one would be: the oracles, samplers, defaults and guidance
ask it what they need (output format, time units, noise level), never its name."""

from dataclasses import dataclass

import pytest
import torch

from prdit.diffusion import PROCESSES, IaNDiffusion, SamplerSettings, create_process, process_from_dict, sample
from prdit.diffusion.oracles import OneVolume, TwoGaussians
from prdit.errors import ConfigError


@dataclass(frozen=True)
class HalfTimeIaN(IaNDiffusion):
    """IaN under another name whose network sees half the timestep."""

    kind = "half-time-ian"

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """Half the timestep."""
        return t / 2

    def process_time(self, model_time: torch.Tensor) -> torch.Tensor:
        """Twice the network's time."""
        return model_time * 2


@pytest.fixture
def third_process(monkeypatch) -> HalfTimeIaN:
    monkeypatch.setitem(PROCESSES, HalfTimeIaN.kind, HalfTimeIaN)
    return create_process(HalfTimeIaN.kind)


@pytest.mark.parametrize("sampler", ["euler", "pc", "dpm++2m"])
def test_the_oracles_answer_a_third_process_in_its_own_output_and_time(third_process, sampler):
    x0 = torch.linspace(-0.8, 0.8, 64).reshape(1, 1, 4, 4, 4)
    oracle = OneVolume(third_process, x0)
    result = sample(oracle, third_process, (2, 1, 4, 4, 4), SamplerSettings(sampler, 5).resolved(third_process),
                    generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(result.x0, x0.expand(2, -1, -1, -1, -1), atol=1e-5, rtol=0)
    assert oracle.times == third_process.grid(5)[:5]
    two = TwoGaussians(third_process, torch.stack([x0[0], -x0[0]]), 0.05)
    assert two(x0, torch.tensor([100.0])).shape[1] == third_process.output_channels(1)


def test_a_third_process_round_trips_and_a_dict_without_its_kind_is_refused(third_process):
    assert process_from_dict(third_process.to_dict()) == third_process
    assert third_process.supports_guidance and third_process.noise_level(250.0) == 0.25
    with pytest.raises(ConfigError, match="do not name the process"):
        process_from_dict({"num_timesteps": 1000, "noise_std": 0.5})
