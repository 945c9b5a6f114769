"""Bootstrap intervals: each metric's fast resample equals the metric of the resampled sets, and the
intervals behave as a user relies on (seeded, narrower with more samples, FID's upward shift)."""

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
from prdit.evaluation.statistics import (fid_resamples, hu_wasserstein_resamples, interval, kid_resamples,
                                         mmd_resamples, pair_mean_resamples, paired_counts, prdc_resamples,
                                         resample_counts)
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


def test_fid_resamples_equal_fid_of_the_resampled_sets(features, counts):
    real, fake = features
    values = fid_resamples(real, fake, *counts)
    expected = [fid_from_features(resampled(real, c), resampled(fake, e)) for c, e in zip(*counts)]
    assert values == pytest.approx(expected, rel=1e-8)
    # more samples than dimensions: the covariance route
    small = fid_resamples(real[:, :5], fake[:, :5], *counts)
    assert small == pytest.approx([fid_from_features(resampled(real[:, :5], c), resampled(fake[:, :5], e))
                                   for c, e in zip(*counts)], rel=1e-10)


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


def test_prdc_resamples_count_the_tested_features_as_drawn_against_the_full_sets_balls():
    rng = np.random.default_rng(5)
    real, fake = rng.standard_normal((40, 3)), rng.standard_normal((35, 3)) + 0.3
    real_counts, fake_counts = paired_counts(40, 35, BootstrapConfig(resamples=6, seed=2))
    values = prdc_resamples(real, fake, real_counts, fake_counts)

    def radii(centres: np.ndarray, k: int) -> np.ndarray:
        return np.array([np.sort(np.linalg.norm(centres - p, axis=1))[k] for p in centres])  # [0]: the point

    def inside(point: np.ndarray, centres: np.ndarray, radius: np.ndarray) -> np.ndarray:
        return np.linalg.norm(centres - point, axis=1) < radius

    x3, x5, y3 = radii(real, 3), radii(real, 5), radii(fake, 3)  # the balls of the full sets, never resampled
    for b, (c, e) in enumerate(zip(real_counts, fake_counts)):
        draws_x, draws_y = real[positions(c)], fake[positions(e)]
        expected = {"precision": np.mean([inside(p, real, x3).any() for p in draws_y]),
                    "recall": np.mean([inside(p, fake, y3).any() for p in draws_x]),
                    "density": np.mean([inside(p, real, x5).sum() for p in draws_y]) / 5,
                    "coverage": np.mean([(np.linalg.norm(fake - real[i], axis=1) < x5[i]).any()
                                         for i in positions(c)])}
        for name, value in expected.items():
            assert values[name][b] == pytest.approx(value, abs=1e-12), (b, name)
    ones = (np.ones((1, 40), int), np.ones((1, 35), int))
    identity, point = prdc_resamples(real, fake, *ones), prdc(real, fake)
    for name in ("precision", "recall", "density", "coverage"):
        assert identity[name][0] == pytest.approx(point[name], abs=1e-12)


def test_prdc_intervals_are_centred_on_their_point_estimates():
    # Balls recomputed on a resample (about 63 % distinct items) grow, and every resample of precision and
    # recall came out above the estimate on the full sets: 0.113 [0.090, 0.223] on a real benchmark row.
    rng = np.random.default_rng(9)
    real, fake = rng.standard_normal((200, 8)), 0.8 * rng.standard_normal((200, 8)) + 0.4
    point, values = prdc(real, fake), prdc_resamples(real, fake, *paired_counts(200, 200, BootstrapConfig()))
    for name in ("precision", "recall", "density", "coverage"):
        spread = values[name].std()
        assert abs(values[name].mean() - point[name]) < 0.3 * spread, name


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


def test_intervals_narrow_with_more_samples_and_sit_above_fid():
    rng = np.random.default_rng(7)
    config = BootstrapConfig(resamples=100, seed=0)
    widths, fids = [], []
    for n in (40, 160):
        real, fake = rng.standard_normal((n, 8)), rng.standard_normal((n, 8)) + 0.2
        values = mmd_resamples(real, fake, *paired_counts(n, n, config), unbiased=True)
        entry = interval(values, config)
        widths.append(entry["high"] - entry["low"])
        assert entry["low"] <= mmd_unbiased(real, fake) <= entry["high"] and entry["used"] == 100
        point = fid_from_features(real[:, :4], fake[:, :4])
        fids.append((point, interval(fid_resamples(real[:, :4], fake[:, :4], *paired_counts(n, n, config)), config)))
    assert widths[1] < 0.7 * widths[0]  # ~ 1/sqrt(N): half at 4x the samples
    for point, entry in fids:
        assert entry["resample_mean"] > point  # duplicates bias FID upwards


def test_intervals_of_two_samples_of_one_distribution_hold_the_point_estimate():
    # Pairing a draw with its own copy would add pairs at distance 0 to every resample: MMD, KID and the k-NN
    # radii would all shift one way, and no interval would hold its point estimate.
    rng = np.random.default_rng(8)
    real, fake = rng.standard_normal((150, 16)), rng.standard_normal((150, 16))
    config = BootstrapConfig(resamples=100, seed=0)
    counts = paired_counts(150, 150, config)
    checks = {"MMD": (mmd(real, fake), mmd_resamples(real, fake, *counts)),
              "MMD unbiased": (mmd_unbiased(real, fake), mmd_resamples(real, fake, *counts, unbiased=True)),
              "KID": (kid(real, fake)["value"], kid_resamples(real, fake, *counts))}
    point, resampled = prdc(real, fake), prdc_resamples(real, fake, *counts)
    checks.update({name: (point[name], resampled[name]) for name in resampled})
    for name, (value, values) in checks.items():
        entry = interval(values, config)
        assert entry["low"] <= value <= entry["high"], name


def test_an_interval_leaves_out_resamples_without_a_value():
    entry = interval(np.array([1.0, np.nan, 2.0, 3.0]), BootstrapConfig(resamples=4, level=0.5))
    assert entry["used"] == 3 and entry["low"] == pytest.approx(1.5) and entry["high"] == pytest.approx(2.5)
