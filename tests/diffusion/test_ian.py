import math

import pytest
import torch

from prdit.diffusion import IaNDiffusion, SamplerSettings, sample
from prdit.errors import ConfigError


class Oracle(torch.nn.Module):
    """Knows the one-volume data set: returns the true x₀ and the ε implied by x_t."""

    def __init__(self, diffusion: IaNDiffusion, x0: torch.Tensor) -> None:
        super().__init__()
        self.diffusion, self.x0, self.timesteps = diffusion, x0, []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.timesteps.append(float(t[0]))
        beta = self.diffusion.beta(t).float().reshape(-1, 1, 1, 1, 1)
        x0 = self.x0.expand_as(x)
        eps = (x - torch.cos(beta) * x0) / torch.sin(beta)
        return torch.cat([eps, x0], dim=1)


def volume() -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    x = torch.nn.functional.avg_pool3d(torch.randn(1, 1, 16, 16, 16, generator=gen), 3, 1, 1)
    return (x / x.abs().max()).clamp(-1, 1)


def test_forward_process_has_the_stated_mean_and_variance():
    diffusion = IaNDiffusion(noise_std=0.5)
    x0 = torch.full((20000, 1, 1, 1, 1), 0.8)
    gen = torch.Generator().manual_seed(0)
    for t in (0, 250, 500, 999, 1000):
        noise = diffusion.sample_noise(x0.shape, generator=gen)
        x_t = diffusion.q_sample(x0, torch.full((20000,), t), noise)
        beta = math.pi / 2 * t / 1000
        assert x_t.mean().item() == pytest.approx(math.cos(beta) * 0.8, abs=0.01)
        assert x_t.var().item() == pytest.approx((math.sin(beta) * 0.5) ** 2, abs=0.01)


@pytest.mark.parametrize("sampler", ["euler", "pc", "heun"])
@pytest.mark.parametrize("steps", [10, 50, 1000])
def test_samplers_recover_the_volume_with_an_oracle_denoiser(sampler, steps):
    diffusion = IaNDiffusion()
    x0 = volume()
    oracle = Oracle(diffusion, x0)
    result = sample(oracle, diffusion, (2, 1, 16, 16, 16), SamplerSettings(sampler, steps),
                    generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(result.x0, x0.expand(2, -1, -1, -1, -1), atol=1e-5, rtol=0)
    # the chain itself ends at the volume too, to within the step's discretisation error
    assert (result.state - x0).abs().max() < 0.02 * 10 / steps + 1e-4
    assert len(oracle.timesteps) == SamplerSettings(sampler, steps).network_calls()
    assert oracle.timesteps[0] == 1000.0 and oracle.timesteps[-1] == pytest.approx(1000 / steps)


def test_sampling_starts_from_pure_noise_at_t_equal_T():
    diffusion = IaNDiffusion(noise_std=0.5)
    seen = {}

    def model(x, t):
        seen.setdefault("x", x.clone())
        return torch.zeros(x.shape[0], 2, *x.shape[2:])

    sample(model, diffusion, (4, 1, 16, 16, 16), SamplerSettings("euler", 4), generator=torch.Generator().manual_seed(0))
    assert seen["x"].std().item() == pytest.approx(0.5, rel=0.05)
    assert diffusion.grid(4) == [1000.0, 750.0, 500.0, 250.0, 0.0]


def test_sampling_is_reproducible_with_a_generator():
    diffusion = IaNDiffusion()
    oracle = Oracle(diffusion, volume())
    settings = SamplerSettings("pc", 20)
    a = sample(oracle, diffusion, (1, 1, 16, 16, 16), settings, generator=torch.Generator().manual_seed(5))
    b = sample(oracle, diffusion, (1, 1, 16, 16, 16), settings, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a.state, b.state)


def test_training_loss_is_zero_for_the_oracle_and_positive_otherwise():
    diffusion = IaNDiffusion()
    x0 = volume().expand(3, -1, -1, -1, -1)
    oracle = Oracle(diffusion, volume())
    gen = torch.Generator().manual_seed(0)
    t = torch.tensor([1, 500, 1000])
    losses = diffusion.training_losses(oracle, x0, t=t, generator=gen)
    assert losses["loss"].item() < 1e-8
    zero = diffusion.training_losses(lambda x, t: torch.zeros(3, 2, 16, 16, 16), x0, t=t, generator=gen)
    # ε has std σ, so predicting 0 costs about σ² plus the mean square of x₀
    assert zero["loss_eps"].item() == pytest.approx(0.25, rel=0.1)
    assert zero["loss_x0"].item() == pytest.approx(x0.pow(2).mean().item(), rel=1e-5)


def test_training_timesteps_cover_zero_to_T_inclusive():
    t = IaNDiffusion().sample_time(20000, generator=torch.Generator().manual_seed(0))
    assert t.min().item() == 0 and t.max().item() == 1000


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError):
        IaNDiffusion(noise_std=0)
    with pytest.raises(ConfigError, match="does not apply to the ian process"):
        SamplerSettings("ddpm", 2).resolved(IaNDiffusion())
    with pytest.raises(ConfigError, match="not resolved"):
        sample(lambda x, t: x, IaNDiffusion(), (1, 1, 8, 8, 8), SamplerSettings(steps=2))
    assert SamplerSettings().resolved(IaNDiffusion()) == SamplerSettings("pc", IaNDiffusion.sample_steps, output="x0")
    assert SamplerSettings().resolved(IaNDiffusion(), guided=True) == SamplerSettings("pc", IaNDiffusion.guided_steps,
                                                                                      output="x0")


def _float_rule_misjudges(steps: int) -> bool:
    grid = IaNDiffusion().grid(steps)
    delta = grid[0] - grid[1]
    return any((grid[i] - 2 * delta <= 0) != (i + 2 >= steps) for i in range(steps))


@pytest.mark.parametrize("steps", [s for s in range(3, 200) if _float_rule_misjudges(s)][:4] + [4, 25])
def test_predictor_corrector_uses_plain_euler_exactly_at_the_last_two_steps(steps, monkeypatch):
    diffusion = IaNDiffusion()
    draws = []
    original = IaNDiffusion.sample_noise

    def counting(self, shape, *args, **kwargs):
        draws.append(tuple(shape))
        return original(self, shape, *args, **kwargs)

    monkeypatch.setattr(IaNDiffusion, "sample_noise", counting)
    sample(lambda x, t: torch.zeros(x.shape[0], 2, *x.shape[2:]), diffusion, (1, 1, 2, 2, 2),
           SamplerSettings("pc", steps), generator=torch.Generator().manual_seed(0))
    # The start x_T, then one corrector draw per step except the last two.
    assert len(draws) == 1 + (steps - 2)
