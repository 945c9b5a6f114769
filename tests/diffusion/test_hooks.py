"""The sampling loop's per-step hook: what it sees, what it may change, when gradients flow."""

import pytest
import torch

from prdit.diffusion import IaNDiffusion, SamplerSettings, progress_hook, sample
from prdit.errors import ConfigError


def zero_model(x, t):
    return torch.zeros(x.shape[0], 2, *x.shape[2:])


def test_hooks_see_every_step_in_order_without_gradients():
    seen = []

    def record(step):
        seen.append((step.index, step.t, step.t_next, torch.is_grad_enabled(), step.prediction.x0.shape))

    done = []
    sample(zero_model, IaNDiffusion(), (1, 1, 4, 4, 4), SamplerSettings("euler", 4),
           hooks=[record, progress_hook(lambda i, n: done.append((i, n)))])
    assert [s[:3] for s in seen] == [(0, 1000.0, 750.0), (1, 750.0, 500.0), (2, 500.0, 250.0), (3, 250.0, 0.0)]
    assert not any(s[3] for s in seen)
    assert done == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_a_hook_that_asks_for_gradients_gets_them_and_its_changes_are_used():
    target = torch.full((1, 1, 4, 4, 4), 0.3)

    def consistency(step):
        # Hard data consistency on x̂₀ (as infill does), with a gradient of a measurement loss.
        x0 = step.prediction.x0.clone().requires_grad_(True)
        ((x0 - target) ** 2).sum().backward()
        assert x0.grad is not None
        step.prediction = step.prediction._replace(x0=target.expand_as(x0).clone())
        return step

    consistency.requires_grad = True
    result = sample(zero_model, IaNDiffusion(), (1, 1, 4, 4, 4), SamplerSettings("pc", 6),
                    generator=torch.Generator().manual_seed(0), hooks=[consistency])
    assert torch.equal(result.x0, target)
    assert not torch.is_grad_enabled() or not result.state.requires_grad


def test_hooks_do_not_change_results_when_they_return_nothing():
    settings = SamplerSettings("pc", 5)
    plain = sample(zero_model, IaNDiffusion(), (2, 1, 4, 4, 4), settings, generator=torch.Generator().manual_seed(3))
    hooked = sample(zero_model, IaNDiffusion(), (2, 1, 4, 4, 4), settings, generator=torch.Generator().manual_seed(3),
                    hooks=[lambda step: None])
    assert torch.equal(plain.state, hooked.state)


def _pc(settings: SamplerSettings, seed: int) -> torch.Tensor:
    process = IaNDiffusion(num_timesteps=100)

    def shrink(x, t):  # a model whose x̂₀ is half the state, so the steps matter
        return torch.cat([x, 0.5 * x], dim=1)

    return sample(shrink, process, (1, 1, 4, 4, 4), settings.resolved(process),
                  generator=torch.Generator().manual_seed(seed), noise=torch.full((1, 1, 4, 4, 4), 0.3)).state


def test_pc_jump_and_corrector_noise():
    """From one start, without corrector noise the chain no longer depends on the draws; the jump changes it."""
    quiet = SamplerSettings("pc", 10, corrector_noise=0.0)
    torch.testing.assert_close(_pc(quiet, 0), _pc(quiet, 1), rtol=0, atol=0)
    noisy = SamplerSettings("pc", 10)
    assert not torch.equal(_pc(noisy, 0), _pc(noisy, 1))
    assert not torch.equal(_pc(SamplerSettings("pc", 10, jump=4), 0), _pc(noisy, 0))
    for bad in (SamplerSettings("pc", 10, jump=0), SamplerSettings("pc", 10, corrector_noise=-1.0)):
        with pytest.raises(ConfigError):
            bad.resolved(IaNDiffusion())
