"""PSNR and the reference's three-axis SSIM against hand-computed values; the classical baselines."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from prdit.errors import ConfigError
from prdit.inverse.metrics import (
    back_projection_baseline,
    classical_baseline,
    mean_fill_baseline,
    psnr,
    ssim,
)
from prdit.inverse.operators import Downsample, GaussianBlur, Operator, make_mask
from prdit.inverse.projector import ConeBeamProjector


def test_psnr_of_a_constant_error():
    x = torch.zeros(2, 1, 4, 4, 4)
    y = torch.full_like(x, 0.1)  # MSE 0.01
    torch.testing.assert_close(psnr(y, x), torch.full((2,), 10 * math.log10(4.0 / 0.01), dtype=torch.float64))
    torch.testing.assert_close(psnr(y, x, data_range=1.0), torch.full((2,), 20.0, dtype=torch.float64))
    assert psnr(x, x).isinf().all()


def test_ssim_of_constant_volumes_is_the_luminance_term():
    # no variance: SSIM = (2ab + C1) / (a² + b² + C1), C1 = (0.01 · data range)²
    a, b, c1 = 0.5, 0.3, (0.01 * 2.0) ** 2
    x, y = torch.full((1, 1, 12, 12, 12), a), torch.full((1, 1, 12, 12, 12), b)
    torch.testing.assert_close(ssim(x, y), torch.tensor([(2 * a * b + c1) / (a * a + b * b + c1)]))
    noise = torch.rand(2, 1, 12, 13, 14)
    torch.testing.assert_close(ssim(noise, noise), torch.ones(2))


def slice_ssim_by_hand(a: torch.Tensor, b: torch.Tensor, data_range: float) -> float:
    """2D SSIM of two [h, w] images: 11×11 Gaussian window (σ 1.5), valid positions, map mean."""
    taps = torch.exp(-0.5 * (torch.arange(-5.0, 6.0) / 1.5) ** 2)
    window = torch.outer(taps, taps) / taps.sum() ** 2
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def local_mean(image: torch.Tensor) -> torch.Tensor:
        return F.conv2d(image[None, None], window[None, None])[0, 0]

    mu_a, mu_b = local_mean(a), local_mean(b)
    var_a, var_b = local_mean(a * a) - mu_a**2, local_mean(b * b) - mu_b**2
    cov = local_mean(a * b) - mu_a * mu_b
    value = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(value.mean())


def test_ssim_is_the_mean_over_the_three_axes_of_the_mean_slice_ssim():
    torch.manual_seed(0)
    x = torch.rand(1, 1, 11, 12, 13)
    y = x + 0.3 * torch.rand_like(x) * torch.linspace(0, 1, 13)  # error growing along W: axes differ
    axes = [
        sum(slice_ssim_by_hand(x[0, 0, d], y[0, 0, d], 1.0) for d in range(11)) / 11,
        sum(slice_ssim_by_hand(x[0, 0, :, h], y[0, 0, :, h], 1.0) for h in range(12)) / 12,
        sum(slice_ssim_by_hand(x[0, 0, :, :, w], y[0, 0, :, :, w], 1.0) for w in range(13)) / 13,
    ]
    assert max(axes) - min(axes) > 0.005  # a one-axis SSIM would fail the check below
    torch.testing.assert_close(ssim(x, y, data_range=1.0), torch.tensor([sum(axes) / 3]), rtol=1e-5, atol=1e-6)


def test_metrics_reject_mismatched_or_too_small_volumes():
    with pytest.raises(ConfigError, match="differ in shape"):
        psnr(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 5))
    with pytest.raises(ConfigError, match="at least 11"):
        ssim(torch.zeros(1, 1, 10, 16, 16), torch.zeros(1, 1, 10, 16, 16))


def test_mean_fill_keeps_measured_voxels_and_fills_the_rest_with_their_mean():
    mask = make_mask("axial_slab", (4, 2, 2))  # slices 1 and 2 missing
    x = torch.arange(16.0).reshape(1, 1, 4, 2, 2)
    filled = mean_fill_baseline(mask(x), mask)
    known_mean = (0 + 1 + 2 + 3 + 12 + 13 + 14 + 15) / 8
    torch.testing.assert_close(filled[0, 0, [0, 3]], x[0, 0, [0, 3]])
    torch.testing.assert_close(filled[0, 0, 1:3], torch.full((2, 2, 2), known_mean))


def test_back_projection_of_a_uniform_volume_is_that_volume():
    # every ray's mean density is the volume's: each voxel a ray crosses gets it back exactly
    projector = ConeBeamProjector((16, 16, 16), 10.0, views=3)
    x = torch.full((1, 1, 16, 16, 16), 0.3, dtype=torch.float64)
    torch.testing.assert_close(back_projection_baseline(projector(x), projector), x)


def trivial_and_baseline(operator: Operator, truth: torch.Tensor) -> dict[str, tuple[float, float]]:
    """PSNR and SSIM of the all-zero volume and of the classical baseline."""
    baseline = classical_baseline(operator, operator(truth))
    zeros = torch.zeros_like(truth)
    return {name: (float(psnr(volume, truth)), float(ssim(volume, truth)))
            for name, volume in (("zeros", zeros), ("baseline", baseline))}


@pytest.mark.parametrize("task", ["sr", "infill", "deblur", "xray"])
def test_each_classical_baseline_beats_the_zero_volume_on_a_phantom(task, phantom32):
    truth, spacing = phantom32
    operator = {"sr": lambda: Downsample(4), "infill": lambda: make_mask("centre_cube", (32, 32, 32)),
                "deblur": lambda: GaussianBlur(), "xray": lambda: ConeBeamProjector((32, 32, 32), spacing)}[task]()
    scores = trivial_and_baseline(operator, truth)
    assert scores["baseline"][0] > scores["zeros"][0] + 3.0  # PSNR, dB
    assert scores["baseline"][1] > scores["zeros"][1] + 0.1  # SSIM


def test_an_operator_without_a_baseline_is_an_error():
    class Identity(Operator):
        name = "identity"

        def __call__(self, x: torch.Tensor) -> torch.Tensor:
            return x

        def describe(self) -> dict:
            return {"operator": self.name}

    with pytest.raises(ConfigError, match="no classical baseline"):
        classical_baseline(Identity(), torch.zeros(1, 1, 4, 4, 4))
