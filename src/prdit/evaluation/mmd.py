"""Maximum mean discrepancy between feature sets, with an RBF kernel.

k(x, y) = exp(-|x - y|^2 / (2 s^2)), the bandwidth s chosen by the median heuristic: the
median pairwise distance between distinct real feature vectors. MMD^2 is the unbiased
estimate (diagonal terms left out), which can be slightly negative when the sets come from
one distribution; the reported value is sqrt(max(MMD^2, 0)). With the bandwidth fixed by the
real set, MMD^2 is bounded by 2 and saturates once the generated features lie many
bandwidths away from the real ones: it orders close models well, far-off ones poorly.
"""

from __future__ import annotations

import numpy as np

from prdit.errors import DataError


def median_bandwidth(features: np.ndarray) -> float:
    """Median pairwise Euclidean distance between distinct rows of ``[N, F]``."""
    distances = _squared_distances(features, features)[np.triu_indices(len(features), k=1)]
    if distances.size == 0:
        raise DataError("the median bandwidth needs at least 2 real feature vectors")
    bandwidth = float(np.sqrt(np.median(distances)))
    if bandwidth <= 0.0:
        raise DataError("the real feature vectors are all identical; the median bandwidth is 0")
    return bandwidth


def mmd_squared(real: np.ndarray, fake: np.ndarray, bandwidth: float | None = None) -> tuple[float, float]:
    """Unbiased MMD^2 between ``[N, F]`` and ``[M, F]`` and the bandwidth used (median heuristic by default)."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if len(real) < 2 or len(fake) < 2:
        raise DataError(f"MMD needs at least 2 samples per set, got {len(real)} real and {len(fake)} generated")
    bandwidth = median_bandwidth(real) if bandwidth is None else float(bandwidth)
    gamma = 1.0 / (2.0 * bandwidth**2)
    k_rr = np.exp(-gamma * _squared_distances(real, real))
    k_ff = np.exp(-gamma * _squared_distances(fake, fake))
    k_rf = np.exp(-gamma * _squared_distances(real, fake))
    n, m = len(real), len(fake)
    within_real = (k_rr.sum() - np.trace(k_rr)) / (n * (n - 1))
    within_fake = (k_ff.sum() - np.trace(k_ff)) / (m * (m - 1))
    return float(within_real + within_fake - 2.0 * k_rf.mean()), bandwidth


def mmd(real: np.ndarray, fake: np.ndarray, bandwidth: float | None = None) -> float:
    """The reported MMD: sqrt(max(MMD^2, 0))."""
    return float(np.sqrt(max(mmd_squared(real, fake, bandwidth)[0], 0.0)))


def _squared_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.clip(squared, 0.0, None)
