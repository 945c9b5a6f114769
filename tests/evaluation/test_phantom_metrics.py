"""FID and MMD on phantoms: zero for a set against itself, growing as noise or blur is added.

Features come from a randomly initialised MedicalNet (fixed seed), which is enough to test
the metrics' behaviour; the numbers are not comparable with published ones. The degraded
sets are the same phantoms with noise or blur added, so the sampling noise of a small set
does not hide small degradations.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from prdit.evaluation.features import extract_features, feature_network
from prdit.evaluation.frechet import fid_from_features
from prdit.evaluation.mmd import median_bandwidth, mmd, mmd_squared, mmd_unbiased
from prdit.evaluation.volumes import VolumeSet

NOISE_LEVELS = (0.0, 0.05, 0.1, 0.2)
BLUR_SIGMAS = (0.0, 0.5, 1.0)
COUNT = 12


@pytest.fixture(scope="module")
def network():
    return feature_network(seed=0)


@pytest.fixture(scope="module")
def real(phantoms16):
    return phantoms16[:COUNT]


@pytest.fixture(scope="module")
def real_features(real, network):
    return features(real, network)


def features(volumes: np.ndarray, network) -> np.ndarray:
    # Clipped like a generator's output, so noise does not leave the training range.
    return extract_features(VolumeSet(np.clip(volumes, -1.0, 1.0)), network, batch_size=4, progress=False)


def assert_increasing(values: list[float]) -> None:
    assert all(a < b for a, b in zip(values, values[1:])), values


def test_fid_and_mmd_of_a_set_with_itself_are_zero(real_features):
    assert fid_from_features(real_features, real_features) == pytest.approx(0.0, abs=1e-9)
    assert mmd(real_features, real_features) == pytest.approx(0.0, abs=1e-5)


def test_fid_and_mmd_grow_with_noise(real, real_features, network):
    noise = np.random.default_rng(0).standard_normal(real.shape).astype(np.float32)
    bandwidth = median_bandwidth(real_features)
    fids, mmd2s, mmds, unbiased = [], [], [], []
    for level in NOISE_LEVELS:
        fake_features = features(real + level * noise, network)
        fids.append(fid_from_features(real_features, fake_features))
        mmd2s.append(mmd_squared(real_features, fake_features, bandwidth)[0])
        mmds.append(mmd(real_features, fake_features))
        unbiased.append(mmd_unbiased(real_features, fake_features, bandwidth))
    assert fids[0] == pytest.approx(0.0, abs=1e-9)
    assert_increasing(fids)
    assert_increasing(mmd2s)
    assert mmds[0] == pytest.approx(0.0, abs=1e-5) and mmds[-1] > 0.1
    assert_increasing(mmds)
    # The unbiased figure clips negative estimates to 0, so it only never decreases.
    assert all(a <= b for a, b in zip(unbiased, unbiased[1:])) and unbiased[-1] > 0.1, unbiased


def test_fid_and_mmd_grow_with_blur(real, real_features, network):
    bandwidth = median_bandwidth(real_features)
    fids, mmds = [], []
    for sigma in BLUR_SIGMAS:
        blurred = np.stack([ndimage.gaussian_filter(v, sigma) for v in real]) if sigma else real
        fake_features = features(blurred, network)
        fids.append(fid_from_features(real_features, fake_features))
        mmds.append(mmd_squared(real_features, fake_features, bandwidth)[0])
    assert_increasing(fids)
    assert_increasing(mmds)


def test_mmd_of_two_halves_is_small_and_of_shifted_sets_clearly_larger(phantoms16, real_features, network):
    other = phantoms16[COUNT:2 * COUNT]  # other phantoms: the same distribution, different samples
    other_features, shifted_features = features(other, network), features(other + 0.1, network)
    same = mmd_unbiased(real_features, other_features)
    shifted = mmd_unbiased(real_features, shifted_features)
    assert same < 0.2
    assert shifted > 0.5
    assert shifted > 4 * same
    # The published (biased) figure carries a small-sample floor, but orders the sets the same way.
    assert mmd(real_features, shifted_features) > 2 * mmd(real_features, other_features)
