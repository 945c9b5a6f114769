"""Confidence intervals of the set-level metrics (docs/method.md §17), each method checked by simulation.

A number without its uncertainty cannot rank two models, and an interval is only as good as its
coverage: tests/evaluation/test_coverage.py draws Gaussian feature clouds at N = 64 and 256 and
checks that every 95 % interval below holds its target in at least 90 % of 100 trials.

* **Percentile bootstrap** (KID, both MMDs, MS-SSIM, W(HU)): the real and generated sets are
  resampled independently with replacement, ``B`` times (200 by default, seeded); the metric is
  recomputed on each pair of resamples, and the 2.5 and 97.5 percentiles are the interval. A
  resample of n items is held as multiplicities (``counts[i]`` copies of item i, summing to n),
  and each metric is recomputed from what was computed once on the full sets (kernel and
  distance matrices, per-pair MS-SSIM values, per-volume HU histograms). Two copies of one item
  are one item drawn twice: **they are never paired with each other**. Metrics that average over
  pairs within a set average over pairs of different items, each weighted by the number of pairs
  of draws it stands for; a pair of copies would add a pair at distance 0 that no real sample
  has, and bias every resample the same way.
* **FID∞ by the delete-a-block jackknife** (FID): FID's bias shrinks like 1/N, and a resample with
  duplicates holds fewer distinct items, so a bootstrap of FID sits above the estimate and
  covers neither FID nor E[FID_N] (0 of 20 trials at d = 128, N = 100). Each set is split into
  ``g`` blocks (32, seeded), FID recomputed with one block left out of one set (2g values), and
  the jackknife extrapolates linearly in 1/N to N = ∞ (Chong & Forsyth's FID∞; the jackknife
  takes the two sizes N and N − N/g): ``FID∞ = FID − (g − 1)(mean_real − FID) − (g − 1)(mean_fake
  − FID)``, with the jackknife's standard error and a Student-t interval (g − 1 degrees of
  freedom). It estimates the FID of the two distributions, not FID at this N, so FID∞ of sets of
  different sizes compare, and a model's FID∞ can be ranked against another's where the
  intervals separate.
* **Subsampling** (precision, recall, density, coverage): their k-NN balls are what a resample
  disturbs. With replacement, copies at distance 0 shrink the radii and fewer distinct balls
  shrink the manifolds; kept fixed, the balls leave out the other set's spread. Instead both sets
  are subsampled without replacement to a fraction f (3/4) and all four recomputed, balls and
  all; the spread of a statistic over subsets of fN of N items is (1 − f)/f times its spread
  over samples of N, so the standard deviation of the ``B`` subsample values times
  sqrt(f / (1 − f)) is the standard error, and the interval is the estimate ± z times it.
"""

from __future__ import annotations

import numpy as np

from prdit.evaluation.config import BootstrapConfig, PRDCConfig
from prdit.evaluation.mmd import squared_distances

METHOD = ("percentile bootstrap: real and generated sets resampled independently with replacement, "
          "the metric recomputed on each pair of resamples")
FID_METHOD = ("FID-infinity by the delete-a-block jackknife: each set split into blocks, FID recomputed with one "
              "block left out, extrapolated linearly in 1/N to N = infinity; Student-t interval from the jackknife "
              "standard error")
FID_NOTE = ("FID at N is biased upwards by an amount that depends on N and on both sets, and no resampling interval "
            "holds it: the interval is FID-infinity's")
PRDC_METHOD = ("subsampling: both sets subsampled without replacement and all four recomputed, k-NN balls "
               "included; estimate +- z times the subsample spread scaled to N")
METHODS = {"fid": FID_METHOD, "prdc": PRDC_METHOD, "mmd": METHOD, "kid": METHOD, "msssim": METHOD,
           "hu_wasserstein": METHOD}
PAIRS_NOTE = "copies of one item in a resample are never paired with each other"
KID_NOTE = ("resamples score the unbiased MMD^2 of the whole resampled sets, which KID's random subsets estimate; "
            + PAIRS_NOTE)


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicities ``[B, n]`` of ``resamples`` draws of n items out of n with replacement."""
    draws = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n)


def paired_counts(n_real: int, n_fake: int, config: BootstrapConfig) -> tuple[np.ndarray, np.ndarray]:
    """The resamples of both sets: ``[B, n_real]`` and ``[B, n_fake]`` multiplicities, from ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    return resample_counts(n_real, config.resamples, rng), resample_counts(n_fake, config.resamples, rng)


def interval(values: np.ndarray, config: BootstrapConfig, note: str | None = None) -> dict:
    """The percentile interval of resampled values ``[B]``; non-finite ones (resamples without a value, e.g. too
    few distinct items for k neighbours) are left out, and with none left the bounds are None."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    tail = 50.0 * (1.0 - config.level)
    low, high = np.percentile(finite, [tail, 100.0 - tail]) if finite.size else (None, None)
    entry = {"low": None if low is None else float(low), "high": None if high is None else float(high),
             "level": config.level, "resamples": config.resamples, "used": int(finite.size), "seed": config.seed,
             "resample_mean": float(finite.mean()) if finite.size else None, "method": METHOD}
    if note is not None:
        entry["note"] = note
    return entry


# ---------------------------------------------------------------------------------------
# Feature metrics
# ---------------------------------------------------------------------------------------


RANK_NOTE = ("no FID-infinity: {d} feature dimensions against {kept} features a set less one block, so the "
             "covariances are rank-deficient; there FID's bias is not linear in 1/N and the jackknife does not cover "
             "(simulated at d = N = 256: 10 of 20 trials). Compare FID only between rows of the same N and features")


def fid_infinity(real: np.ndarray, fake: np.ndarray, config: BootstrapConfig) -> dict:
    """FID∞ of features ``[N, F]``, ``[M, F]`` by the delete-a-block jackknife, with its interval (None bounds
    with fewer than 3 features a set; no value either, and a note, where F is not below the features of a set less
    one block: the simulation that checks the interval's coverage fails there)."""
    from scipy import stats

    from prdit.evaluation.frechet import fid_from_features

    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    value = fid_from_features(real, fake)
    blocks = min(config.fid_blocks, len(real), len(fake))
    entry = {"value": value, "low": None, "high": None, "standard_error": None, "level": config.level,
             "blocks": blocks, "seed": config.seed, "method": FID_METHOD}
    if min(len(real), len(fake)) < 3:  # a set less one block needs 2 features for a covariance
        return entry
    fewest = min(len(real), len(fake)) - -(-min(len(real), len(fake)) // blocks)  # a set less its largest block
    if real.shape[1] >= fewest:
        return {**entry, "value": None, "note": RANK_NOTE.format(d=real.shape[1], kept=fewest)}
    rng = np.random.default_rng(config.seed)
    left_out = []
    for which, features in enumerate((real, fake)):
        values = []
        for block in np.array_split(rng.permutation(len(features)), blocks):
            kept = np.delete(features, block, axis=0)
            values.append(fid_from_features(kept, fake) if which == 0 else fid_from_features(real, kept))
        left_out.append(np.asarray(values))
    estimate = value - (blocks - 1) * sum(v.mean() - value for v in left_out)
    error = float(np.sqrt((blocks - 1) / blocks * sum(((v - v.mean()) ** 2).sum() for v in left_out)))
    half = stats.t.ppf(0.5 + config.level / 2, blocks - 1) * error
    return {**entry, "value": float(estimate), "low": float(estimate - half), "high": float(estimate + half),
            "standard_error": error}


def mmd_resamples(real: np.ndarray, fake: np.ndarray, real_counts: np.ndarray, fake_counts: np.ndarray,
                  unbiased: bool = False) -> np.ndarray:
    """MMD (``sqrt(max(MMD², 0))``) of each pair of resamples ``[B]``, bandwidth recomputed from each real resample.

    ``unbiased=False``: the published estimate (V-statistic with the n self-pairs, γ from torch's
    lower median over all ordered pairs, self-pairs included); ``True``: the U-statistic with the
    median distance between distinct items as bandwidth (mmd.py). The n(n−1) ordered pairs of
    different draws are represented by the pairs of different items (copies never pair).
    """
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    n1, n2 = len(real), len(fake)
    d11, d22, d12 = (squared_distances(a, b) for a, b in ((real, real), (fake, fake), (real, fake)))
    rows, cols = np.triu_indices(n1, k=1)
    order = np.argsort(d11[rows, cols], kind="stable")
    sorted_values, rows, cols = d11[rows, cols][order], rows[order], cols[order]
    values = np.empty(len(real_counts))
    for b, (c_all, e_all) in enumerate(zip(real_counts, fake_counts)):
        c_all, e_all = c_all.astype(np.float64), e_all.astype(np.float64)
        pairs_real = (n1 * n1 - (c_all**2).sum()) / 2  # unordered pairs of draws of different items
        pairs_fake = (n2 * n2 - (e_all**2).sum()) / 2
        if min(pairs_real, pairs_fake) == 0:  # a set drawn as copies of one item: no pairs
            values[b] = np.nan
            continue
        cumulative = np.cumsum(c_all[rows] * c_all[cols])
        if unbiased:
            median = float(np.mean([_rank_value(sorted_values, cumulative, rank) for rank in
                                    sorted({int((pairs_real - 1) // 2), int(pairs_real // 2)})]))
        else:
            # n zero self-distances first, then the n(n-1) ordered pairs: each unordered pair of items stands for
            # c_a c_b of the pairs_real pairs of different draws, scaled to the n(n-1)/2 of the full set
            scale = n1 * (n1 - 1) / 2 / pairs_real
            median = _rank_value(sorted_values, 2.0 * scale * cumulative, (n1 * n1 - 1) // 2 - n1)
        if median <= 0.0:
            values[b] = np.nan
            continue
        gamma = 1.0 / (2.0 * median)
        u1, u2 = np.flatnonzero(c_all), np.flatnonzero(e_all)
        c, e = c_all[u1], e_all[u2]
        within_real = _pair_sum(np.exp(-gamma * d11[np.ix_(u1, u1)]), c)
        within_fake = _pair_sum(np.exp(-gamma * d22[np.ix_(u2, u2)]), e)
        cross = c @ np.exp(-gamma * d12[np.ix_(u1, u2)]) @ e / (n1 * n2)
        mean_real, mean_fake = within_real / (2 * pairs_real), within_fake / (2 * pairs_fake)
        if unbiased:
            squared = mean_real + mean_fake - 2.0 * cross
        else:  # the n self-pairs (kernel 1) and the n(n-1) others at the mean of pairs of different items
            squared = ((n1 + n1 * (n1 - 1) * mean_real) / n1**2 + (n2 + n2 * (n2 - 1) * mean_fake) / n2**2
                       - 2.0 * cross)
        values[b] = np.sqrt(max(squared, 0.0))
    return values


def kid_resamples(real: np.ndarray, fake: np.ndarray, real_counts: np.ndarray, fake_counts: np.ndarray) -> np.ndarray:
    """KID's estimand of each pair of resamples ``[B]``: the unbiased polynomial-kernel MMD² over the whole
    resampled sets, copies never paired (what KID's random subsets average to; KID itself when both sets have
    at most 1000 features and no copies)."""
    from prdit.evaluation.kid import polynomial_kernel

    k11, k22, k12 = polynomial_kernel(real, real), polynomial_kernel(fake, fake), polynomial_kernel(real, fake)
    n1, n2 = real_counts.shape[1], fake_counts.shape[1]
    c, e = real_counts.astype(np.float64), fake_counts.astype(np.float64)
    within_real = ((c @ k11) * c).sum(1) - (c**2) @ np.diag(k11)
    within_fake = ((e @ k22) * e).sum(1) - (e**2) @ np.diag(k22)
    cross = ((c @ k12) * e).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (within_real / (n1 * n1 - (c**2).sum(1)) + within_fake / (n2 * n2 - (e**2).sum(1))
                - 2.0 * cross / (n1 * n2))


def prdc_subsamples(real: np.ndarray, fake: np.ndarray, config: BootstrapConfig,
                    prdc_config: PRDCConfig = PRDCConfig()) -> dict[str, np.ndarray]:
    """Precision, recall, density and coverage of ``config.resamples`` pairs of subsets ``{name: [B]}``: each set
    subsampled without replacement to ``config.subsample_fraction`` of its features, the balls recomputed on the
    subsets (NaN where a subset has too few features for k neighbours)."""
    from prdit.evaluation.prdc import pairwise_distances, per_feature

    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    names = ("precision", "recall", "density", "coverage")
    sizes = [subsample_size(len(real), config), subsample_size(len(fake), config)]
    if min(sizes) <= max(prdc_config.k_precision_recall, prdc_config.k_density_coverage):
        return {name: np.full(config.resamples, np.nan) for name in names}
    real_real, fake_fake = pairwise_distances(real, real), pairwise_distances(fake, fake)
    real_fake = pairwise_distances(real, fake)
    rng = np.random.default_rng(config.seed)
    out = {name: np.empty(config.resamples) for name in names}
    for b in range(config.resamples):
        r, f = rng.choice(len(real), sizes[0], replace=False), rng.choice(len(fake), sizes[1], replace=False)
        per_fake, per_real = per_feature(real_real[np.ix_(r, r)], fake_fake[np.ix_(f, f)], real_fake[np.ix_(r, f)],
                                         prdc_config)
        for name, values in {**per_fake, **per_real}.items():
            out[name][b] = values.mean()
    return out


def subsample_size(n: int, config: BootstrapConfig) -> int:
    """Items in a subsample of n: ``subsample_fraction`` of them, at least 1 and at most n - 1."""
    return min(max(int(round(config.subsample_fraction * n)), 1), n - 1)


def subsample_interval(value: float, values: np.ndarray, n: int, config: BootstrapConfig,
                       bounds: tuple[float, float] = (0.0, np.inf)) -> dict:
    """The normal interval ``value ± z·s.e.`` with the standard error from subsample values ``[B]`` of subsets of
    ``subsample_size(n)`` of n items, clipped to the metric's ``bounds``; None bounds where no subsample has a value."""
    from scipy import stats

    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    m = subsample_size(n, config)
    entry = {"low": None, "high": None, "standard_error": None, "level": config.level, "resamples": config.resamples,
             "used": int(finite.size), "seed": config.seed, "subsample_size": m, "method": PRDC_METHOD}
    if finite.size < 2:
        return entry
    error = float(finite.std(ddof=1) * np.sqrt(m / (n - m)))
    half = stats.norm.ppf(0.5 + config.level / 2) * error
    return {**entry, "low": float(max(value - half, bounds[0])), "high": float(min(value + half, bounds[1])),
            "standard_error": error}


# ---------------------------------------------------------------------------------------
# Volume metrics
# ---------------------------------------------------------------------------------------


def pair_mean_resamples(pairs: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean of per-pair values ``[P]`` over pairs ``[P, 2]`` of different volumes, each pair weighted by the product
    of its volumes' multiplicities ``[B, N]`` -> ``[B]`` (NaN where no computed pair has both volumes drawn)."""
    weights = counts[:, pairs[:, 0]] * counts[:, pairs[:, 1]].astype(np.float64)
    total = weights.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, weights @ values / total, np.nan)


def hu_wasserstein_resamples(real_histograms: np.ndarray, fake_histograms: np.ndarray, real_counts: np.ndarray,
                             fake_counts: np.ndarray, bin_width: float) -> np.ndarray:
    """W(HU) of each pair of resamples ``[B]``: the pooled histograms are the multiplicity-weighted sums."""
    from prdit.evaluation.hu_wasserstein import wasserstein_between_histograms

    real = real_counts.astype(np.float64) @ real_histograms
    fake = fake_counts.astype(np.float64) @ fake_histograms
    return wasserstein_between_histograms(real, fake, bin_width)


def _rank_value(sorted_values: np.ndarray, cumulative_weights: np.ndarray, rank: float) -> float:
    """The element of 0-based ``rank`` in the multiset holding each sorted value as often as its weight
    (``rank < 0``: one of the zeros in front of the sorted values)."""
    if rank < 0:
        return 0.0
    return float(sorted_values[np.searchsorted(cumulative_weights, rank, side="right")])


def _pair_sum(kernel: np.ndarray, counts: np.ndarray) -> float:
    """``Σ_{a≠b} c_a c_b K[a, b]``: the kernel over ordered pairs of draws of different items."""
    return float(counts @ kernel @ counts - (counts**2) @ np.diag(kernel))
