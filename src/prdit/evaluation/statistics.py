"""Bootstrap confidence intervals of the set-level metrics (docs/method.md §17).

A number without its uncertainty cannot rank two models. The real and the generated set are
resampled independently with replacement, ``B`` times (200 by default, seeded); the metric is
recomputed on each pair of resamples, and the 2.5 and 97.5 percentiles of the ``B`` values
are the 95 % interval printed beside the point estimate on the full sets.

A resample of n items is held as multiplicities (``counts[i]`` copies of item i, summing to
n), and each metric is recomputed from what was computed once on the full sets — the Gram,
kernel and distance matrices of the features, the per-pair MS-SSIM values, the per-volume HU
histograms — so a resample costs a fraction of the metric itself. Every metric draws the same
resamples for a given seed and set sizes, so FID, MMD, KID and PRDC move together.

Two copies of one item in a resample are one item drawn twice: **they are never paired with
each other**. Metrics that average over pairs within a set (MMD, KID, MS-SSIM) average over pairs
of different items, each weighted by the number of pairs of draws it stands for. Pairing a draw
with its own copy would add a pair at distance 0 (kernel value 1, MS-SSIM 1) that no real sample
has, and bias every resample the same way: for two sets of one distribution the intervals of MMD
and KID would not even hold the point estimate. FID, a function of means and
covariances, has no pairs to leave out; fewer distinct samples raise its bias, so its interval
sits above the point estimate, as the note beside it says. Precision, recall, density and coverage
resample only the features tested against the other set's k-NN balls, whose radii stay those of
the full set: recomputed on a resample of fewer distinct items, every radius grows and all four
would be biased upwards. W(HU) pools voxels, with no pairs either. At identity multiplicities
every resample formula gives the point estimate.
"""

from __future__ import annotations

import numpy as np

from prdit.evaluation.config import BootstrapConfig, PRDCConfig
from prdit.evaluation.mmd import squared_distances

METHOD = ("percentile bootstrap: real and generated sets resampled independently with replacement, "
          "the metric recomputed on each pair of resamples")
FID_NOTE = "resampled sets hold duplicates, which biases FID upwards: the interval sits above the point estimate"
PAIRS_NOTE = "copies of one item in a resample are never paired with each other"
KID_NOTE = ("resamples score the unbiased MMD^2 of the whole resampled sets, which KID's random subsets estimate; "
            + PAIRS_NOTE)
PRDC_NOTE = ("the tested features resampled against the full other set's k-NN balls (precision, density: generated "
             "against real; recall, coverage: real against generated): the interval leaves out the spread of the "
             "balls themselves")


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


def fid_resamples(real: np.ndarray, fake: np.ndarray, real_counts: np.ndarray,
                  fake_counts: np.ndarray) -> np.ndarray:
    """FID of each pair of resamples ``[B]`` from features ``[N, F]``, ``[M, F]`` and multiplicities ``[B, N]``, ``[B, M]``.

    With N, M <= F (the usual case), from the Gram matrices: the centred cross product of the
    resampled sets, weighted by the square roots of the multiplicities, has the nuclear norm
    ``sqrt((N-1)(M-1)) tr((S1 S2)^(1/2))`` (frechet.py), over the distinct resampled items only.
    """
    from prdit.evaluation.frechet import fid_from_features

    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if max(len(real), len(fake)) > real.shape[1]:
        return np.array([fid_from_features(np.repeat(real, c, axis=0), np.repeat(fake, e, axis=0))
                         for c, e in zip(real_counts, fake_counts)])
    n1, n2 = len(real), len(fake)
    g11, g22, g12 = real @ real.T, fake @ fake.T, real @ fake.T
    values = np.empty(len(real_counts))
    for b, (c_all, e_all) in enumerate(zip(real_counts, fake_counts)):
        u1, u2 = np.flatnonzero(c_all), np.flatnonzero(e_all)
        c, e = c_all[u1].astype(np.float64), e_all[u2].astype(np.float64)
        cross = g12[np.ix_(u1, u2)]
        mean11 = c @ g11[np.ix_(u1, u1)] @ c / n1**2  # |mu1|^2
        mean22 = e @ g22[np.ix_(u2, u2)] @ e / n2**2
        mean12 = c @ cross @ e / (n1 * n2)
        trace1 = (c @ np.diag(g11)[u1] - n1 * mean11) / (n1 - 1)
        trace2 = (e @ np.diag(g22)[u2] - n2 * mean22) / (n2 - 1)
        centred = cross - (cross @ e / n2)[:, None] - (c @ cross / n1)[None, :] + mean12
        weighted = np.sqrt(c)[:, None] * centred * np.sqrt(e)[None, :]
        square = weighted @ weighted.T if len(u1) <= len(u2) else weighted.T @ weighted
        trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(square), 0.0, None)).sum() / np.sqrt((n1 - 1) * (n2 - 1))
        values[b] = max(mean11 + mean22 - 2.0 * mean12 + trace1 + trace2 - 2.0 * trace_sqrt, 0.0)
    return values


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


def prdc_resamples(real: np.ndarray, fake: np.ndarray, real_counts: np.ndarray, fake_counts: np.ndarray,
                   config: PRDCConfig = PRDCConfig()) -> dict[str, np.ndarray]:
    """Precision, recall, density and coverage of each pair of resamples, ``{name: [B]}``.

    Each is a mean over the features of one set tested against the other set's k-NN balls, and only
    the tested features are resampled: the balls stay those of the full sets, as in the point
    estimate. Precision and density resample the generated features against the real balls (the
    reference every row of a comparison shares); recall and coverage resample the real features (as
    points, and as balls) against the full generated set. Recomputing the balls on a resample would
    take fewer distinct items, each ball's k-th nearest neighbour farther away, and bias all four
    upwards; a mean of per-feature values resampled is centred on its point estimate.
    """
    from prdit.evaluation.prdc import pairwise_distances, per_feature

    per_fake, per_real = per_feature(pairwise_distances(real, real), pairwise_distances(fake, fake),
                                     pairwise_distances(real, fake), config)
    out = {name: fake_counts @ values / fake_counts.shape[1] for name, values in per_fake.items()}
    out.update({name: real_counts @ values / real_counts.shape[1] for name, values in per_real.items()})
    return {name: out[name].astype(np.float64) for name in ("precision", "recall", "density", "coverage")}


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
