"""Kernel Inception Distance (Bińkowski et al. 2018) on the evaluation's features.

KID is the unbiased estimate of MMD² with the cubic polynomial kernel

    k(x, y) = (xᵀy / d + 1)³          (d: the feature dimension)

averaged over random subsets: 100 subsets of ``m = min(N_real, N_generated, 1000)`` features
of each set, drawn without replacement, and reported as the mean with the standard deviation
over the subsets — the convention of clean-fid and torch-fidelity (the standard deviation with
ddof 0, as torch-fidelity takes it). Within a subset the unbiased estimator leaves out the
diagonals of the two within-set kernel matrices and keeps the whole cross matrix:

    MMD²_u = Σ_{i≠j} k(x_i, x_j) / (m(m−1)) + Σ_{i≠j} k(y_i, y_j) / (m(m−1))
             − 2 Σ_{i,j} k(x_i, y_j) / m².

Unlike FID it has no bias at small N (its expectation does not depend on m), so numbers from
sets of different sizes compare; it can dip below zero for two samples of one distribution.
With N ≤ 1000 on both sides every subset is the whole set and the standard deviation is 0.

The three kernel matrices are computed once on the full sets, and each subset's sums are taken
through its 0/1 indicator vector (a matrix product), so 100 subsets cost about as much as one.
"""

from __future__ import annotations

import numpy as np

from prdit.errors import DataError
from prdit.evaluation.config import KIDConfig


def polynomial_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(a bᵀ / d + 1)³`` of features ``[N, d]`` and ``[M, d]`` -> ``[N, M]`` (float64)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a @ b.T / a.shape[1] + 1.0) ** 3


def subset_size(n_real: int, n_fake: int, config: KIDConfig = KIDConfig()) -> int:
    """``m = min(N_real, N_generated, max_subset_size)``."""
    return min(n_real, n_fake, config.max_subset_size)


def kid(real: np.ndarray, fake: np.ndarray, config: KIDConfig = KIDConfig()) -> dict:
    """KID of features ``[N, d]`` and ``[M, d]``: mean and standard deviation of the unbiased MMD² over subsets."""
    real, fake = _checked(real, fake)
    m = subset_size(len(real), len(fake), config)
    rng = np.random.default_rng(config.seed)
    real_pick = _indicators(len(real), m, config.subsets, rng)
    fake_pick = _indicators(len(fake), m, config.subsets, rng)
    k_rr, k_ff, k_rf = polynomial_kernel(real, real), polynomial_kernel(fake, fake), polynomial_kernel(real, fake)
    within_real = _pair_sums(k_rr, real_pick) - real_pick.T @ np.diag(k_rr)
    within_fake = _pair_sums(k_ff, fake_pick) - fake_pick.T @ np.diag(k_ff)
    cross = ((k_rf @ fake_pick) * real_pick).sum(axis=0)
    values = (within_real + within_fake) / (m * (m - 1)) - 2.0 * cross / m**2
    return {"value": float(values.mean()), "std": float(values.std()), "value_x1e3": float(values.mean()) * 1e3,
            "subsets": config.subsets, "subset_size": m, "seed": config.seed, "feature_dim": int(real.shape[1]),
            "estimator": "polynomial kernel (x.y/d + 1)^3, unbiased MMD^2, mean and std (ddof 0) over random "
                         "subsets drawn without replacement (clean-fid / torch-fidelity convention)"}


def _indicators(n: int, m: int, subsets: int, rng: np.random.Generator) -> np.ndarray:
    """``[n, subsets]`` 0/1 columns, each marking ``m`` of the n items drawn without replacement."""
    pick = np.zeros((n, subsets))
    for column in range(subsets):
        pick[rng.choice(n, size=m, replace=False), column] = 1.0
    return pick


def _pair_sums(kernel: np.ndarray, pick: np.ndarray) -> np.ndarray:
    """``Σ_{i,j in subset} K[i, j]`` for each indicator column of ``pick`` -> ``[subsets]``."""
    return ((kernel @ pick) * pick).sum(axis=0)


def _checked(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise DataError(f"KID needs feature sets [N, d] of one dimension, got {real.shape} and {fake.shape}")
    if len(real) < 2 or len(fake) < 2:
        raise DataError(f"KID needs at least 2 samples per set, got {len(real)} real and {len(fake)} generated")
    return real, fake
