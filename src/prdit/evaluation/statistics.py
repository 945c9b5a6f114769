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

What a resample means for each metric:

* **FID, MMD, KID, PRDC, W(HU)**: the metric of the resampled sets, duplicates and all. A
  duplicate narrows a set's spread: FID of resamples is biased upwards (the interval sits
  above the point estimate), and k-NN radii shrink. The report gives the mean of the resamples
  beside the interval, so the shift is visible. KID's resample value is the unbiased MMD² over
  the whole resampled sets — what KID's random subsets estimate (exactly KID when N ≤ 1000).
* **MS-SSIM diversity** (one set, a mean over pairs of its volumes): volumes are resampled,
  and each computed pair (i, j) enters the resample's mean with weight c_i·c_j, the number of
  pairs of resampled volumes it stands for; a volume paired with its own copy is left out (its
  MS-SSIM is 1 and says nothing about diversity). Resampling the per-pair values instead would
  treat pairs as independent, though pairs sharing a volume are not, and give too narrow an
  interval.
"""

from __future__ import annotations

import numpy as np

from prdit.evaluation.config import BootstrapConfig, PRDCConfig

METHOD = ("percentile bootstrap: real and generated sets resampled independently with replacement, "
          "the metric recomputed on each pair of resamples")
FID_NOTE = "resampled sets hold duplicates, which biases FID upwards: the interval sits above the point estimate"
KID_NOTE = "resamples score the unbiased MMD^2 of the whole resampled sets, which KID's random subsets estimate"
PRDC_NOTE = "a resampled feature's copies are its nearest neighbours at distance 0, which shrinks k-NN radii"
MSSSIM_NOTE = ("volumes resampled; each computed pair weighted by the product of its volumes' multiplicities, a "
               "volume and its own copy being no pair")


def resample_counts(n: int, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicities ``[B, n]`` of ``resamples`` draws of n items out of n with replacement."""
    draws = rng.integers(0, n, size=(resamples, n)) + n * np.arange(resamples)[:, None]
    return np.bincount(draws.ravel(), minlength=resamples * n).reshape(resamples, n)


def paired_counts(n_real: int, n_fake: int, config: BootstrapConfig) -> tuple[np.ndarray, np.ndarray]:
    """The resamples of both sets: ``[B, n_real]`` and ``[B, n_fake]`` multiplicities, from ``config.seed``."""
    rng = np.random.default_rng(config.seed)
    return resample_counts(n_real, config.resamples, rng), resample_counts(n_fake, config.resamples, rng)


def interval(values: np.ndarray, config: BootstrapConfig, note: str | None = None) -> dict:
    """The percentile interval of resampled values ``[B]`` (non-finite ones, resamples without a value, left out)."""
    values = np.asarray(values, np.float64)
    finite = values[np.isfinite(values)]
    tail = 50.0 * (1.0 - config.level)
    low, high = np.percentile(finite, [tail, 100.0 - tail]) if finite.size else (np.nan, np.nan)
    entry = {"low": float(low), "high": float(high), "level": config.level, "resamples": config.resamples,
             "used": int(finite.size), "seed": config.seed, "resample_mean": float(finite.mean()) if finite.size
             else float("nan"), "method": METHOD}
    if note is not None:
        entry["note"] = note
    return entry


# ---------------------------------------------------------------------------------------
# Feature metrics
# ---------------------------------------------------------------------------------------


def fid_resamples(real: np.ndarray, fake: np.ndarray, real_counts: np.ndarray, fake_counts: np.ndarray) -> np.ndarray:
    """FID of each pair of resamples ``[B]``, from features ``[N, F]``, ``[M, F]`` and multiplicities ``[B, N]``, ``[B, M]``.

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

    ``unbiased=False``: the published estimate (V-statistic, γ from torch's lower median over all
    ordered pairs, self-pairs included); ``True``: the U-statistic with the median distance between
    distinct positions of the real resample as bandwidth (mmd.py).
    """
    from prdit.evaluation.prdc import pairwise_distances

    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    n1, n2 = len(real), len(fake)
    d11, d22, d12 = (pairwise_distances(a, b) ** 2 for a, b in ((real, real), (fake, fake), (real, fake)))
    if unbiased:
        rows, cols = np.triu_indices(n1, k=1)
    else:
        rows, cols = (index.ravel() for index in np.indices((n1, n1)))
    order = np.argsort(d11[rows, cols], kind="stable")
    sorted_values, rows, cols = d11[rows, cols][order], rows[order], cols[order]
    values = np.empty(len(real_counts))
    for b, (c_all, e_all) in enumerate(zip(real_counts, fake_counts)):
        c_all = c_all.astype(np.float64)
        cumulative = np.cumsum(c_all[rows] * c_all[cols])
        if unbiased:
            # pairs of positions holding copies of one item: distance 0, before every sorted value
            zeros = float((c_all * (c_all - 1)).sum() / 2)
            total = n1 * (n1 - 1) / 2
            median = float(np.mean([_rank_value(sorted_values, cumulative, rank - zeros) for rank in
                                    sorted({int((total - 1) // 2), int(total // 2)})]))
        else:
            median = _rank_value(sorted_values, cumulative, (n1 * n1 - 1) // 2)
        if median <= 0.0:  # most of the real resample is copies of one feature: no bandwidth, no value
            values[b] = np.nan
            continue
        gamma = 1.0 / (2.0 * median)
        u1, u2 = np.flatnonzero(c_all), np.flatnonzero(e_all)
        c, e = c_all[u1], e_all[u2].astype(np.float64)
        k11 = c @ np.exp(-gamma * d11[np.ix_(u1, u1)]) @ c
        k22 = e @ np.exp(-gamma * d22[np.ix_(u2, u2)]) @ e
        k12 = c @ np.exp(-gamma * d12[np.ix_(u1, u2)]) @ e
        if unbiased:  # leave out the position diagonals, whose kernel value is exp(0) = 1
            squared = (k11 - n1) / (n1 * (n1 - 1)) + (k22 - n2) / (n2 * (n2 - 1)) - 2.0 * k12 / (n1 * n2)
        else:
            squared = k11 / n1**2 + k22 / n2**2 - 2.0 * k12 / (n1 * n2)
        values[b] = np.sqrt(max(squared, 0.0))
    return values


def kid_resamples(real: np.ndarray, fake: np.ndarray, real_counts: np.ndarray, fake_counts: np.ndarray) -> np.ndarray:
    """KID's estimand of each pair of resamples ``[B]``: the unbiased polynomial-kernel MMD² over the whole
    resampled sets (what KID's random subsets average to; KID itself when both sets have at most 1000)."""
    from prdit.evaluation.kid import polynomial_kernel

    k11, k22, k12 = polynomial_kernel(real, real), polynomial_kernel(fake, fake), polynomial_kernel(real, fake)
    n1, n2 = real_counts.shape[1], fake_counts.shape[1]
    c, e = real_counts.astype(np.float64), fake_counts.astype(np.float64)
    within_real = ((c @ k11) * c).sum(1) - c @ np.diag(k11)
    within_fake = ((e @ k22) * e).sum(1) - e @ np.diag(k22)
    cross = ((c @ k12) * e).sum(1)
    return within_real / (n1 * (n1 - 1)) + within_fake / (n2 * (n2 - 1)) - 2.0 * cross / (n1 * n2)


def prdc_resamples(real: np.ndarray, fake: np.ndarray, real_counts: np.ndarray, fake_counts: np.ndarray,
                   config: PRDCConfig = PRDCConfig()) -> dict[str, np.ndarray]:
    """Precision, recall, density and coverage of each pair of resamples, ``{name: [B]}``.

    Radii count a resampled item's copies as its nearest neighbours (at distance 0), as the
    reference code does on a set holding duplicates.
    """
    from prdit.evaluation.prdc import pairwise_distances

    d11, d22, d12 = pairwise_distances(real, real), pairwise_distances(fake, fake), pairwise_distances(real, fake)
    n1, n2 = real_counts.shape[1], fake_counts.shape[1]
    k_pr, k_dc = config.k_precision_recall, config.k_density_coverage
    out = {name: np.empty(len(real_counts)) for name in ("precision", "recall", "density", "coverage")}
    for b, (c_all, e_all) in enumerate(zip(real_counts, fake_counts)):
        u1, u2 = np.flatnonzero(c_all), np.flatnonzero(e_all)
        c, e = c_all[u1], e_all[u2]
        real_radii = _resampled_radii(d11[np.ix_(u1, u1)], c, (k_pr, k_dc))
        fake_radii = _resampled_radii(d22[np.ix_(u2, u2)], e, (k_pr,))
        cross = d12[np.ix_(u1, u2)]
        inside_pr = cross < real_radii[k_pr][:, None]
        inside_dc = cross < real_radii[k_dc][:, None]
        out["precision"][b] = e @ inside_pr.any(axis=0) / n2
        out["recall"][b] = c @ (cross < fake_radii[k_pr][None, :]).any(axis=1) / n1
        out["density"][b] = (c @ inside_dc) @ e / (k_dc * n2)
        out["coverage"][b] = c @ inside_dc.any(axis=1) / n1
    return out


# ---------------------------------------------------------------------------------------
# Volume metrics
# ---------------------------------------------------------------------------------------


def pair_mean_resamples(pairs: np.ndarray, values: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Mean of per-pair values ``[P]`` over pairs ``[P, 2]`` of volumes, each pair weighted by the product of its
    volumes' multiplicities ``[B, N]`` -> ``[B]`` (NaN where no computed pair has both volumes drawn)."""
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


def _resampled_radii(distances: np.ndarray, counts: np.ndarray, ks: tuple[int, ...]) -> dict[int, np.ndarray]:
    """k-NN radii ``{k: [U]}`` of distinct items with multiplicities: the (k+1)-th smallest distance from an item
    to the resampled set, where its own ``counts[i]`` copies sit at distance 0."""
    largest = max(ks)
    own = np.eye(len(counts), dtype=bool)
    # the item itself first (all its copies at 0), then its nearest distinct neighbours, each as many times as drawn
    ordered = np.where(own, -1.0, distances)
    nearest = min(largest + 1, len(counts))
    index = np.argpartition(ordered, nearest - 1, axis=1)[:, :nearest]
    value = np.take_along_axis(ordered, index, axis=1)
    sort = np.argsort(value, axis=1)
    index, value = np.take_along_axis(index, sort, axis=1), np.take_along_axis(value, sort, axis=1)
    reach = np.cumsum(counts[index], axis=1)
    radii = {}
    for k in ks:
        position = np.minimum((reach < k + 1).sum(axis=1), nearest - 1)
        radii[k] = np.maximum(np.take_along_axis(value, position[:, None], axis=1)[:, 0], 0.0)
    return radii

