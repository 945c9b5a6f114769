"""Downsampling, masks and blur: values, shapes, gradients; simulated measurements."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from prdit.errors import ConfigError
from prdit.inverse.operators import (
    Downsample,
    GaussianBlur,
    Mask,
    axial_slab_mask,
    centre_cube_mask,
    make_mask,
    random_voxel_mask,
    simulate_measurement,
)
from prdit.inverse.projector import ConeBeamGeometry, ConeBeamProjector


def test_downsampling_by_two_averages_each_block_of_eight():
    # align_corners=False samples halfway between voxel centres: a 2³ block mean, no antialiasing
    x = torch.randn(2, 1, 8, 6, 4)
    torch.testing.assert_close(Downsample(2)(x), F.avg_pool3d(x, 2))


def test_downsampling_by_four_averages_the_central_eight_voxels_of_each_block():
    # sample points at 4i + 1.5: only voxels 4i+1 and 4i+2 of each block of four contribute
    x = torch.randn(1, 1, 8, 8, 12)
    central = x
    for dim in (2, 3, 4):
        first = torch.arange(1, x.shape[dim], 4)
        central = 0.5 * (central.index_select(dim, first) + central.index_select(dim, first + 1))
    y = Downsample(4)(x)
    assert y.shape == (1, 1, 2, 2, 3)
    torch.testing.assert_close(y, central)


def test_downsampling_rejects_sides_not_divisible_by_the_factor():
    with pytest.raises(ConfigError, match="not divisible"):
        Downsample(4)(torch.zeros(1, 1, 8, 8, 10))
    with pytest.raises(ConfigError, match="positive integer"):
        Downsample(0)


def test_centre_cube_mask_misses_the_central_box_of_half_each_side():
    known = centre_cube_mask((16, 12, 8))
    assert known.shape == (16, 12, 8) and known.dtype == torch.bool
    assert (~known).sum() == 8 * 6 * 4
    assert not known[4:12, 3:9, 2:6].any() and known.sum() == known.numel() - 8 * 6 * 4


def test_random_voxel_mask_misses_the_requested_fraction_and_follows_its_seed():
    known = random_voxel_mask((10, 10, 10), missing_fraction=0.9, seed=5)
    assert (~known).sum() == 900
    assert torch.equal(known, random_voxel_mask((10, 10, 10), 0.9, seed=5))
    assert not torch.equal(known, random_voxel_mask((10, 10, 10), 0.9, seed=6))
    with pytest.raises(ConfigError, match="missing_fraction"):
        random_voxel_mask((4, 4, 4), 1.5)


def test_axial_slab_mask_misses_whole_middle_slices():
    known = axial_slab_mask((16, 5, 6))
    assert not known[4:12].any() and known[:4].all() and known[12:].all()
    thin = axial_slab_mask((16, 5, 6), thickness=3)
    assert [bool(thin[d].any()) for d in range(16)].count(False) == 3 and not thin[6:9].any()
    with pytest.raises(ConfigError, match="thickness"):
        axial_slab_mask((16, 5, 6), thickness=17)


def test_mask_operator_keeps_known_voxels_and_describes_its_pattern():
    mask = make_mask("random_voxels", (6, 6, 6), missing_fraction=0.5, seed=1)
    x = torch.randn(2, 1, 6, 6, 6, dtype=torch.float64)
    y = mask(x)
    known = mask.known[None, None].expand_as(x)
    assert torch.equal(y[known], x[known]) and (y[~known] == 0).all()
    described = json.loads(json.dumps(mask.describe()))
    assert described == {"operator": "mask", "pattern": "random_voxels", "missing_fraction": 0.5, "seed": 1,
                         "shape": [6, 6, 6], "known_fraction": 0.5}
    assert make_mask("random_voxels", (6, 6, 6)).describe()["missing_fraction"] == 0.9  # defaults recorded too
    with pytest.raises(ConfigError, match="unknown mask pattern"):
        make_mask("checkerboard", (6, 6, 6))
    with pytest.raises(ConfigError, match="does not take"):
        make_mask("centre_cube", (6, 6, 6), seed=2)
    with pytest.raises(ConfigError, match="does not fit"):
        mask(torch.zeros(1, 1, 6, 6, 7))
    with pytest.raises(ConfigError, match="only 0"):
        Mask(torch.full((2, 2, 2), 0.5))


def test_gaussian_blur_keeps_constants_inside_and_pads_with_zeros():
    blur = GaussianBlur()  # kernel 5, sigma 2
    ones = torch.ones(1, 1, 9, 9, 9, dtype=torch.float64)
    out = blur(ones)
    torch.testing.assert_close(out[..., 2:-2, 2:-2, 2:-2], torch.ones(1, 1, 5, 5, 5, dtype=torch.float64))
    taps = torch.exp(-0.5 * (torch.arange(-2.0, 3.0, dtype=torch.float64) / 2.0) ** 2)
    edge = taps[2:].sum() / taps.sum()  # at a face the two taps beyond it see zeros
    torch.testing.assert_close(out[0, 0, 0, 0, 0], edge**3)
    torch.testing.assert_close(out[0, 0, 0, 4, 4], edge)


def test_gaussian_blur_is_self_adjoint():
    torch.manual_seed(0)
    blur = GaussianBlur()
    x, y = torch.randn(2, 1, 7, 8, 9, dtype=torch.float64), torch.randn(2, 1, 7, 8, 9, dtype=torch.float64)
    torch.testing.assert_close((blur(x) * y).sum(), (x * blur(y)).sum(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("operator", [
    Downsample(2),
    make_mask("centre_cube", (4, 4, 4)),
    GaussianBlur(),
    ConeBeamProjector((4, 4, 4), 10.0, geometry=ConeBeamGeometry(detector_rows=4, detector_columns=4, pixel_mm=12.0)),
], ids=lambda operator: operator.name)
def test_every_operator_has_the_finite_difference_gradient(operator):
    x = (torch.rand(1, 1, 4, 4, 4, dtype=torch.float64) * 2 - 1).requires_grad_()
    assert torch.autograd.gradcheck(operator, (x,))


def test_simulated_measurements_are_seeded_and_noisy_only_where_measured():
    x = torch.rand(1, 1, 16, 16, 16) * 2 - 1
    blur = GaussianBlur()
    torch.testing.assert_close(simulate_measurement(blur, x), blur(x))
    noisy = simulate_measurement(blur, x, noise_std=0.1, seed=3)
    assert torch.equal(noisy, simulate_measurement(blur, x, noise_std=0.1, seed=3))
    assert not torch.equal(noisy, simulate_measurement(blur, x, noise_std=0.1, seed=4))
    assert abs(float((noisy - blur(x)).std()) - 0.1) < 0.005  # 4,096 draws: std error of the std ≈ 0.0011
    mask = make_mask("centre_cube", (16, 16, 16))
    masked = simulate_measurement(mask, x, noise_std=0.1, seed=3)
    missing = ~mask.known[None, None]
    assert (masked[missing] == 0).all() and not torch.equal(masked, mask(x))
    with pytest.raises(ConfigError, match="noise_std"):
        simulate_measurement(blur, x, noise_std=-1.0)
