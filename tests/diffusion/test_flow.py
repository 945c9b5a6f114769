"""Flow matching (PRDiT-FM): the path, the oracle velocity, the samplers, both stages."""

import pytest
import torch

from prdit.diffusion import FlowMatching, SamplerSettings, create_process, process_from_dict, sample
from prdit.diffusion.samplers import DEFAULT_OUTPUT
from prdit.errors import ConfigError
from prdit.models import create_model


class OracleVelocity(torch.nn.Module):
    """Knows the one-volume data set: ``v = (x₀ − x_t)/(1 − t)``, the network time being 1000·t."""

    def __init__(self, x0: torch.Tensor) -> None:
        super().__init__()
        self.x0, self.times = x0, []

    def forward(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        self.times.append(float(time[0]))
        t = (time / 1000.0).reshape(-1, 1, 1, 1, 1)
        return (self.x0 - x) / (1.0 - t)


def volume() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool3d(torch.randn(1, 1, 16, 16, 16, generator=gen), 3, 1, 1)
    return (x / x.abs().max()).clamp(-1, 1)


def test_path_runs_from_unit_noise_at_t0_to_the_data_at_t1():
    process = FlowMatching()
    x0 = torch.full((20000, 1, 1, 1, 1), 0.8)
    noise = process.sample_noise(x0.shape, generator=torch.Generator().manual_seed(0))
    for t in (0.0, 0.3, 1.0):
        x_t = process.q_sample(x0, torch.full((20000,), t), noise)
        assert x_t.mean().item() == pytest.approx(t * 0.8, abs=0.02)
        assert x_t.std().item() == pytest.approx(1.0 - t, abs=0.02)
    assert process.grid(4) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert process.model_time(torch.tensor([0.25])).item() == 250.0


@pytest.mark.parametrize("sampler", ["euler", "heun"])
@pytest.mark.parametrize("steps", [1, 10, 100])
def test_euler_and_heun_return_the_volume_with_the_oracle_velocity(sampler, steps):
    x0 = volume()
    oracle = OracleVelocity(x0)
    settings = SamplerSettings(sampler, steps).resolved(FlowMatching())
    result = sample(oracle, FlowMatching(), (2, 1, 16, 16, 16), settings, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(result.state, x0.expand(2, -1, -1, -1, -1), atol=1e-5, rtol=0)
    torch.testing.assert_close(result.x0, x0.expand(2, -1, -1, -1, -1), atol=1e-5, rtol=0)
    assert len(oracle.times) == settings.network_calls()
    assert oracle.times[0] == 0.0


def test_loss_is_zero_for_the_true_velocity_and_only_euler_and_heun_apply():
    process = FlowMatching()
    x0 = volume().expand(3, -1, -1, -1, -1)
    noise = process.sample_noise(x0.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.1, 0.5, 0.9])
    x_t = process.q_sample(x0, t, noise)
    assert process.loss(x0 - noise, x0, x_t, t, noise)["loss"].item() < 1e-12
    assert process.loss(torch.zeros_like(x0), x0, x_t, t, noise)["loss"].item() > 0.5
    times = process.sample_time(10000, generator=torch.Generator().manual_seed(0))
    assert 0.0 <= times.min().item() and times.max().item() < 1.0 and abs(times.mean().item() - 0.5) < 0.02
    with pytest.raises(ConfigError, match="does not apply to the flow process"):
        SamplerSettings("pc", 10).resolved(process)
    assert SamplerSettings().resolved(process) == SamplerSettings("euler", 100, output=DEFAULT_OUTPUT["euler"])
    with pytest.raises(ConfigError, match="flow process has no guided reconstruction"):
        SamplerSettings().resolved(process, guided=True)


def test_processes_are_found_by_kind_and_round_trip_through_dicts():
    assert process_from_dict(FlowMatching().to_dict()) == FlowMatching()
    assert create_process("ian", noise_std=1.0).to_dict() == {"kind": "ian", "num_timesteps": 1000, "noise_std": 1.0}
    with pytest.raises(ConfigError, match="unknown process 'ddpm'"):
        create_process("ddpm")
    with pytest.raises(ConfigError, match="does not take these settings"):
        create_process("flow", noise_std=0.5)


def test_a_fresh_stage2_flow_model_equals_its_stage1_model():
    torch.manual_seed(0)
    stage1 = create_model("PRDiT-T/6/0", input_size=16, out_channels=FlowMatching().output_channels(1))
    with torch.no_grad():
        for p in stage1.parameters():
            p.add_(0.05 * torch.randn_like(p))
    stage2 = create_model("PRDiT-T/6/2", input_size=16, out_channels=1)
    stage2.load_stage1(stage1.state_dict())
    x, t = torch.randn(2, 1, 16, 16, 16), FlowMatching().model_time(torch.tensor([0.2, 0.7]))
    out1, out2 = stage1(x, t), stage2(x, t)
    assert out1.shape == (2, 1, 16, 16, 16) and out1.abs().sum() > 0
    assert torch.equal(out1, out2)
