"""MS-SSIM diversity: settings that fit small volumes, identities, and ordering by diversity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prdit.data.normalization import Normalization
from prdit.data.phantoms import generate_phantom
from prdit.errors import ConfigError, DataError
from prdit.evaluation.config import MSSSIMConfig
from prdit.evaluation.msssim import STANDARD_WEIGHTS, ms_ssim, msssim_diversity, msssim_settings, sample_pairs
from prdit.evaluation.volumes import VolumeSet


@pytest.mark.parametrize("side", [48, 64, 128, 256])
def test_default_is_the_published_setting_where_it_fits(side):
    settings = msssim_settings((side, side, side))
    assert (settings["scales"], settings["kernel_size"], settings["kernel_sigma"]) == (5, 3, 1.5)
    assert settings["weights"] == list(STANDARD_WEIGHTS)
    assert settings["published_setting"] is True


@pytest.mark.parametrize("side, scales", [(16, 3), (32, 4), (47, 4)])
def test_small_volumes_get_fewer_scales_labelled_as_not_published(side, scales):
    settings = msssim_settings((side, side, side))
    assert (settings["scales"], settings["kernel_size"]) == (scales, 3)
    assert sum(settings["weights"]) == pytest.approx(1.0)
    assert len(settings["weights"]) == scales
    assert settings["published_setting"] is False


def test_other_settings_are_labelled_and_impossible_ones_are_errors():
    assert msssim_settings((128,) * 3, MSSSIMConfig(kernel_size=7))["published_setting"] is False
    assert msssim_settings((128,) * 3, MSSSIMConfig(kernel_sigma=1.0))["published_setting"] is False
    assert msssim_settings((8, 8, 8))["scales"] == 2
    with pytest.raises(ConfigError):
        msssim_settings((2, 2, 2))
    with pytest.raises(ConfigError):
        msssim_settings((32, 32, 32), MSSSIMConfig(kernel_size=11, scales=5))


def test_diversity_is_monai_msssim_on_model_range_volumes_as_they_are():
    # The published script: MONAI's metric with data range 1 on volumes in [-1, 1], not mapped to
    # [0, 1] and not clipped (samplers overshoot [-1, 1] a little). SSIM's constants are not
    # shift-invariant, so the mapping changes the value.
    from monai.metrics import MultiScaleSSIMMetric

    volumes = np.stack([Normalization().to_model(generate_phantom(48, seed=i).array) for i in range(3)])
    volumes = volumes + 0.05 * np.random.default_rng(0).standard_normal(volumes.shape).astype(np.float32)
    assert volumes.min() < -1.0  # air overshoots the range, as sampled volumes do
    metric = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=3)
    tensors = torch.from_numpy(volumes)[:, None]
    published = np.mean([float(metric(tensors[i:i + 1], tensors[j:j + 1]))
                         for i in range(3) for j in range(3) if i != j])
    ours = msssim_diversity(VolumeSet(volumes), MSSSIMConfig(), progress=False)
    assert ours["published_setting"] and ours["pairs"] == 3
    assert ours["mean"] == pytest.approx(published, abs=1e-6)


def test_ms_ssim_is_one_for_identical_volumes_and_falls_with_noise(phantoms16):
    settings = msssim_settings((16, 16, 16))
    a = torch.from_numpy(phantoms16[:2, None])
    assert ms_ssim(a, a, settings) == pytest.approx(torch.ones(2), abs=1e-5)
    noise = torch.randn(a.shape, generator=torch.Generator().manual_seed(0))
    values = [float(ms_ssim(a, a + level * noise, settings).mean()) for level in (0.05, 0.1, 0.3)]
    assert values[0] > values[1] > values[2]


def test_diversity_orders_sets(phantoms16, phantoms32):
    config = MSSSIMConfig(max_pairs=20)
    copies = msssim_diversity(VolumeSet(np.repeat(phantoms16[:1], 4, axis=0)), config, progress=False)
    phantoms = msssim_diversity(VolumeSet(phantoms16[:8]), config, progress=False)
    noisy = np.clip(phantoms16[:8] + 0.3 * np.random.default_rng(0).standard_normal(phantoms16[:8].shape), -1, 1)
    noise_set = msssim_diversity(VolumeSet(noisy.astype(np.float32)), config, progress=False)
    assert copies["mean"] == pytest.approx(1.0, abs=1e-5)
    assert phantoms["mean"] < 0.99 and noise_set["mean"] < phantoms["mean"]
    assert phantoms["pairs"] == 20 and copies["pairs"] == 6
    at32 = msssim_diversity(VolumeSet(phantoms32[:4]), config, progress=False)
    assert 0.0 < at32["mean"] < 1.0 and at32["scales"] == 4


def test_pairs_are_all_pairs_or_a_seeded_sample():
    assert sample_pairs(4, 100).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    drawn = sample_pairs(100, 50, seed=1)
    assert len({tuple(p) for p in drawn}) == 50 and (drawn[:, 0] < drawn[:, 1]).all()
    assert np.array_equal(drawn, sample_pairs(100, 50, seed=1))
    with pytest.raises(DataError):
        sample_pairs(1, 10)


def test_up_to_64_volumes_every_pair_is_averaged_beyond_a_sample_with_its_monte_carlo_error(phantoms16):
    # The published script averages all pairs; 64 volumes have 2016.
    assert len(sample_pairs(64, MSSSIMConfig().max_pairs)) == 64 * 63 // 2
    small = msssim_diversity(VolumeSet(phantoms16[:8]), MSSSIMConfig(max_pairs=28), progress=False)
    assert small["all_pairs"] and small["pairs"] == 28 and small["monte_carlo_error"] == 0.0
    sampled = msssim_diversity(VolumeSet(phantoms16[:8]), MSSSIMConfig(max_pairs=10), progress=False)
    assert not sampled["all_pairs"] and sampled["total_pairs"] == 28
    assert sampled["monte_carlo_error"] == pytest.approx(sampled["std"] / np.sqrt(10) * np.sqrt(1 - 10 / 28))
    assert abs(sampled["mean"] - small["mean"]) < 4 * sampled["monte_carlo_error"]
