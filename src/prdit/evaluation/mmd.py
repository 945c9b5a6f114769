"""Maximum mean discrepancy between feature sets, with an RBF kernel ``k(x, y) = exp(-γ‖x − y‖²)``.

Two estimates, both reported as ``sqrt(max(MMD², 0))``:

* :func:`mmd` — the published figure. ``γ = 1 / (2·median(‖x_i − x_j‖²))`` over *all* ordered
  pairs of real features, the zero self-distances included, the median taken as ``torch.median``
  takes it (N² pairs are an even count whenever N is: the lower middle value, not the mean of the
  two), and the biased V-statistic
  ``MMD² = mean(K_xx) + mean(K_yy) − 2·mean(K_xy)`` with the diagonals included. This is how
  the numbers in the PRDiT paper and its baselines were computed; only it is comparable with them.
* :func:`mmd_unbiased` — the U-statistic (diagonals left out), bandwidth the median distance
  between distinct real features. Unbiased, so it can dip below zero for one distribution.

With the bandwidth fixed by the real set, MMD² is bounded by 2 and saturates once the generated
features lie many bandwidths away from the real ones: it orders close models well, far-off ones poorly.
"""

from __future__ import annotations

import numpy as np

from prdit.errors import DataError


def published_gamma(real: np.ndarray) -> float:
    """``1 / (2·median(‖x_i − x_j‖²))`` over all ordered pairs of rows of ``[N, F]``, self-pairs included."""
    distances = squared_distances(real, real)
    np.fill_diagonal(distances, 0.0)  # a self-pair is exactly 0; the product formula can leave rounding there
    median = lower_median(distances)
    if median <= 0.0:
        raise DataError(f"the published MMD bandwidth is undefined for these {len(real)} real feature vectors: at "
                        "least half of the ordered pairs, self-pairs included, are at distance 0 (it needs 3 or "
                        "more distinct real volumes)")
    return 1.0 / (2.0 * median)


def lower_median(values: np.ndarray) -> float:
    """The median as ``torch.median`` takes it: for an even count the lower of the two middle values."""
    flat = np.sort(np.asarray(values, np.float64), axis=None)
    return float(flat[(flat.size - 1) // 2])


def median_bandwidth(features: np.ndarray) -> float:
    """Median Euclidean distance between distinct rows of ``[N, F]`` (the unbiased estimate's bandwidth)."""
    distances = squared_distances(features, features)[np.triu_indices(len(features), k=1)]
    if distances.size == 0:
        raise DataError("the median bandwidth needs at least 2 real feature vectors")
    bandwidth = float(np.sqrt(np.median(distances)))
    if bandwidth <= 0.0:
        raise DataError("the real feature vectors are all identical; the median bandwidth is 0")
    return bandwidth


def mmd_squared_biased(real: np.ndarray, fake: np.ndarray, gamma: float | None = None) -> tuple[float, float]:
    """The published V-statistic MMD² of ``[N, F]`` and ``[M, F]`` and the γ used (published median by default)."""
    real, fake = _checked(real, fake)
    gamma = published_gamma(real) if gamma is None else float(gamma)
    k_rr, k_ff, k_rf = _kernels(real, fake, gamma)
    return float(k_rr.mean() + k_ff.mean() - 2.0 * k_rf.mean()), gamma


def mmd_squared(real: np.ndarray, fake: np.ndarray, bandwidth: float | None = None) -> tuple[float, float]:
    """Unbiased MMD² between ``[N, F]`` and ``[M, F]`` and the bandwidth used (distinct-pair median by default)."""
    real, fake = _checked(real, fake)
    bandwidth = median_bandwidth(real) if bandwidth is None else float(bandwidth)
    k_rr, k_ff, k_rf = _kernels(real, fake, 1.0 / (2.0 * bandwidth**2))
    n, m = len(real), len(fake)
    within_real = (k_rr.sum() - np.trace(k_rr)) / (n * (n - 1))
    within_fake = (k_ff.sum() - np.trace(k_ff)) / (m * (m - 1))
    return float(within_real + within_fake - 2.0 * k_rf.mean()), bandwidth


def mmd(real: np.ndarray, fake: np.ndarray, gamma: float | None = None) -> float:
    """The published MMD: ``sqrt(max(MMD², 0))`` of the V-statistic with the published γ."""
    return float(np.sqrt(max(mmd_squared_biased(real, fake, gamma)[0], 0.0)))


def mmd_unbiased(real: np.ndarray, fake: np.ndarray, bandwidth: float | None = None) -> float:
    """``sqrt(max(MMD², 0))`` of the unbiased estimate."""
    return float(np.sqrt(max(mmd_squared(real, fake, bandwidth)[0], 0.0)))


def _checked(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if len(real) < 2 or len(fake) < 2:
        raise DataError(f"MMD needs at least 2 samples per set, got {len(real)} real and {len(fake)} generated")
    return real, fake


def _kernels(real: np.ndarray, fake: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return (np.exp(-gamma * squared_distances(real, real)), np.exp(-gamma * squared_distances(fake, fake)),
            np.exp(-gamma * squared_distances(real, fake)))


def squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``‖a_i − b_j‖²`` of the rows of ``[N, F]`` and ``[M, F]`` -> ``[N, M]`` (float64, never negative)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.clip(squared, 0.0, None)
