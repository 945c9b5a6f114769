"""MMD: RBF kernel with the median bandwidth, unbiased MMD^2, sqrt(max(., 0)) reported."""

from __future__ import annotations

import numpy as np
import pytest

from prdit.errors import DataError
from prdit.evaluation.mmd import median_bandwidth, mmd, mmd_squared


def test_median_bandwidth_is_median_pairwise_distance():
    points = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])  # distances 3, 4, 5
    assert median_bandwidth(points) == pytest.approx(4.0)


def test_unbiased_mmd_squared_matches_direct_sums():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((5, 3)), rng.standard_normal((7, 3)) + 1.0
    s = 1.7

    def k(a, b):
        return np.exp(-((a - b) ** 2).sum() / (2 * s * s))

    xx = sum(k(x[i], x[j]) for i in range(5) for j in range(5) if i != j) / 20
    yy = sum(k(y[i], y[j]) for i in range(7) for j in range(7) if i != j) / 42
    xy = sum(k(a, b) for a in x for b in y) / 35
    value, bandwidth = mmd_squared(x, y, bandwidth=s)
    assert bandwidth == s
    assert value == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_two_halves_of_one_distribution_give_about_zero_shifted_give_clearly_more():
    rng = np.random.default_rng(1)
    sample = rng.standard_normal((400, 16))
    same = mmd(sample[:200], sample[200:])
    shifted = mmd(sample[:200], sample[200:] + 0.5)
    assert same < 0.05
    assert shifted > 0.2
    assert mmd(sample[:200], sample[200:] + 1.0) > shifted


def test_negative_unbiased_estimate_reports_zero():
    rng = np.random.default_rng(2)
    pairs = [(rng.standard_normal((30, 4)), rng.standard_normal((30, 4))) for _ in range(20)]
    negative = [(x, y) for x, y in pairs if mmd_squared(x, y)[0] < 0.0]
    assert negative, "the unbiased estimate goes below zero for samples of one distribution"
    assert all(mmd(x, y) == 0.0 for x, y in negative)


def test_too_few_samples_is_an_error():
    with pytest.raises(DataError):
        mmd(np.zeros((1, 3)), np.zeros((4, 3)))
