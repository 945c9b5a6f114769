"""Intervals: each metric's fast resample equals the metric of the resampled sets, FID∞'s jackknife and PRDC's
subsamples are what they say, and the intervals behave as a user relies on (seeded, narrower with more samples).
Their coverage is checked by simulation in test_coverage.py."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import wasserstein_distance

from prdit.data.normalization import Normalization
from prdit.evaluation.config import BootstrapConfig, KIDConfig
from prdit.evaluation.frechet import fid_from_features
from prdit.evaluation.hu_wasserstein import hu_bins, hu_histograms, hu_wasserstein
from prdit.evaluation.kid import kid, polynomial_kernel
from prdit.evaluation.mmd import mmd, mmd_unbiased
from prdit.evaluation.prdc import prdc
from prdit.evaluation.statistics import (fid_infinity, hu_wasserstein_resamples, interval, kid_resamples,
                                         mmd_resamples, pair_mean_resamples, paired_counts, prdc_subsamples,
                                         resample_counts, subsample_interval, subsample_size)
from prdit.evaluation.volumes import VolumeSet


@pytest.fixture()
def features():
    rng = np.random.default_rng(0)
    return rng.standard_normal((14, 20)), 1.1 * rng.standard_normal((11, 20)) + 0.3


@pytest.fixture()
def counts(features):
    """The identity resample first, then three random ones."""
    real, fake = features
    real_counts, fake_counts = paired_counts(len(real), len(fake), BootstrapConfig(resamples=3, seed=1))
    return (np.vstack([np.ones(len(real), int), real_counts]), np.vstack([np.ones(len(fake), int), fake_counts]))


def resampled(x: np.ndarray, c: np.ndarray) -> np.ndarray:
    return np.repeat(x, c, axis=0)


def test_resamples_are_draws_with_replacement_fixed_by_the_seed():
    counts = resample_counts(50, 200, np.random.default_rng(0))
    assert counts.shape == (200, 50) and (counts.sum(1) == 50).all()
    assert (counts > 1).any() and (counts == 0).any()  # duplicates and left-out items
    assert 0.6 < (counts > 0).mean() < 0.67  # 1 - 1/e of the items appear in a resample
    config = BootstrapConfig(resamples=4, seed=3)
    a, b = paired_counts(5, 7, config), paired_counts(5, 7, config)
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (paired_counts(5, 7, BootstrapConfig(resamples=4, seed=4))[0] == a[0]).all()


def test_fid_infinity_is_the_block_jackknife_of_fid():
    rng = np.random.default_rng(3)
    real, fake = rng.standard_normal((12, 4)), 1.1 * rng.standard_normal((9, 4)) + 0.3
    config = BootstrapConfig(fid_blocks=3, seed=2)
    entry = fid_infinity(real, fake, config)
    permutation = np.random.default_rng(2)
    blocks_real = np.array_split(permutation.permutation(12), 3)
    blocks_fake = np.array_split(permutation.permutation(9), 3)
    value = fid_from_features(real, fake)
    left_real = np.array([fid_from_features(np.delete(real, b, 0), fake) for b in blocks_real])
    left_fake = np.array([fid_from_features(real, np.delete(fake, b, 0)) for b in blocks_fake])
    assert entry["value"] == pytest.approx(value - 2 * (left_real.mean() - value) - 2 * (left_fake.mean() - value))
    error = np.sqrt(2 / 3 * (((left_real - left_real.mean()) ** 2).sum() + ((left_fake - left_fake.mean()) ** 2).sum()))
    assert entry["standard_error"] == pytest.approx(error)
    assert entry["high"] - entry["value"] == pytest.approx(entry["value"] - entry["low"])
    assert entry == fid_infinity(real, fake, config)  # seeded
    assert fid_infinity(real[:2], fake, config)["low"] is None  # a set less a block needs 2 features


def test_fid_infinity_removes_the_small_sample_bias_of_fid():
    # Two samples of one 8-d Gaussian: FID's expectation is about 2·8/N above the true 0, FID∞'s close to 0.
    rng = np.random.default_rng(4)
    n, fids, infinities = 48, [], []
    for _ in range(40):
        real, fake = rng.standard_normal((n, 8)), rng.standard_normal((n, 8))
        fids.append(fid_from_features(real, fake))
        infinities.append(fid_infinity(real, fake, BootstrapConfig())["value"])
    assert np.mean(fids) > 0.3 and abs(np.mean(infinities)) < 0.3 * np.mean(fids)


def positions(c: np.ndarray) -> np.ndarray:
    """The item of each draw of a resample with multiplicities ``c``."""
    return np.repeat(np.arange(len(c)), c)


def different_items(items: np.ndarray) -> np.ndarray:
    """Mask ``[n, n]`` of the ordered pairs of draws holding different items (a copy never pairs with its item)."""
    return items[:, None] != items[None, :]


def weighted_rank(values: np.ndarray, weights: np.ndarray, rank: int) -> float:
    order = np.argsort(values, kind="stable")
    return float(values[order][np.searchsorted(np.cumsum(weights[order]), rank, side="right")])


def mmd_of_draws(real: np.ndarray, fake: np.ndarray, c: np.ndarray, e: np.ndarray, unbiased: bool) -> float:
    """MMD over the draws themselves, copies never paired, from the resampled feature arrays."""
    r_items, f_items = positions(c), positions(e)
    x, y = real[r_items], fake[f_items]
    n, m = len(x), len(y)
    d_xx = ((x[:, None] - x[None]) ** 2).sum(-1)
    d_yy = ((y[:, None] - y[None]) ** 2).sum(-1)
    d_xy = ((x[:, None] - y[None]) ** 2).sum(-1)
    pairs_x, pairs_y = different_items(r_items), different_items(f_items)
    if unbiased:  # median over unordered pairs of different items
        median = np.median(d_xx[np.triu(pairs_x, k=1)])
    else:  # n self-pairs at 0, the n(n-1) ordered others represented by the pairs of different items
        values = np.concatenate([np.zeros(n), d_xx[pairs_x]])
        weights = np.concatenate([np.ones(n), np.full(pairs_x.sum(), n * (n - 1) / pairs_x.sum())])
        median = weighted_rank(values, weights, (n * n - 1) // 2)
    gamma = 1.0 / (2.0 * median)
    mean_x, mean_y = np.exp(-gamma * d_xx)[pairs_x].mean(), np.exp(-gamma * d_yy)[pairs_y].mean()
    if not unbiased:
        mean_x, mean_y = (1 + (n - 1) * mean_x) / n, (1 + (m - 1) * mean_y) / m
    return float(np.sqrt(max(mean_x + mean_y - 2.0 * np.exp(-gamma * d_xy).mean(), 0.0)))


@pytest.mark.parametrize("unbiased", [False, True])
def test_mmd_resamples_are_mmd_of_the_draws_with_copies_never_paired(features, counts, unbiased):
    real, fake = features
    values = mmd_resamples(real, fake, *counts, unbiased=unbiased)
    expected = [mmd_of_draws(real, fake, c, e, unbiased) for c, e in zip(*counts)]
    assert values == pytest.approx(expected, rel=1e-9)
    assert values[0] == pytest.approx((mmd_unbiased if unbiased else mmd)(real, fake), rel=1e-9)  # identity


def test_kid_resamples_are_the_unbiased_mmd2_of_the_draws_with_copies_never_paired(features):
    real, fake = features[0][:11], features[1]
    counts = paired_counts(11, 11, BootstrapConfig(resamples=4, seed=1))
    values = kid_resamples(real, fake, *counts)
    for value, c, e in zip(values, *counts):
        r_items, f_items = positions(c), positions(e)
        k_xx = polynomial_kernel(real[r_items], real[r_items])[different_items(r_items)].mean()
        k_yy = polynomial_kernel(fake[f_items], fake[f_items])[different_items(f_items)].mean()
        cross = polynomial_kernel(real[r_items], fake[f_items]).mean()
        assert value == pytest.approx(k_xx + k_yy - 2 * cross, rel=1e-9)
    # at identity multiplicities: KID itself (at most 1000 per set and as many real as generated: subsets = sets)
    ones = np.ones((1, 11), int)
    assert kid_resamples(real, fake, ones, ones)[0] == pytest.approx(kid(real, fake, KIDConfig(subsets=2))["value"],
                                                                      rel=1e-9)


def test_prdc_subsamples_are_prdc_of_subsets_drawn_without_replacement_balls_recomputed():
    rng = np.random.default_rng(5)
    real, fake = rng.standard_normal((40, 3)), rng.standard_normal((36, 3)) + 0.3
    config = BootstrapConfig(resamples=4, seed=2)
    values = prdc_subsamples(real, fake, config)
    draws = np.random.default_rng(2)
    for b in range(4):
        r, f = draws.choice(40, 30, replace=False), draws.choice(36, 27, replace=False)
        expected = prdc(real[r], fake[f])
        for name in ("precision", "recall", "density", "coverage"):
            assert values[name][b] == pytest.approx(expected[name], abs=1e-12), (b, name)
    assert subsample_size(40, config) == 30 and subsample_size(2, config) == 1
    # subsets too small for k = 5 neighbours: no values, and no interval
    small = prdc_subsamples(real[:7], fake[:7], config)
    assert np.isnan(small["coverage"]).all()
    assert subsample_interval(0.5, small["coverage"], 7, config)["low"] is None


def test_prdc_intervals_are_centred_on_their_point_estimates_and_scaled_to_the_full_sets():
    # The interval is the estimate ± z s.e.; the spread of subsets of 3/4 of the features is 1/3 the variance of
    # the estimate, so the standard error is sqrt(3) times the subsample spread.
    rng = np.random.default_rng(9)
    real, fake = rng.standard_normal((200, 8)), 0.8 * rng.standard_normal((200, 8)) + 0.4
    config = BootstrapConfig(resamples=50)
    point, values = prdc(real, fake), prdc_subsamples(real, fake, config)
    for name in ("precision", "recall", "density", "coverage"):
        top = np.inf if name == "density" else 1.0
        entry = subsample_interval(point[name], values[name], 200, config, (0.0, top))
        assert entry["standard_error"] == pytest.approx(values[name].std(ddof=1) * np.sqrt(150 / 50))
        assert entry["low"] < point[name] < entry["high"]
        assert entry["high"] - point[name] == pytest.approx(min(1.96 * entry["standard_error"], top - point[name]),
                                                            rel=1e-3)


def test_pair_means_weight_each_pair_by_the_pairs_of_resampled_volumes_it_stands_for():
    rng = np.random.default_rng(6)
    n = 6
    table = rng.uniform(size=(n, n))
    table = table + table.T
    pairs = np.array(np.triu_indices(n, k=1)).T
    counts = resample_counts(n, 20, rng)
    values = pair_mean_resamples(pairs, table[pairs[:, 0], pairs[:, 1]], counts)
    for b, c in enumerate(counts):
        volumes = np.repeat(np.arange(n), c)  # the resampled set; a volume and its own copy are no pair
        expected = np.mean([table[i, j] for i in volumes for j in volumes if i != j])
        assert values[b] == pytest.approx(expected, rel=1e-12)
    # a resample without any computed pair has no value
    assert np.isnan(pair_mean_resamples(pairs[:1], np.ones(1), np.array([[6, 0, 0, 0, 0, 0]])))[0]


def test_hu_wasserstein_is_the_1d_wasserstein_distance_of_the_binned_voxels(phantoms16):
    norm = Normalization()
    real, fake = VolumeSet(phantoms16[:3]), VolumeSet(np.clip(phantoms16[3:7] + 0.1, -1, 1))
    h_real, h_fake = hu_histograms(real, norm), hu_histograms(fake, norm)
    count, width = hu_bins(norm)
    assert h_real.shape == (3, count) and width == 1.0 and (h_real.sum(1) == 16**3).all()
    centres = norm.hu_min + width * (np.arange(count) + 0.5)
    value = hu_wasserstein(h_real, h_fake, norm)["value"]
    assert value == pytest.approx(wasserstein_distance(centres, centres, h_real.sum(0), h_fake.sum(0)), rel=1e-9)
    # within half a bin of the distance between the raw voxel values
    raw = wasserstein_distance(norm.to_hu(phantoms16[:3]).ravel(), norm.to_hu(fake.batch(range(4))).ravel())
    assert value == pytest.approx(raw, abs=0.5)
    counts_real, counts_fake = np.array([[2, 0, 1]]), np.array([[0, 1, 1, 2]])
    resample = hu_wasserstein_resamples(h_real, h_fake, counts_real, counts_fake, width)[0]
    assert resample == pytest.approx(hu_wasserstein(np.repeat(h_real, [2, 0, 1], axis=0),
                                                    np.repeat(h_fake, [0, 1, 1, 2], axis=0), norm)["value"], rel=1e-12)


def test_intervals_narrow_with_more_samples():
    rng = np.random.default_rng(7)
    config = BootstrapConfig(resamples=100, seed=0)
    widths = []
    for n in (40, 160):
        real, fake = rng.standard_normal((n, 8)), rng.standard_normal((n, 8)) + 0.2
        values = mmd_resamples(real, fake, *paired_counts(n, n, config), unbiased=True)
        entry = interval(values, config)
        widths.append(entry["high"] - entry["low"])
        assert entry["low"] <= mmd_unbiased(real, fake) <= entry["high"] and entry["used"] == 100
    assert widths[1] < 0.7 * widths[0]  # ~ 1/sqrt(N): half at 4x the samples


def test_intervals_of_two_samples_of_one_distribution_hold_the_point_estimate():
    # Pairing a draw with its own copy would add pairs at distance 0 to every resample: MMD and KID would shift
    # one way, and no interval would hold its point estimate.
    rng = np.random.default_rng(8)
    real, fake = rng.standard_normal((150, 16)), rng.standard_normal((150, 16))
    config = BootstrapConfig(resamples=100, seed=0)
    counts = paired_counts(150, 150, config)
    checks = {"MMD": (mmd(real, fake), mmd_resamples(real, fake, *counts)),
              "MMD unbiased": (mmd_unbiased(real, fake), mmd_resamples(real, fake, *counts, unbiased=True)),
              "KID": (kid(real, fake)["value"], kid_resamples(real, fake, *counts))}
    for name, (value, values) in checks.items():
        entry = interval(values, config)
        assert entry["low"] <= value <= entry["high"], name


def test_an_interval_leaves_out_resamples_without_a_value():
    entry = interval(np.array([1.0, np.nan, 2.0, 3.0]), BootstrapConfig(resamples=4, level=0.5))
    assert entry["used"] == 3 and entry["low"] == pytest.approx(1.5) and entry["high"] == pytest.approx(2.5)


def test_fid_infinity_is_withheld_where_the_covariances_are_rank_deficient():
    # with as many feature dimensions as features a set less one block, the jackknife's 1/N extrapolation fails
    # (its interval held the FID in 10 of 20 trials at d = N = 256): no value, no interval, and the reason
    from prdit.evaluation.statistics import fid_infinity

    rng = np.random.default_rng(0)
    real, fake = rng.standard_normal((64, 62)), rng.standard_normal((64, 62)) + 0.5
    entry = fid_infinity(real, fake, BootstrapConfig())
    assert entry["value"] is None and entry["low"] is None and "rank-deficient" in entry["note"]
    entry = fid_infinity(real[:, :61], fake[:, :61], BootstrapConfig())  # 64 less a block of 2: 62 features
    assert entry["value"] is not None and entry["low"] < entry["high"]
