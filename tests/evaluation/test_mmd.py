"""MMD: the published V-statistic with the all-pairs median γ, and the unbiased estimate beside it."""

from __future__ import annotations

import numpy as np
import pytest

from prdit.errors import DataError
from prdit.evaluation.mmd import (median_bandwidth, mmd, mmd_squared, mmd_squared_biased, mmd_unbiased,
                                  published_gamma)


def test_published_mmd_against_a_hand_computation():
    # Real features 0, 1, 3 and generated 1, 2 on a line. Squared distances among the real ones over
    # all 9 ordered pairs: 0, 0, 0, 1, 1, 4, 4, 9, 9 -> median 1 -> gamma = 1/2.
    real, fake = np.array([[0.0], [1.0], [3.0]]), np.array([[1.0], [2.0]])
    assert published_gamma(real) == pytest.approx(0.5)
    e = np.exp
    k_rr = (3 + 2 * e(-0.5) + 2 * e(-2.0) + 2 * e(-4.5)) / 9
    k_ff = (2 + 2 * e(-0.5)) / 4
    k_rf = (e(-0.5) + e(-2.0) + 1 + e(-0.5) + e(-2.0) + e(-0.5)) / 6
    expected = k_rr + k_ff - 2 * k_rf
    value, gamma = mmd_squared_biased(real, fake)
    assert gamma == pytest.approx(0.5)
    assert value == pytest.approx(expected, rel=1e-12)
    assert mmd(real, fake) == pytest.approx(np.sqrt(expected), rel=1e-12)
    # The unbiased estimate of the same sets, by hand: bandwidth = median of 1, 3, 2 (distinct pairs) = 2.
    g = 1 / 8
    unbiased = (2 * (e(-g) + e(-9 * g) + e(-4 * g)) / 6 + 2 * e(-g) / 2
                - 2 * (e(-g) + e(-4 * g) + 1 + e(-g) + e(-4 * g) + e(-g)) / 6)
    assert mmd_squared(real, fake)[0] == pytest.approx(unbiased, rel=1e-12)
    assert mmd_unbiased(real, fake) == pytest.approx(np.sqrt(max(unbiased, 0.0)), rel=1e-12)


def test_published_mmd_takes_torchs_lower_median_like_the_published_script():
    # N² ordered pairs is an even count: torch's median is the lower middle value, numpy's the mean of the two.
    import torch

    rng = np.random.default_rng(5)
    real, fake = rng.standard_normal((6, 8)), rng.standard_normal((7, 8)) + 0.3
    x, y = torch.from_numpy(real), torch.from_numpy(fake)
    squared = torch.cdist(x, x) ** 2
    assert float(squared.median()) < float(np.median(squared.numpy())) - 0.1  # the two medians differ here
    gamma = 1.0 / (2.0 * squared.median())

    def kernel(a, b):
        return torch.exp(-gamma * torch.cdist(a, b) ** 2)

    published = torch.sqrt(torch.clamp(kernel(x, x).mean() + kernel(y, y).mean() - 2.0 * kernel(x, y).mean(), min=0.0))
    assert published_gamma(real) == pytest.approx(float(gamma), abs=1e-9)
    assert mmd(real, fake) == pytest.approx(float(published), abs=1e-6)


def test_published_estimate_is_never_below_zero_and_exceeds_the_unbiased_one():
    rng = np.random.default_rng(3)
    for _ in range(10):
        x, y = rng.standard_normal((20, 4)), rng.standard_normal((20, 4))
        biased, gamma = mmd_squared_biased(x, y)
        assert biased >= 0.0  # a V-statistic is a squared norm of mean embeddings
        assert biased > mmd_squared(x, y, bandwidth=np.sqrt(1 / (2 * gamma)))[0]


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


@pytest.mark.parametrize("estimate", [mmd, mmd_unbiased])
def test_two_halves_of_one_distribution_give_about_zero_shifted_give_clearly_more(estimate):
    rng = np.random.default_rng(1)
    sample = rng.standard_normal((400, 16))
    same = estimate(sample[:200], sample[200:])
    shifted = estimate(sample[:200], sample[200:] + 0.5)
    assert same < 0.1
    assert shifted > 0.2
    assert estimate(sample[:200], sample[200:] + 1.0) > shifted


def test_negative_unbiased_estimate_reports_zero():
    rng = np.random.default_rng(2)
    pairs = [(rng.standard_normal((30, 4)), rng.standard_normal((30, 4))) for _ in range(20)]
    negative = [(x, y) for x, y in pairs if mmd_squared(x, y)[0] < 0.0]
    assert negative, "the unbiased estimate goes below zero for samples of one distribution"
    assert all(mmd_unbiased(x, y) == 0.0 for x, y in negative)


def test_too_few_samples_is_an_error():
    with pytest.raises(DataError):
        mmd(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(DataError):
        mmd_unbiased(np.zeros((4, 3)), np.zeros((1, 3)))


def test_the_published_mmd_of_two_real_volumes_is_undefined_whatever_the_rounding():
    # Two of the four ordered pairs are self-pairs: the lower median is exactly 0. The product formula of the
    # distances leaves rounding on the diagonal, which made the bandwidth 1/(2·residue) or an error by chance.
    import math

    from prdit.evaluation.report import _mmd

    rng = np.random.default_rng(3)
    for scale in (1.0, 1e3):
        real, fake = scale * rng.uniform(size=(2, 64)), scale * rng.uniform(size=(5, 64))
        with pytest.raises(DataError, match="3 or more distinct real volumes"):
            published_gamma(real)
        warnings = []
        entry = _mmd(real, fake, comparable=False, report_warnings=warnings)
        assert math.isnan(entry["value"]) and "skipped" in entry and entry["gamma"] is None
        assert warnings and "published MMD left out" in warnings[0]
        assert math.isfinite(entry["unbiased"]["value"])  # one distinct pair is enough for its bandwidth
    assert published_gamma(rng.uniform(size=(3, 64))) > 0
