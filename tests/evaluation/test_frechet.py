"""Fréchet distance: closed forms, identities, and no complex numbers when N < dim."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import linalg

from prdit.errors import DataError
from prdit.evaluation.frechet import (fid_from_features, frechet_distance, gaussian_fit, small_sample_warning)


def random_spd(dim: int, rng: np.random.Generator) -> np.ndarray:
    a = rng.standard_normal((dim, dim))
    return a @ a.T / dim + 0.1 * np.eye(dim)


def test_diagonal_covariances_match_closed_form():
    # Commuting covariances: d^2 = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([3.0, 1.0, 0.0])
    a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
    expected = 13.0 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_one_dimensional_gaussians():
    # N(0, 2^2) vs N(1, 3^2): (0 - 1)^2 + (2 - 3)^2 = 2.
    assert frechet_distance(np.array([0.0]), np.array([[4.0]]), np.array([1.0]), np.array([[9.0]])) == \
        pytest.approx(2.0, rel=1e-12)


def test_general_covariances_match_textbook_formula():
    rng = np.random.default_rng(0)
    dim = 20
    mu1, mu2 = rng.standard_normal(dim), rng.standard_normal(dim)
    s1, s2 = random_spd(dim, rng), random_spd(dim, rng)
    reference = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(linalg.sqrtm(s1 @ s2)).real
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(reference, rel=1e-9)


def test_sample_estimate_converges_to_closed_form():
    rng = np.random.default_rng(1)
    dim = 4
    mu1, mu2 = np.zeros(dim), np.full(dim, 0.5)
    s1, s2 = random_spd(dim, rng), random_spd(dim, rng)
    exact = frechet_distance(mu1, s1, mu2, s2)
    x = rng.multivariate_normal(mu1, s1, size=200_000)
    y = rng.multivariate_normal(mu2, s2, size=200_000)
    assert fid_from_features(x, y) == pytest.approx(exact, rel=0.02)


def test_identical_sets_give_zero_and_distance_is_symmetric():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((50, 2048)), rng.standard_normal((60, 2048)) + 0.1
    assert fid_from_features(a, b) > 0.0
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-8)
    assert fid_from_features(a, b) == pytest.approx(fid_from_features(b, a), rel=1e-9)


def test_fewer_samples_than_dimensions_stays_real_and_finite():
    # Rank-deficient covariances (N=10 in 2048-d) are where sqrtm-based code returns complex values.
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((10, 2048)), rng.standard_normal((12, 2048)) * 1.5
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = fid_from_features(a, b)
    assert isinstance(value, float) and np.isfinite(value) and value > 0.0


def test_sample_route_matches_covariance_route_when_rank_deficient():
    # fid_from_features takes the nuclear-norm route for N <= F; frechet_distance works on the
    # (singular) covariances directly. Both are the same quantity.
    rng = np.random.default_rng(4)
    a, b = rng.standard_normal((15, 300)), rng.standard_normal((20, 300)) * 1.3 + 0.2
    expected = frechet_distance(*gaussian_fit(a), *gaussian_fit(b))
    assert fid_from_features(a, b) == pytest.approx(expected, rel=1e-8)
    assert fid_from_features(a, a) == pytest.approx(0.0, abs=1e-9)


def test_small_sample_warning_names_n():
    message = small_sample_warning(100, 80, 2048)
    assert message is not None and "N=80" in message and "biased" in message
    assert small_sample_warning(3000, 2500, 2048) is None


def test_mismatched_shapes_and_single_samples_are_errors():
    with pytest.raises(DataError):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))
    with pytest.raises(DataError):
        gaussian_fit(np.zeros((1, 5)))
    with pytest.raises(DataError):
        fid_from_features(np.zeros((4, 5)), np.zeros((4, 6)))
