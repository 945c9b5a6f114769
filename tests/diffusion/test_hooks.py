"""The sampling loop's per-step hook: what it sees, what it may change, when gradients flow."""

import torch

from prdit.diffusion import IaNDiffusion, SamplerSettings, progress_hook, sample


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
