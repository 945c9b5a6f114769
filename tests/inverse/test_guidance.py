"""Guided predictor–corrector sampling with an oracle prior: the exact denoiser of a known set of
three volumes recovers the member a measurement came from, for every task."""

from __future__ import annotations

import math

import pytest
import torch

from prdit.data.normalization import Normalization
from prdit.data.phantoms import generate_phantom
from prdit.diffusion import IaNDiffusion
from prdit.diffusion.process import Prediction
from prdit.diffusion.samplers import SamplerSettings, SamplerStep, sample
from prdit.errors import ConfigError
from prdit.inverse.guidance import TASK_DEFAULTS, MeasurementGuidance, guidance_weight, task_settings
from prdit.inverse.metrics import psnr
from prdit.inverse.operators import Downsample, GaussianBlur, make_mask
from prdit.inverse.projector import ConeBeamProjector

SIZE = 16
STEPS = 100


@pytest.fixture(scope="module")
def known_set() -> torch.Tensor:
    """Three 16³ phantoms in the model range, ``[3, 1, 16, 16, 16]``: the prior's whole support."""
    volumes = [Normalization().to_model(generate_phantom(SIZE, seed=s).array) for s in (1, 2, 3)]
    return torch.stack([torch.from_numpy(v) for v in volumes])[:, None].float()


def oracle(process: IaNDiffusion, members: torch.Tensor):
    """The exact IaN denoiser of the uniform distribution on ``members``: ``[ε̂, x̂₀]`` = the posterior means."""

    def denoise(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        beta = t.double() * (math.pi / 2 / process.num_timesteps)
        cos, sin = torch.cos(beta).view(-1, 1), torch.sin(beta).view(-1, 1)
        flat, data = x.flatten(1).double(), members.flatten(1).double()
        distance = ((flat[:, None] - cos[:, None] * data[None]) ** 2).sum(-1)  # [B, K]
        weights = torch.softmax(-distance / (2 * (sin * process.sigma) ** 2).clamp_min(1e-30), dim=1)
        x0 = weights @ data
        noise = (flat - cos * x0) / sin.clamp_min(1e-12)
        return torch.cat([noise, x0], dim=1).view(x.shape[0], 2, *x.shape[2:]).float()

    return denoise


def operator_of(task: str):
    """Each task's operator at 16³ (X-ray: the reference geometry, two views, 2 mm voxels)."""
    return {"sr": lambda: Downsample(4), "deblur": lambda: GaussianBlur(5, 2.0),
            "infill": lambda: make_mask("centre_cube", (SIZE,) * 3),
            "xray": lambda: ConeBeamProjector((SIZE,) * 3, 2.0, views=2)}[task]()


def reconstruct(task: str, members: torch.Tensor, truth: int, seed: int, **changes) -> torch.Tensor:
    """Guided sampling of one volume from the measurement of member ``truth``."""
    process = IaNDiffusion()
    guidance = task_settings(task, **changes)
    operator = operator_of(task)
    hook = MeasurementGuidance(operator, operator(members[truth:truth + 1]), guidance, process)
    settings = SamplerSettings("pc", STEPS, jump=guidance.jump, corrector_noise=guidance.corrector_noise).resolved(process)
    return sample(oracle(process, members), process, (1, 1, SIZE, SIZE, SIZE), settings,
                  generator=torch.Generator().manual_seed(seed), hooks=[hook]).x0


@pytest.mark.parametrize("task", sorted(TASK_DEFAULTS))
def test_oracle_prior_recovers_the_measured_volume(task: str, known_set: torch.Tensor) -> None:
    for truth in range(3):
        x = reconstruct(task, known_set, truth, seed=truth)
        assert psnr(x, known_set[truth:truth + 1]) > 40, (task, truth)


def test_without_guidance_the_oracle_samples_other_members(known_set: torch.Tensor) -> None:
    """The control: unguided, the prior picks members at random, so recovery above is the measurement's doing."""
    picks = set()
    for seed in range(8):
        x = reconstruct("sr", known_set, 0, seed, scale=0.0)
        picks.add(int(((x - known_set) ** 2).flatten(1).mean(1).argmin()))
    assert len(picks) > 1


def test_guidance_weight_and_settings() -> None:
    assert guidance_weight(1.0) == pytest.approx(1.0)
    assert guidance_weight(0.0) == pytest.approx(0.0)
    assert guidance_weight(0.5) == pytest.approx(0.5)
    assert task_settings("sr", scale=5.0).scale == 5.0
    assert task_settings("sr", scale=None).scale == TASK_DEFAULTS["sr"].scale
    with pytest.raises(ConfigError, match="unknown task"):
        task_settings("denoise")
    with pytest.raises(ConfigError, match="jump"):
        task_settings("sr", jump=0)
    with pytest.raises(ConfigError, match="mask operator"):
        MeasurementGuidance(Downsample(4), torch.zeros(1, 1, 4, 4, 4), task_settings("sr", hard_consistency=True),
                            IaNDiffusion())


def test_guidance_gradient_is_that_of_the_residual_norm() -> None:
    """g = Aᵀ(A x̂₀ − y)/‖A x̂₀ − y‖ for a linear A: unit residual direction pulled back."""
    operator = Downsample(2)
    x0 = torch.randn(2, 1, 8, 8, 8, dtype=torch.float64)
    y = torch.randn(2, 1, 4, 4, 4, dtype=torch.float64)
    hook = MeasurementGuidance(operator, y, task_settings("sr"), IaNDiffusion())
    g = hook.gradient(x0)
    leaf = x0.clone().requires_grad_(True)
    residual = operator(leaf) - y
    expected = torch.autograd.grad((residual / residual.flatten(1).norm(dim=1).view(-1, 1, 1, 1, 1)).detach()
                                   .mul(residual).sum(), leaf)[0]
    torch.testing.assert_close(g, expected)


def test_infill_guidance_takes_the_gradient_before_hard_consistency() -> None:
    """With hard consistency the state still moves against the gradient of the network's own x̂₀,
    and only then does x̂₀ take the measurement where it is known (after the replacement the
    residual would be zero and ρ would do nothing)."""
    mask = make_mask("centre_cube", (8, 8, 8))
    generator = torch.Generator().manual_seed(0)
    truth, x0, x = (torch.randn(1, 1, 8, 8, 8, generator=generator, dtype=torch.float64) for _ in range(3))
    y = mask(truth)
    settings = task_settings("infill", decay=False)
    step = SamplerStep(0, 10, 500.0, 400.0, x, Prediction(x0, torch.zeros_like(x0)))
    hook = MeasurementGuidance(mask, y, settings, IaNDiffusion())
    guided = hook(step)
    known = mask.weights(x0)
    torch.testing.assert_close(guided.x, x - settings.scale * hook.gradient(x0))
    assert not torch.equal(guided.x, x)
    torch.testing.assert_close(guided.prediction.x0, (1 - known) * x0 + known * y)


def test_infill_guidance_leaves_out_the_measured_volume_outside_the_mask() -> None:
    """An infill measurement given as a whole volume (``--measurement``): its values at the unknown voxels were
    never measured, so they enter neither the residual nor the guided step."""
    process, mask = IaNDiffusion(), make_mask("centre_cube", (SIZE,) * 3)
    generator = torch.Generator().manual_seed(0)
    volume, x0, x = (torch.randn(1, 1, SIZE, SIZE, SIZE, generator=generator) for _ in range(3))
    whole = MeasurementGuidance(mask, volume, TASK_DEFAULTS["infill"], process)
    known = MeasurementGuidance(mask, mask(volume), TASK_DEFAULTS["infill"], process)
    residual = mask(x0) - mask(volume)
    torch.testing.assert_close(whole.gradient(x0), residual / residual.norm())
    step = SamplerStep(0, STEPS, 900.0, 890.0, x, Prediction(x0, torch.zeros_like(x0)))
    torch.testing.assert_close(whole(step).x, known(step).x)
    torch.testing.assert_close(whole(step).prediction.x0, known(step).prediction.x0)
