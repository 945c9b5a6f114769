"""Fréchet distance between Gaussian fits of two feature sets (the "F" of 3D FID).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))

The usual implementation takes ``scipy.linalg.sqrtm(S1 @ S2)``, which returns complex
values and fails or warns when the covariances are singular — always the case when there
are fewer samples than feature dimensions (N < 2048 for MedicalNet). Here the trace term is
computed from symmetric matrices only: with A = S1^(1/2) (symmetric PSD),
tr((S1 S2)^(1/2)) = tr((A S2 A)^(1/2)) = sum_i sqrt(lambda_i(A S2 A)), and A S2 A is
symmetric PSD, so ``eigvalsh`` gives real eigenvalues; round-off negatives are clipped to 0.
"""

from __future__ import annotations

import numpy as np

from prdit.errors import DataError


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[F]`` and unbiased covariance ``[F, F]`` of features ``[N, F]`` (float64)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise DataError(f"a Gaussian fit needs at least 2 feature vectors [N, F], got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Squared Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2); real and >= 0 by construction."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise DataError(f"Fréchet distance needs matching shapes, got means {mu1.shape}, {mu2.shape} and "
                        f"covariances {sigma1.shape}, {sigma2.shape}")
    root1 = _psd_sqrt(sigma1)
    middle = root1 @ _symmetric(sigma2) @ root1
    trace_sqrt = np.sqrt(np.clip(np.linalg.eigvalsh(_symmetric(middle)), 0.0, None)).sum()
    diff = mu1 - mu2
    distance = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt
    # Round-off can leave a tiny negative for identical inputs; the true value is >= 0.
    return float(max(distance, 0.0))


def fid_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """Fréchet distance between the Gaussian fits of feature sets ``[N1, F]`` and ``[N2, F]``."""
    return frechet_distance(*gaussian_fit(real), *gaussian_fit(fake))


def small_sample_warning(n_real: int, n_fake: int, dim: int) -> str | None:
    """A warning when FID is estimated from fewer samples than feature dimensions, else None."""
    n = min(n_real, n_fake)
    if n >= dim:
        return None
    return (f"FID from N={n} samples (real {n_real}, generated {n_fake}) in {dim} feature dimensions: the "
            f"covariances are rank-deficient and the estimate is biased (upwards, more so at small N); "
            f"compare FID only between runs with the same N")


def _psd_sqrt(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(_symmetric(matrix))
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def _symmetric(matrix: np.ndarray) -> np.ndarray:
    return 0.5 * (matrix + matrix.T)
